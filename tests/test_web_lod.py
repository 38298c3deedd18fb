"""The timeline's bin pyramid: merging and coarsening against brute force, and the
finest level a finished recording opens with (the ``activity_bins`` finalize stores)
against grouping its events afresh: after finalizing twice, in a file made before the
table existed, and whenever the stored bins disagree with the view (no node needed)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest

from elixirscope.etf import Atom
from elixirscope.recording import correlate, schema
from elixirscope.recording.batch_builder import BatchBuilder
from elixirscope.recording.offline import record_batches
from elixirscope.recording.store import put_meta, read_meta
from elixirscope.tracing.events import KIND_CODES
from elixirscope.web.lod import LANE_BITS, LANE_MASK, Level, Pyramid, coarser, merge
from elixirscope.web.model import View

OFFSET_NS = 1_700_000_000_000_000_000
ERRORS = (KIND_CODES["exception"], KIND_CODES["exit"])
F = ("Elixir.Shop", "work", 1)


# --- the pyramid alone ----------------------------------------------------------------

def brute_level(times: np.ndarray, lanes: np.ndarray, errors: np.ndarray,
                shift: int) -> dict[int, tuple[int, int]]:
    found: dict[int, list[int]] = {}
    for t, lane, error in zip(times.tolist(), lanes.tolist(), errors.tolist(), strict=True):
        row = found.setdefault(((t >> shift) << LANE_BITS) | lane, [0, 0])
        row[0] += 1
        row[1] += error
    return {key: (n, e) for key, (n, e) in found.items()}


def as_dict(keys: np.ndarray, counts: np.ndarray, errors: np.ndarray
            ) -> dict[int, tuple[int, int]]:
    return {int(k): (int(n), int(e)) for k, n, e in zip(keys, counts, errors, strict=True)}


def test_merge_sums_equal_keys_and_sorts() -> None:
    rng = np.random.default_rng(5)
    keys = rng.integers(0, 500, 5000)
    counts = rng.integers(1, 4, 5000)
    errors = rng.integers(0, 2, 5000)
    merged = merge(keys, counts, errors)
    assert bool(np.all(np.diff(merged.keys) > 0))
    expected_n: Counter[int] = Counter()
    expected_e: Counter[int] = Counter()
    for k, n, e in zip(keys.tolist(), counts.tolist(), errors.tolist(), strict=True):
        expected_n[k] += n
        expected_e[k] += e
    assert as_dict(merged.keys, merged.counts, merged.errors) == {
        k: (expected_n[k], expected_e[k]) for k in expected_n}
    again = merge(merged.keys, merged.counts, merged.errors)  # sorted and unique: as is
    assert np.array_equal(again.keys, merged.keys)
    assert np.array_equal(again.counts, merged.counts)
    assert np.array_equal(again.errors, merged.errors)
    empty = merge(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64))
    assert empty.keys.size == 0 and empty.counts.dtype == np.int64


def test_levels_extensions_and_totals_match_brute_force() -> None:
    rng = np.random.default_rng(11)
    size = 30_000
    times = np.sort(rng.integers(10**8, 2 * 10**9, size))
    lanes = rng.integers(1, 40, size)
    errors = (rng.random(size) < 0.03).astype(np.int64)
    shift = 15
    whole = Pyramid(shift, ((times >> shift) << LANE_BITS) | lanes, np.ones(size, np.int64),
                    errors)
    # A live recording: the same events arriving in pieces, levels asked in between.
    grown = Pyramid(shift, *(np.zeros(0, np.int64),) * 3)
    for part in np.array_split(np.arange(size), 7):
        base = brute_level(times[part], lanes[part], errors[part], shift)
        keys = np.asarray(list(base), np.int64)
        grown.extend(keys, np.asarray([n for n, _ in base.values()], np.int64),
                     np.asarray([e for _, e in base.values()], np.int64))
        grown.level(shift + 4)
    # A finished recording's: a jump to a coarse level, the levels skipped built after.
    filled = Pyramid(shift, ((times >> shift) << LANE_BITS) | lanes, np.ones(size, np.int64),
                     errors, fill=True)
    filled.level(shift + 12)
    assert filled._filler is not None
    filled._filler.join(60)
    assert set(filled._levels) == set(range(shift, shift + 13))
    for level_shift in range(shift, shift + 18, 3):
        expected = brute_level(times, lanes, errors, level_shift)
        for pyramid in (whole, grown, filled):
            level = pyramid.level(level_shift)
            assert level.shift == level_shift
            assert as_dict(level.keys, level.counts, level.errors) == expected
        bins, counts, errs = whole.totals(level_shift)
        per_bin: dict[int, list[int]] = {}
        for key, (n, e) in expected.items():
            row = per_bin.setdefault(key >> LANE_BITS, [0, 0])
            row[0] += n
            row[1] += e
        assert as_dict(bins, counts, errs) == {b: (n, e) for b, (n, e) in per_bin.items()}
    assert whole.lane_totals() == dict(Counter(lanes.tolist()))


@pytest.mark.parametrize("lane_count", [3, 60, 5000])
def test_a_jump_to_a_coarse_level_equals_merging_pairs(lane_count: int) -> None:
    rng = np.random.default_rng(lane_count)
    size = 20_000
    times = rng.integers(3 * 10**8, 10**9, size)  # the first bin is not bin 0
    lanes = rng.integers(1, lane_count + 1, size)
    if lane_count == 5000:
        lanes = lanes * 1000  # sparse pid_ids: too many for a grid, pairs merged
    base = merge(((times >> 12) << LANE_BITS) | lanes, np.ones(size, np.int64),
                 (rng.random(size) < 0.1).astype(np.int64))
    level = Level(12, base.keys, base.counts, base.errors)
    jumps = 0
    for shift in range(13, 32, 2):
        made = coarser(level, shift)
        jumps += made.shift == shift and shift > 13
        stepped = level
        while stepped.shift < made.shift:
            stepped = coarser(stepped, stepped.shift + 1)  # one step: pairs merged
        assert made.shift == stepped.shift
        assert np.array_equal(made.keys, stepped.keys)
        assert np.array_equal(made.counts, stepped.counts)
        assert np.array_equal(made.errors, stepped.errors)
    assert (jumps > 0) == (lane_count < 5000)


def test_concurrent_requests_build_each_level_once() -> None:
    rng = np.random.default_rng(2)
    times = rng.integers(0, 10**9, 50_000)
    lanes = rng.integers(0, 100, 50_000)
    pyramid = Pyramid(10, ((times >> 10) << LANE_BITS) | lanes,
                      np.ones(50_000, np.int64), np.zeros(50_000, np.int64))
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(pyramid.level(24)))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 4 and all(level is got[0] for level in got)
    assert pyramid.level(20) is pyramid.level(20)


# --- the finest level of a finished recording -------------------------------------------

def write_recording(path: Path, *, seed: int = 3, events: int = 4000,
                    finalize: bool = True) -> None:
    """Processes calling, failing, messaging and exiting over about 3 s."""
    rng = np.random.default_rng(seed)
    builder = BatchBuilder()
    pids = [builder.pid(n) for n in range(100, 112)]
    ts = 9_000_000_000
    batches = []
    for i in range(events):
        ts += int(rng.exponential(750_000))
        pid = pids[int(rng.integers(len(pids)))]
        roll = rng.random()
        if roll < 0.3:
            builder.add("call", pid, ts, mfa=F, value=[i])
        elif roll < 0.55:
            builder.add("return", pid, ts, mfa=F, value=Atom("ok"))
        elif roll < 0.6:
            builder.add("exception", pid, ts, mfa=F, value=(Atom("error"), Atom("boom")))
        elif roll < 0.8:
            builder.add("send", pid, ts, other=pids[int(rng.integers(len(pids)))],
                        value=(Atom("req"), i % 7))
        elif roll < 0.98:
            builder.add("receive", pid, ts, value=(Atom("req"), i % 7))
        else:
            builder.add("exit", pid, ts, value=Atom("normal") if i % 2 else (Atom("bad"), i))
        if len(builder) >= 700:
            batches.append(builder.batch())
    batches.append(builder.batch())
    record_batches(path, batches, offset_ns=OFFSET_NS, finalize=finalize)


@pytest.fixture
def path(tmp_path: Path) -> Iterator[Path]:
    target = tmp_path / "rec.duckdb"
    write_recording(target)
    yield target


def brute_pyramid_base(path: Path, view: View) -> dict[int, tuple[int, int]]:
    """The finest level from the raw events, in Python."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        rows = con.execute("SELECT ts + wall_offset, pid_id, kind FROM events").fetchall()
    finally:
        con.close()
    start = view.dims.start_wall_ns
    shift = view.pyramid.base_shift
    found: dict[int, list[int]] = {}
    for wall, pid_id, kind in rows:
        row = found.setdefault(((max(wall - start, 0) >> shift) << LANE_BITS) | pid_id, [0, 0])
        row[0] += 1
        row[1] += kind in ERRORS
    return {key: (n, e) for key, (n, e) in found.items()}


