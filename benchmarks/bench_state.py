"""State capture and time travel.

1. ``state_at`` on a process with 1 M recorded transitions (a synthetic recording in
   the agent's format, cached under the temp directory): p50/p95 over random moments,
   against fetching one event by its sequence number in the same run. Goal: p95 at
   most 20 ms.
2. Bytes stored per transition for a ~100 KB map where each call changes one key, on
   a real node. Goal: at most 1 KB.
3. Added cost per traced callback with state capture on, against call tracing alone
   (``detailed``: calls and returns), same node, same run: the client's time per call
   and the time until every event is in the recording. Goal: at most 1.5x.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

import elixirscope
from benchmarks._beam_workload import load_module, table
from benchmarks.bench_recording_queries import _code_version
from elixirscope.etf import Atom, encode
from elixirscope.recording import store
from elixirscope.recording.batch_builder import BatchBuilder
from elixirscope.recording.offline import record_batches
from elixirscope.sample_nodes import start_bare
from elixirscope.tracing.events import STATE_WHOLE

WORKLOAD = Path(__file__).with_name("es_state_workload.erl")
NODE = "bench@host"
OFFSET_NS = 1_700_000_000 * 10**9
KEYFRAME_EVERY = 64
TRANSITIONS, QUICK_TRANSITIONS = 1_000_000, 100_000
CALLS, QUICK_CALLS = 2_000, 500
COUNT = Atom("count")


def counter_state(count: int) -> dict[Atom, Any]:
    return {COUNT: count, Atom("name"): b"counter", Atom("items"): list(range(10)),
            Atom("limits"): {Atom("max"): 100, Atom("min"): 0}}


def build(path: Path, transitions: int) -> None:
    """One process, ``transitions`` state records 10 µs apart: whole every 64, else a
    delta that sets ``count``."""
    builder = BatchBuilder(NODE)
    pid = builder.pid(100)
    mfa = ("Elixir.Counter", "handle_call", 3)
    delta = (Atom("delta"), None)
    batches = []
    for n in range(1, transitions + 1):
        ts = 10**12 + n * 10_000
        if n % KEYFRAME_EVERY == 1:
            builder.add("state", pid, ts, mfa=mfa, flags=STATE_WHOLE,
                        payload=encode((n, (Atom("key"), counter_state(n)))))
        else:
            body = (Atom("m"), [(COUNT, (Atom("v"), n))], [])
            builder.add("state", pid, ts, mfa=mfa, payload=encode((n, (delta[0], body))))
        if len(builder) == 2000:
            batches.append(builder.batch())
    if len(builder):
        batches.append(builder.batch())
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    record_batches(partial, batches, node=NODE, offset_ns=OFFSET_NS, finalize=True)
    partial.rename(path)


def recording_path(transitions: int) -> Path:
    folder = Path(tempfile.gettempdir()) / "elixirscope-bench"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"states-{transitions}-code{_code_version()}.duckdb"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def state_at_figures(transitions: int, samples: int = 300) -> None:
    path = recording_path(transitions)
    if not path.exists():
        started = time.perf_counter()
        build(path, transitions)
        print(f"built {path.name} in {time.perf_counter() - started:.1f} s")
    rng = random.Random(7)
    with elixirscope.open_recording(path) as rec:
        pid = rec.processes()[0].pid
        started = time.perf_counter()
        rec.state_at(pid, 0.5)
        first = time.perf_counter() - started
        span = transitions * 10_000 / 1e9
        moments = [rng.uniform(0.0, span) for _ in range(samples)]
        timings, wrong = [], 0
        for t in moments:
            started = time.perf_counter()
            state = rec.state_at(pid, t)
            timings.append(time.perf_counter() - started)
            expected = min(transitions, round(t * 1e9) // 10_000 + 1)
            wrong += state[COUNT] != expected
        baseline = []
        for _ in range(samples):
            seq = rng.randrange(1, transitions + 1)
            started = time.perf_counter()
            rec.event(seq)
            baseline.append(time.perf_counter() - started)
    p50, p95 = np.percentile(timings, [50, 95])
    b50, b95 = np.percentile(baseline, [50, 95])
    print(f"\nstate_at on one process with {transitions:,} transitions "
          f"(whole every {KEYFRAME_EVERY}), {samples} random moments")
    print(table(["", "p50", "p95", "vs event(seq) p50/p95"], [
        ["state_at", ms(p50), ms(p95), f"{p50 / b50:.1f}x / {p95 / b95:.1f}x"],
        ["event(seq) (baseline)", ms(b50), ms(b95), "1.0x"],
        ["first state_at (indexes the process)", ms(first), "", ""],
    ]))
    print(f"wrong states: {wrong}; goal p95 <= 20 ms: "
          f"{'met' if p95 <= 0.020 and not wrong else 'missed'}")


def run_once(scope: elixirscope.Scope, server: Any, calls: int, mode: str,
             path: Path) -> dict[str, float]:
    """One traced run: the client's µs per call, and the seconds until the recording
    holds every event."""
    node = scope.node
    ref = None
    if mode != "untraced":
        ref = scope.trace("es_state_workload", "detailed", state=(mode == "state"),
                          force=True)
    recorder = scope.record(path) if mode != "untraced" else None
    started = time.perf_counter()
    micros = node.rpc("es_state_workload", "run", [server, calls], timeout=600)
    if recorder is not None:
        recorder.stop()
    total = time.perf_counter() - started
    if ref is not None:
        scope.stop_trace(ref)
    return {"client_us": micros / calls, "total_s": total}


def stored_bytes(path: Path) -> tuple[int, float]:
    """(state records, payload and header bytes per record, as stored before DuckDB's
    compression)."""
    con = store.open_file(path)
    try:
        count, payload = con.execute(
            "SELECT count(*), sum(octet_length(payload) + 30) FROM events WHERE kind = 17"
        ).fetchone() or (0, 0)
    finally:
        con.close()
    return count, payload / max(1, count)


def capture_figures(calls: int, rounds: int = 3) -> None:
    with start_bare("erl", name_prefix="bench_state") as beam, \
            elixirscope.attach(beam.name, beam.cookie, max_events=float("inf"),
                               max_events_per_second=float("inf")) as scope, \
            tempfile.TemporaryDirectory(prefix="es-bench-state-") as folder:
        load_module(scope.node, WORKLOAD)
        for keys, label in ((2000, "~100 KB map"), (10, "10-key map")):
            server = scope.node.rpc("es_state_workload", "start", [keys])[1]
            size = scope.node.rpc("erlang", "external_size",
                                  [scope.node.rpc("sys", "get_state", [server])])
            results: dict[str, list[dict[str, float]]] = {m: [] for m in
                                                          ("untraced", "detailed", "state")}
            stored = (0, 0.0)
            for round_ in range(rounds):
                for mode in ("untraced", "detailed", "state"):
                    path = Path(folder) / f"{keys}-{mode}-{round_}.duckdb"
                    results[mode].append(run_once(scope, server, calls, mode, path))
                    if mode == "state" and round_ == 0:
                        stored = stored_bytes(path)
            scope.node.rpc("es_state_workload", "stop", [server])

            def med(mode: str, key: str, results: dict[str, list[dict[str, float]]] = results
                    ) -> float:
                return statistics.median(run[key] for run in results[mode])

            print(f"\n{label} ({size:,} bytes as ETF), {calls:,} calls each changing one "
                  f"key, median of {rounds} rounds")
            print(table(["", "client µs/call", "until recorded", "vs detailed"], [
                ["untraced", f"{med('untraced', 'client_us'):.1f}", "", ""],
                ["detailed (calls + returns)", f"{med('detailed', 'client_us'):.1f}",
                 f"{med('detailed', 'total_s'):.2f} s", "1.00x"],
                ["detailed + state", f"{med('state', 'client_us'):.1f}",
                 f"{med('state', 'total_s'):.2f} s",
                 f"{med('state', 'client_us') / med('detailed', 'client_us'):.2f}x client, "
                 f"{med('state', 'total_s') / med('detailed', 'total_s'):.2f}x recorded"],
            ]))
            count, per_record = stored
            goal = f"; goal <= 1 KB: {'met' if per_record <= 1024 else 'missed'}"
            print(f"state records: {count:,}; stored per transition: {per_record:.0f} bytes "
                  f"(payload and header){goal if keys == 2000 else ''}")


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(prog="bench_state")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_TRANSITIONS:,} transitions, {QUICK_CALLS} calls")
    args = parser.parse_args(list(argv))
    state_at_figures(QUICK_TRANSITIONS if args.quick else TRANSITIONS)
    capture_figures(QUICK_CALLS if args.quick else CALLS)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
