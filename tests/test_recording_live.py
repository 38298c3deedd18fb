"""Recording real nodes: the whole pipeline, backpressure, crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

import elixirscope
from elixirscope.recording import correlate
from elixirscope.recording.store import RecordingError, open_file, read_meta, reading
from tracing_support import ALL_MFAS, clean_state, erl, start_traced, wait_clean

pytestmark = pytest.mark.node


def counts(path: Path) -> dict[str, int]:
    con = open_file(path)
    try:
        rows = con.execute("SELECT k.name, count(*) FROM events e JOIN kinds k USING (kind) "
                           "GROUP BY 1").fetchall()
    finally:
        con.close()
    return dict(rows)


def test_a_recorded_session_has_every_event_span_and_process(traced_code: bytes,
                                                             tmp_path: Path) -> None:
    path = tmp_path / "session.duckdb"
    with start_traced(traced_code, "rec_e2e") as beam, \
            elixirscope.attach(beam.name, beam.cookie) as scope:
        scope.trace("es_traced", "full")
        recorder = scope.record(path)
        erl(scope.node, "es_traced:call_many(50, 7)")
        erl(scope.node, "catch es_traced:fail(1)")
        stats = recorder.stop()
        assert wait_clean(scope.node, ALL_MFAS, timeout=0.1)["agent_loaded"]
    assert stats.ring.dropped == stats.agent_dropped == stats.lost_batches == 0
    found = counts(path)
    # call_many/2 51 times, add/2 and helper/1 50 times each, fail/1 once.
    assert found["call"] == 152 and found["return"] == 151 and found["exception"] == 1
    assert stats.events == stats.written == sum(found.values())
    con = open_file(path)
    meta = read_meta(con)
    assert meta["finalized"] is True and meta["drops"]["drop_oldest"] == 0
    spans = con.execute("SELECT outcome, count(*), max(depth) FROM spans GROUP BY 1 "
                        "ORDER BY 1").fetchall()
    assert spans == [("exception", 1, 1), ("return", 151, 52)]
    node_row = con.execute("SELECT name, otp_release, started_ts < ended_ts FROM nodes"
                           ).fetchone()
    assert node_row is not None and node_row[0] == beam.name and node_row[2] is True
    seqs = con.execute("SELECT min(seq), max(seq), count(*) FROM events").fetchone()
    assert seqs == (1, stats.events, stats.events)
    functions = {row[0] for row in con.execute(
        "SELECT module || '.' || function || '/' || arity FROM functions").fetchall()}
    assert {":es_traced.call_many/2", ":es_traced.add/2", ":es_traced.helper/1"} <= functions
    con.close()


def test_block_pushes_back_instead_of_dropping(traced_code: bytes, tmp_path: Path) -> None:
    """Chunks larger than the ring must wait for the writer; nothing is lost in Python."""
    path = tmp_path / "block.duckdb"
    with start_traced(traced_code, "rec_block") as beam, \
            elixirscope.attach(beam.name, beam.cookie, max_events_per_second=float("inf"),
                               max_events=float("inf")) as scope:
        scope.trace("es_traced", "full")
        recorder = scope.record(path, capacity=256, overflow="block")
        erl(scope.node, "es_traced:call_many(5000, 1)")
        stats = recorder.stop()
    assert stats.ring.blocked > 0
    assert stats.ring.dropped == 0
    assert sum(counts(path).values()) == stats.events == stats.ring.read
    # What the agent could not send while we pushed back, it counted.
    assert stats.events + stats.agent_dropped >= 15001


def test_drop_oldest_counts_exactly_what_it_dropped(traced_code: bytes,
                                                    tmp_path: Path) -> None:
    path = tmp_path / "oldest.duckdb"
    with start_traced(traced_code, "rec_oldest") as beam, \
            elixirscope.attach(beam.name, beam.cookie, max_events_per_second=float("inf"),
                               max_events=float("inf")) as scope:
        scope.trace("es_traced", "full")
        recorder = scope.record(path, capacity=256, overflow="drop_oldest")
        erl(scope.node, "es_traced:call_many(3000, 1)")
        stats = recorder.stop()
    assert stats.ring.dropped_oldest > 0 and stats.ring.dropped_newest == 0
    assert sum(counts(path).values()) == stats.events - stats.ring.dropped_oldest
    con = open_file(path)
    assert read_meta(con)["drops"]["drop_oldest"] == stats.ring.dropped_oldest
    con.close()


def test_a_lost_node_still_leaves_a_finished_recording(traced_code: bytes,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "lost.duckdb"
    with start_traced(traced_code, "rec_lost") as beam:
        scope = elixirscope.attach(beam.name, beam.cookie)
        scope.trace("es_traced", "full")
        recorder = scope.record(path)
        erl(scope.node, "es_traced:call_many(20, 1)")
        scope.flush()
        time.sleep(0.5)
        beam.kill()
        stats = recorder.stop()
        scope.close()
    assert stats.events >= 60
    con = open_file(path)
    assert read_meta(con)["finalized"] is True
    assert con.execute("SELECT count(*) FROM events").fetchone() == (stats.events,)
    con.close()


RECORDER_SCRIPT = """
import sys, time
import elixirscope
from elixirscope.remote_eval import eval_erlang
node, cookie, path = sys.argv[1:4]
scope = elixirscope.attach(node, cookie)
scope.trace("es_traced", "full")
recorder = scope.record(path, flush_interval=0.2)
while True:
    scope.node.run(eval_erlang(scope.node.anode, "es_traced:call_many(100, 1)"))
    print(recorder.stats.written, flush=True)
    time.sleep(0.05)