def scanned(path: Path, monkeypatch: pytest.MonkeyPatch) -> View:
    """The view as it is without stored bins: grouping the events."""
    with monkeypatch.context() as patch:
        patch.setattr(View, "_stored_bins", lambda self, cur, top: None)
        view = View.finished(path)
    assert view.pyramid_source == "events"
    return view


def assert_same(fast: View, slow: View) -> None:
    for view in (fast, slow):  # the spans a binned window shows come with the index
        assert view.span_index(timeout=60) is not None
    assert fast.pyramid.base_shift == slow.pyramid.base_shift
    assert fast.dims.start_wall_ns == slow.dims.start_wall_ns
    for shift in range(fast.pyramid.base_shift, fast.pyramid.base_shift + 16):
        a, b = fast.pyramid.level(shift), slow.pyramid.level(shift)
        assert np.array_equal(a.keys, b.keys), shift
        assert np.array_equal(a.counts, b.counts), shift
        assert np.array_equal(a.errors, b.errors), shift
    duration = fast.sec(fast.duration_ns)
    assert fast.rate(500) == slow.rate(500)
    assert fast.lanes() == slow.lanes()
    for t0, t1 in [(0.0, duration), (-0.1, duration * 0.4), (duration * 0.3, duration * 0.31)]:
        a_answer, b_answer = fast.timeline(t0, t1, 900, None), slow.timeline(t0, t1, 900, None)
        for answer in (a_answer, b_answer):
            answer.pop("server_ms")
        assert a_answer == b_answer


