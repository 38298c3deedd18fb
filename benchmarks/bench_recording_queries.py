"""Questions asked of a large finished recording: open time, one process's events in a
one-second window, and the slowest calls of a function.

The recording (10 M events by default) is what a busy service leaves: 100 processes
in 10 groups working side by side; in each group a client sends ``{:req, n}`` to one
of nine servers, which receives it, handles it in a call three levels deep (4 spans:
handler -> inner -> ... of 30 functions, arguments ``[i, j]``, results ``{:ok, n}``)
and sends ``{:reply, n}`` back, which the client receives: 12 events a request, 4
spans and 2 messages. The gaps between events are log-normal (a heavy tail, so span
durations vary) and every group's events spread over 60 s, so a 1 s window holds
about 1/60 of them. Batches of 2000 events in the agent's exact format (written with
numpy; the same bytes as BatchBuilder's, checked) go through the recorder's path
(``offline.record_batches``: BatchIngest, StoreWriter flushing every 262 144
events), then ``correlate.finalize``.

The finalized recording is cached in the temp directory, keyed by its parameters and a
digest of the recording code (ingest, writer, schema, correlate), so later runs reuse
it (the path is printed; the build figures printed then are those measured when it
was built).

Measured: ``open_recording`` (goal: at most 1 s); ``events(pid=..., since=t,
until=t+1)`` for 30 random processes and windows, p50/p95 (goal: p95 at most 50 ms);
``spans(module=..., function=..., slowest=100)`` for 20 functions, p50/p95 (goal: p95
at most 200 ms). Each is printed as a ratio against a baseline measured in the same
run: opening the file with DuckDB alone, and the same rows asked in plain SQL, returned
raw. Plus how long building and finalizing took, and the file size.

Run alone with ``.venv/bin/python -m benchmarks.bench_recording_queries [--events N]
[--rebuild]`` (``--quick``: 1 M events).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.bench_ingest import (
    ARGS_2,
    NODE,
    EventColumns,
    agent_batches,
    atom_tuple_shape,
    check_against_builder,
    file_blocks,
)
from elixirscope.etf import Atom
from elixirscope.recording import correlate, correlate_sql, ingest, schema, store, writer
from elixirscope.recording.batch_builder import BatchBuilder
from elixirscope.recording.offline import record_batches
from elixirscope.tracing.events import KIND_CODES, RETURN_EXPECTED

EVENTS = 10_000_000
QUICK_EVENTS = 1_000_000
PROCESSES = 100
GROUPS = 10
FUNCTIONS = 30
SECONDS = 60
SEED = 7
WORKLOAD_VERSION = 1  # bump when the generated events change: the cache key has it
WINDOWS = 30
SPAN_FUNCTIONS = 20
SLOWEST = 100
OPENS = 5
OPEN_GOAL = 1.0
EVENTS_GOAL = 0.050
SPANS_GOAL = 0.200
OFFSET_NS = 1_700_000_000_000_000_000  # wall clock = ts + offset
TS0 = 5_000_000_000_000
MODULES = ("Elixir.Shop.Api", "Elixir.Shop.Cart", "Elixir.Shop.Repo")

# One request: (kind, on the server?, other is the client?, function slot, payload shape)
# function slots: 0 the handler, 1..3 inner functions; shapes: 0 [i, j], 1 {:ok, n},
# 2 {:req, n}, 3 {:reply, n}.
_C, _S = False, True
REQUEST = [
    ("send", _C, True, -1, 2),
    ("receive", _S, False, -1, 2),
    ("call", _S, False, 0, 0),
    ("call", _S, False, 1, 0),
    ("return", _S, False, 1, 1),
    ("call", _S, False, 2, 0),
    ("call", _S, False, 3, 0),
    ("return", _S, False, 3, 1),
    ("return", _S, False, 2, 1),
    ("return", _S, False, 0, 1),
    ("send", _S, True, -1, 3),
    ("receive", _C, False, -1, 3),
]


def function_names(functions: int = FUNCTIONS) -> list[tuple[str, str, int]]:
    """A third handlers (Shop.Api), the rest inner functions (Shop.Cart, Shop.Repo)."""
    handlers = functions // 3
    names = [(MODULES[0], f"handle_{i}", 2) for i in range(handlers)]
    inner = functions - handlers
    for i in range(inner):
        module = MODULES[1] if i < inner // 2 else MODULES[2]
        names.append((module, f"step_{i}", 2))
    return names


def service_workload(events: int, *, processes: int = PROCESSES, groups: int = GROUPS,
                     functions: int = FUNCTIONS, seconds: int = SECONDS,
                     seed: int = SEED) -> EventColumns:
    """The requests described in the module docstring, in time order."""
    rng = np.random.default_rng(seed)
    per_group = processes // groups
    if per_group < 2 or functions < 4:
        raise ValueError("each group needs a client and a server, and 4 functions")
    handlers = functions // 3
    steps = len(REQUEST)
    rounds = -(-events // (steps * groups)) + 1  # requests per group, a few spare
    requests = rounds * groups
    group = np.arange(requests) % groups
    client = group * per_group
    server = client + rng.integers(1, per_group, requests)
    slots = np.stack([rng.integers(0, handlers, requests),
                      *(rng.integers(handlers, functions, requests) for _ in range(3))],
                     axis=1)
    template = np.array([(KIND_CODES[k], s, o, f, p) for k, s, o, f, p in REQUEST],
                        dtype=np.int64)
    kind = np.broadcast_to(template[:, 0], (requests, steps))
    on_server = template[:, 1].astype(bool)
    pid = np.where(on_server, server[:, None], client[:, None])
    other = np.where(template[:, 2].astype(bool),
                     np.where(on_server, client[:, None], server[:, None]), -1)
    slot = template[:, 3]
    mfa = np.where(slot >= 0, np.take_along_axis(slots, np.maximum(slot, 0)[None, :]
                                                 .repeat(requests, 0), axis=1), -1)
    shape = np.broadcast_to(template[:, 4], (requests, steps))
    values = np.zeros((requests, steps, 2), dtype=np.int64)
    number = np.arange(requests, dtype=np.int64)
    values[:, :, 0] = np.where(shape == 0, (number % 50_000)[:, None], number[:, None])
    values[:, :, 1] = np.where(shape == 0, rng.integers(0, 100, (requests, steps)), 0)
    # Each group's events one after another, log-normal gaps, stretched over `seconds`.
    gaps = rng.lognormal(0.0, 1.0, (rounds, groups, steps))
    lane = np.cumsum(gaps.transpose(1, 0, 2).reshape(groups, -1), axis=1)
    lane *= seconds * 1e9 / lane[:, -1:]
    ts = (TS0 + lane.reshape(groups, rounds, steps).transpose(1, 0, 2)
          .reshape(requests, steps)).astype(np.int64)
    order = np.argsort(ts.ravel(), kind="stable")[:events]
    flags = np.where(kind == KIND_CODES["call"], RETURN_EXPECTED, 0)
    builder = BatchBuilder(NODE)
    return EventColumns(
        kind=kind.ravel()[order].astype(np.uint8), flags=flags.ravel()[order].astype(np.uint8),
        pid=pid.ravel()[order], ts=ts.ravel()[order], mfa=mfa.ravel()[order],
        other=other.ravel()[order], shape=shape.ravel()[order],
        values=values.reshape(-1, 2)[order],
        pids=[builder.pid(100 + p) for p in range(processes)],
        mfas=[(Atom(m), Atom(f), a) for m, f, a in function_names(functions)],
        shapes=[ARGS_2, atom_tuple_shape("ok"), atom_tuple_shape("req"),
                atom_tuple_shape("reply")])


# --- the cached recording ----------------------------------------------------------------


def _code_version() -> str:
    """A digest of the code that shapes the file (ingest, writer, schema, finalize): a
    cached recording built by other code is rebuilt."""
    digest = hashlib.sha256()
    for module in (schema, correlate, correlate_sql, ingest, writer):
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()[:10]


def cache_path(events: int) -> Path:
    key = (f"v{WORKLOAD_VERSION}-format{schema.FORMAT_VERSION}-{events}ev-{PROCESSES}p-"
           f"{GROUPS}g-{FUNCTIONS}f-{SECONDS}s-seed{SEED}-code{_code_version()}")
    return Path(tempfile.gettempdir()) / "elixirscope-bench" / f"queries-{key}.duckdb"


def build(path: Path, events: int) -> dict[str, Any]:
    """Generates, records and finalizes; returns the build figures (also stored next to
    the recording)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    for stale in (partial, Path(f"{partial}.wal"), path, Path(f"{path}.wal")):
        stale.unlink(missing_ok=True)
    for older in path.parent.glob(f"queries-*-{events}ev-*"):  # built by older code
        older.unlink(missing_ok=True)
    started = time.perf_counter()
    batches = agent_batches(service_workload(events))
    generated = time.perf_counter() - started
    gc.collect()
    clock = time.perf_counter(), time.process_time()
    count = record_batches(partial, batches, node=NODE, offset_ns=OFFSET_NS, finalize=False)
    ingest = time.perf_counter() - clock[0], time.process_time() - clock[1]
    del batches
    gc.collect()
    raw_size = partial.stat().st_size
    con = store.open_file(partial, read_only=False)
    try:
        clock = time.perf_counter(), time.process_time()
        correlate.finalize(con)
        finalized = time.perf_counter() - clock[0], time.process_time() - clock[1]
        clock = time.perf_counter(), time.process_time()
    finally:
        con.close()
    closed = time.perf_counter() - clock[0]
    partial.rename(path)
    info = {"events": count, "generate_s": generated, "ingest_s": ingest[0],
            "ingest_cpu_s": ingest[1], "raw_size": raw_size, "finalize_s": finalized[0],
            "finalize_cpu_s": finalized[1], "close_s": closed, "size": path.stat().st_size,
            "built": time.strftime("%Y-%m-%d %H:%M:%S")}
    path.with_suffix(".json").write_text(json.dumps(info))
    return info