"""


def test_a_killed_recorder_leaves_a_file_that_opens(traced_code: bytes,
                                                    tmp_path: Path) -> None:
    """SIGKILL loses at most the last flush interval; while the recorder runs, other
    processes get a clear sentence instead of a lock error."""
    path = tmp_path / "killed.duckdb"
    with start_traced(traced_code, "rec_kill") as beam:
        recorder = subprocess.Popen(
            [sys.executable, "-c", RECORDER_SCRIPT, beam.name, beam.cookie, str(path)],
            stdout=subprocess.PIPE, text=True)
        try:
            assert recorder.stdout is not None
            written = 0
            deadline = time.monotonic() + 60
            while written < 3000 and time.monotonic() < deadline:
                line = recorder.stdout.readline()
                assert line, "the recorder exited early"
                written = int(line)
            with pytest.raises(RecordingError,
                               match=rf"being written by process {recorder.pid}"):
                open_file(path)
            os.kill(recorder.pid, signal.SIGKILL)
            recorder.wait(10)
        finally:
            recorder.kill()
        with elixirscope.connect(beam.name, beam.cookie) as conn:
            assert wait_clean(conn, ALL_MFAS) == clean_state(ALL_MFAS)
    con = open_file(path, read_only=False)
    try:
        kept = con.execute("SELECT count(*) FROM events").fetchone()
        assert kept is not None and kept[0] >= written
        assert read_meta(con)["finalized"] is False
        correlate.finalize(con)
        assert read_meta(con)["finalized"] is True
        spans = con.execute("SELECT count(*) FROM spans").fetchone()
        assert spans is not None and spans[0] > 0
    finally:
        con.close()


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "foreign"])
def test_damaged_recordings_get_one_sentence(tmp_path: Path, damage: str) -> None:
    from elixirscope.recording.batch_builder import BatchBuilder
    from elixirscope.recording.offline import record_batches

    path = tmp_path / "damaged.duckdb"
    builder = BatchBuilder()
    for i in range(20000):
        builder.add("receive", builder.pid(i % 7), i, value=i)
    record_batches(path, [builder.batch()])
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.unlink()
        duckdb.connect(str(path)).execute("CREATE TABLE t (x INT)").close()
    with pytest.raises(RecordingError) as caught:
        con = open_file(path)
        with reading(path):
            con.execute("SELECT sum(hash(payload)) FROM events").fetchall()
    message = str(caught.value)
    assert str(path) in message and "\n" not in message


LOADED_RECORDER_SCRIPT = """
import sys, time
import elixirscope
from elixirscope.remote_eval import eval_erlang
node, cookie, path = sys.argv[1:4]
scope = elixirscope.attach(node, cookie)
scope.trace("es_traced", "detailed")
recorder = scope.record(path)
# Steady load the pipeline keeps up with (tens of thousands of events a second).
scope.node.run(eval_erlang(scope.node.anode, '''
    [spawn(fun L() -> es_traced:call_many(100, 1), timer:sleep(5), L() end)
     || _ <- lists:seq(1, 2)]'''))
print(time.time_ns(), flush=True)
while True:
    time.sleep(0.2)
    stats = recorder.stats
    print(stats.written, stats.breaker, flush=True)
"""


def test_a_recorder_killed_under_load_loses_at_most_the_last_second(
        traced_code: bytes, tmp_path: Path) -> None:
    path = tmp_path / "killed-under-load.duckdb"
    with start_traced(traced_code, "rec_kill_load") as beam:
        recorder = subprocess.Popen(
            [sys.executable, "-c", LOADED_RECORDER_SCRIPT, beam.name, beam.cookie, str(path)],
            stdout=subprocess.PIPE, text=True)
        try:
            assert recorder.stdout is not None
            started_ns = int(recorder.stdout.readline())
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and time.time_ns() - started_ns < 4e9:
                line = recorder.stdout.readline()
                assert line, "the recorder exited early"
                assert line.split()[1] == "None", f"a limit stopped the tracing: {line}"
            killed_ns = time.time_ns()
            os.kill(recorder.pid, signal.SIGKILL)
            recorder.wait(10)
        finally:
            recorder.kill()
    con = open_file(path, read_only=False)
    try:
        first, last, count = con.execute(
            "SELECT min(ts + wall_offset), max(ts + wall_offset), count(*) FROM events"
        ).fetchone() or (0, 0, 0)
    finally:
        con.close()
    assert count > 10_000
    # The node and this machine share a clock: what is missing is what came in the
    # last second (one flush interval) before the kill, at most.
    assert first is not None and first - started_ns < 2e9
    assert killed_ns - last < 1.5e9, f"the file ends {(killed_ns - last) / 1e9:.2f} s early"