def test_finished_recording_opens_with_stored_bins(
        path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fast = View.finished(path)
    slow = scanned(path, monkeypatch)
    try:
        assert fast.pyramid_source == "activity_bins"
        base = fast.pyramid.base
        expected = brute_pyramid_base(path, fast)
        assert as_dict(base.keys, base.counts, base.errors) == expected
        assert sum(e for _, e in expected.values()) > 0  # the error marks are tested too
        assert fast.pyramid.events == 4000
        assert_same(fast, slow)
    finally:
        fast.close()
        slow.close()


def test_finalized_twice_gives_the_same_bins(path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    con = duckdb.connect(str(path))
    try:
        first = con.execute("SELECT * FROM activity_bins ORDER BY key").fetchall()
        correlate.finalize(con)
        assert con.execute("SELECT * FROM activity_bins ORDER BY key").fetchall() == first
        assert con.execute("SELECT * FROM activity_bins").fetchall() == first  # stored sorted
    finally:
        con.close()
    fast, slow = View.finished(path), scanned(path, monkeypatch)
    try:
        assert fast.pyramid_source == "activity_bins"
        assert_same(fast, slow)
    finally:
        fast.close()
        slow.close()


def test_a_recording_from_before_the_table_opens_by_grouping(
        path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reference = View.finished(path)
    reference_base = reference.pyramid.base
    reference.close()
    con = duckdb.connect(str(path))
    try:
        con.execute("DROP TABLE activity_bins")
        con.execute("DELETE FROM meta WHERE key = ?", [schema.ACTIVITY_BINS_META])
    finally:
        con.close()
    old = View.finished(path)
    slow = scanned(path, monkeypatch)
    try:
        assert old.pyramid_source == "events"
        assert np.array_equal(old.pyramid.base.keys, reference_base.keys)
        assert np.array_equal(old.pyramid.base.counts, reference_base.counts)
        assert np.array_equal(old.pyramid.base.errors, reference_base.errors)
        assert_same(old, slow)
    finally:
        old.close()
        slow.close()
    # Finalizing it again (as a newer version would on recovery) adds the table.
    con = duckdb.connect(str(path))
    try:
        correlate.finalize(con)
    finally:
        con.close()
    again = View.finished(path)
    try:
        assert again.pyramid_source == "activity_bins"
        assert np.array_equal(again.pyramid.base.keys, reference_base.keys)
    finally:
        again.close()


@pytest.mark.parametrize("change", ["no table", "other origin", "other shift", "fewer rows",
                                    "other error kinds", "more events"])
def test_stored_bins_that_disagree_are_not_used(path: Path, change: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    con = duckdb.connect(str(path))
    try:
        stored = read_meta(con)[schema.ACTIVITY_BINS_META]
        if change == "no table":
            con.execute("DROP TABLE activity_bins")
        elif change == "other origin":
            # The node's start moved: the view's origin is not the bins' any more (and
            # some events now fall before it, in bin 0).
            con.execute("UPDATE nodes SET started_ts = started_ts + 400000000")
        elif change == "other shift":
            put_meta(con, {schema.ACTIVITY_BINS_META: stored | {"shift": stored["shift"] - 1}})
        elif change == "fewer rows":
            con.execute("DELETE FROM activity_bins WHERE key = (SELECT max(key) "
                        "FROM activity_bins)")
        elif change == "other error kinds":
            put_meta(con, {schema.ACTIVITY_BINS_META: stored | {"error_kinds": [3]}})
        else:
            con.execute("INSERT INTO events SELECT * REPLACE (seq + 100000 AS seq) FROM "
                        "events WHERE seq = 1")
    finally:
        con.close()
    view = View.finished(path)
    slow = scanned(path, monkeypatch)
    try:
        assert view.pyramid_source == "events"
        base = view.pyramid.base
        assert as_dict(base.keys, base.counts, base.errors) == brute_pyramid_base(path, view)
        assert_same(view, slow)
    finally:
        view.close()
        slow.close()


def test_recovered_recording_is_finalized_with_its_bins(tmp_path: Path) -> None:
    target = tmp_path / "crashed.duckdb"
    write_recording(target, seed=9, finalize=False)
    view = View.finished(target)  # open_recording finalizes it first
    try:
        assert view.recording is not None and view.recording.recovered
        assert view.pyramid_source == "activity_bins"
        base = view.pyramid.base
        assert as_dict(base.keys, base.counts, base.errors) == brute_pyramid_base(target, view)
        assert int(base.keys.max() & LANE_MASK) > 0
    finally:
        view.close()


def test_empty_recording(tmp_path: Path) -> None:
    target = tmp_path / "empty.duckdb"
    record_batches(target, [], offset_ns=OFFSET_NS)
    con = duckdb.connect(str(target), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM activity_bins").fetchone() == (0,)
        assert read_meta(con)[schema.ACTIVITY_BINS_META]["events"] == 0
    finally:
        con.close()
    view = View.finished(target)
    try:
        assert view.pyramid.events == 0
        assert view.rate(100)["n"] == []
    finally:
        view.close()