def cached(path: Path) -> dict[str, Any] | None:
    info_path = path.with_suffix(".json")
    if not (path.exists() and info_path.exists()):
        return None
    try:
        info: dict[str, Any] = json.loads(info_path.read_text())
        con = store.open_file(path)
        try:
            if store.read_meta(con).get("finalized") is not True:
                return None
        finally:
            con.close()
    except (ValueError, store.RecordingError):
        return None
    return info


# --- queries ----------------------------------------------------------------------------


# The baselines: the same rows asked of DuckDB directly, as a hand-written query would,
# and returned raw (no payload decoded, no Elixir text, no result objects).
RAW_WINDOW = ("SELECT * FROM events WHERE pid_id = ? AND ts >= ? AND ts < ? ORDER BY seq "
              "LIMIT ?")
RAW_SLOWEST = ("SELECT s.*, c.payload, e.payload FROM (SELECT * FROM spans WHERE mfa_id = ? "
               "ORDER BY duration_ns DESC NULLS LAST LIMIT ?) s JOIN events c ON c.seq = "
               "s.span_id LEFT JOIN events e ON e.seq = s.end_seq")
EVENTS_LIMIT = 1000


def raw_open(path: Path) -> None:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    con.execute("SELECT 1").fetchall()
    con.close()


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _quantiles(samples: Sequence[float]) -> tuple[float, float]:
    return float(np.percentile(samples, 50)), float(np.percentile(samples, 95))


def _against_baseline(baseline: str, ours: str, times: Sequence[float],
                      raw_times: Sequence[float]) -> None:
    p50, p95 = _quantiles(times)
    raw_p50, raw_p95 = _quantiles(raw_times)
    print(f"  baseline, {baseline}: p50 {_ms(raw_p50)}, p95 {_ms(raw_p95)}; {ours} "
          f"{p50 / raw_p50:.1f}x at p50, {p95 / raw_p95:.1f}x at p95")


def _verdict(met: bool) -> str:
    return "goal met" if met else "goal missed"


def _timed(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(prog="bench_recording_queries")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events")
    parser.add_argument("--rebuild", action="store_true", help="ignore a cached recording")
    args = parser.parse_args(list(argv))
    events = args.events or (QUICK_EVENTS if args.quick else EVENTS)

    from elixirscope.recordings import open_recording

    path = cache_path(events)
    info = None if args.rebuild else cached(path)
    if info is None:
        check_against_builder(lambda n: service_workload(n, seed=SEED + 1))
        print(f"building {path} ...", flush=True)
        info = build(path, events)
        how = "built now"
    else:
        how = f"cached, built {info['built']}"
    count = info["events"]
    print(f"recording: {path} ({how}); {count:,} events, {PROCESSES} processes, "
          f"{FUNCTIONS} functions, {SECONDS} s; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores")
    print(f"  build: events generated (numpy) in {info['generate_s']:.1f} s; recorded "
          f"(record_batches: ingest + write, threads=1) in {info['ingest_s']:.1f} s = "
          f"{info['ingest_s'] / count * 1e6:.2f} µs/event (CPU "
          f"{info['ingest_cpu_s'] / count * 1e6:.2f}), file then "
          f"{info['raw_size'] / count:.1f} B/event; correlate.finalize "
          f"{info['finalize_s']:.1f} s = {info['finalize_s'] / count * 1e6:.2f} µs/event "
          f"({info['finalize_cpu_s']:.1f} s CPU, all cores), close {info['close_s']:.1f} s")
    size, free = file_blocks(path)
    print(f"  file: {size / 1e6:,.1f} MB = {size / count:.1f} B/event ({free:.0%} of it free "
          "blocks)")

    opens, raw_opens = [], []
    for _ in range(OPENS):
        seconds, recording = _timed(lambda: open_recording(path))
        first, _ = _timed(lambda rec=recording: rec.events(pid=1, limit=1))
        recording.close()
        opens.append((seconds, first))
        raw_opens.append(_timed(lambda: raw_open(path))[0])
    first_open = opens[0][0]
    worst_open = max(seconds for seconds, _ in opens)
    median_open = float(np.median([seconds for seconds, _ in opens]))
    median_raw = float(np.median(raw_opens))
    print(f"open_recording: first {_ms(first_open)}, worst of {OPENS} {_ms(worst_open)}; "
          f"then a first query, events(pid=1, limit=1) (loads the pid, function and process "
          f"tables), {_ms(float(np.median([first for _, first in opens])))} median")
    print(f"  baseline, duckdb.connect(read_only=True) + SELECT 1: {_ms(median_raw)} median; "
          f"open_recording {median_open / median_raw:.1f}x")
    print(f"  goal: open at most {OPEN_GOAL:.0f} s: {_ms(worst_open)}, "
          f"{_verdict(worst_open <= OPEN_GOAL)}")

    rng = np.random.default_rng(11)
    with open_recording(path) as recording:
        recording.events(pid=1, limit=1)  # loads the small tables
        pid_ids = list(recording.dims.pids)
        start = recording.dims.start_wall_ns
        offset = next(iter(recording.dims.offsets.values()))
        times, sizes, raw_times = [], [], []
        for _ in range(WINDOWS):
            pid_id = pid_ids[int(rng.integers(len(pid_ids)))]
            pid = recording.dims.pids[pid_id][0]
            since = float(rng.uniform(0, SECONDS - 1))
            seconds, found = _timed(lambda p=pid, t=since: recording.events(
                pid=p, since=t, until=t + 1))
            times.append(seconds)
            sizes.append(len(found))
            low = start + int(since * 1e9) - offset
            raw_seconds, rows = _timed(lambda i=pid_id, lo=low: recording.con.execute(
                RAW_WINDOW, [i, lo, lo + 1_000_000_000, EVENTS_LIMIT]).fetchall())
            assert len(rows) == len(found)
            raw_times.append(raw_seconds)
        p50, p95 = _quantiles(times)
        print(f"events(pid=..., since=t, until=t+1), {WINDOWS} random processes and windows "
              f"(default limit {EVENTS_LIMIT}; {np.mean(sizes):.0f} events returned on "
              f"average, {min(sizes)}..{max(sizes)}): p50 {_ms(p50)}, p95 {_ms(p95)}, max "
              f"{_ms(max(times))}")
        _against_baseline("the same rows in plain SQL (raw columns, nothing decoded or "
                          "formatted)", "events()", times, raw_times)
        print(f"  goal: p95 at most {_ms(EVENTS_GOAL)}: {_ms(p95)}, "
              f"{_verdict(p95 <= EVENTS_GOAL)}")

        names = function_names()
        chosen = rng.choice(len(names), size=min(SPAN_FUNCTIONS, len(names)), replace=False)
        mfa_ids = {mfa: mfa_id for mfa_id, mfa in recording.dims.functions.items()}
        times, sizes, raw_times = [], [], []
        for index in chosen.tolist():
            module, function, arity = names[index]
            seconds, found = _timed(lambda m=module, f=function: recording.spans(
                module=m.removeprefix("Elixir."), function=f, slowest=SLOWEST))
            times.append(seconds)
            sizes.append(len(found))
            mfa_id = mfa_ids[(module.removeprefix("Elixir."), function, arity)]
            raw_seconds, rows = _timed(lambda i=mfa_id: recording.con.execute(
                RAW_SLOWEST, [i, SLOWEST]).fetchall())
            assert len(rows) == len(found)
            raw_times.append(raw_seconds)
        spans_total = recording.con.execute("SELECT count(*) FROM spans").fetchone()
        p50, p95 = _quantiles(times)
        print(f"spans(module=..., function=..., slowest={SLOWEST}), {len(chosen)} functions "
              f"({spans_total[0] if spans_total else 0:,} spans in the recording; "
              f"{min(sizes)}..{max(sizes)} returned): p50 {_ms(p50)}, p95 {_ms(p95)}, max "
              f"{_ms(max(times))}")
        _against_baseline("the same spans in plain SQL (span rows joined to their call and "
                          "end events, nothing decoded)", "spans()", times, raw_times)
        print(f"  goal: p95 at most {_ms(SPANS_GOAL)}: {_ms(p95)}, "
              f"{_verdict(p95 <= SPANS_GOAL)}")


if __name__ == "__main__":
    main(sys.argv[1:])
