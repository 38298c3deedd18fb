"""Diagnosis at scale and the cost of answering: ``diagnose`` on a 100 k-event and a
10 M-event recording, the command line's answer time on the small one, finalize, and
the process metrics' cost on the traced node.

The recordings are those of ``bench_recording_queries`` (a busy service: 100
processes, requests handled by calls three deep, messages both ways), built once and
cached. Each figure is printed with a baseline measured in the same run (the machine
is shared; absolute times drift):

* ``diagnose`` (every detector, nothing stored) against one plain SQL pass over the
  events (``SELECT kind, count(*), max(ts) FROM events GROUP BY kind``). Goals: at most
  1 s on 100 k events, 10 s on 10 M.
* ``elixirscope spans``, ``query`` and ``diagnose`` (first run: found and stored; then
  read back) against ``python -c pass``, best of three. Goal: at most 0.5 s wall each.
* finalize of 100 k events (a busy 15 s recording) and of 10 M against copying the raw
  events table once. Goals: 2 s and 15 s.
* the traced node's CPU with 1,000 extra processes, with and without metrics sampled at
  10 Hz (its OS process's CPU time over the same window). Goal: at most 3% of a core.

Run alone with ``.venv/bin/python -m benchmarks.bench_diagnosis [--quick]`` (``--quick``:
1 M events for the large recording, a shorter CPU window).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_ingest import NODE, agent_batches
from benchmarks.bench_recording_queries import (
    OFFSET_NS,
    QUICK_EVENTS,
    build,
    cache_path,
    cached,
    service_workload,
)
from elixirscope.recording import correlate, store
from elixirscope.recording.offline import record_batches

SMALL = 100_000
LARGE = 10_000_000
GOALS = {SMALL: 1.0, LARGE: 10.0}
FINALIZE_GOALS = {SMALL: 2.0, LARGE: 15.0}
CLI_GOAL = 0.5
METRICS_GOAL = 3.0
EXTRA_PROCESSES = 1000


def recording(events: int) -> tuple[Path, dict[str, Any], str]:
    path = cache_path(events)
    info = cached(path)
    if info is not None:
        return path, info, f"cached, built {info['built']}"
    print(f"building {path} ...", flush=True)
    return path, build(path, events), "built now"


def _timed(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def _verdict(met: bool) -> str:
    return "goal met" if met else "GOAL MISSED"


def scan_baseline(path: Path) -> float:
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    try:
        seconds, _ = _timed(lambda: con.execute(
            "SELECT kind, count(*), max(ts) FROM events GROUP BY kind").fetchall())
    finally:
        con.close()
    return float(seconds)


def diagnose_cost(path: Path, events: int) -> None:
    from elixirscope.recordings import open_recording

    baseline = min(scan_baseline(path) for _ in range(3))
    with open_recording(path) as rec:
        seconds, found = _timed(lambda: rec.findings(refresh=True))
    goal = GOALS.get(events, GOALS[LARGE])
    kinds = sorted({finding.kind for finding in found})
    print(f"diagnose on {events:,} events: {seconds:.2f} s ({len(found)} findings: "
          f"{', '.join(kinds) or 'none'}); one SQL pass over the events {baseline * 1000:.0f} "
          f"ms: {seconds / baseline:.1f}x; goal {goal:g} s: {_verdict(seconds <= goal)}")


def cli_cost(path: Path) -> None:
    def run(*args: str) -> float:
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            subprocess.run([sys.executable, *args], check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            best = min(best, time.perf_counter() - started)
        return best

    baseline = run("-c", "pass")
    with tempfile.TemporaryDirectory(prefix="es-bench-diag-") as folder:
        copy = Path(folder) / "small.duckdb"
        shutil.copy(path, copy)
        first_started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "elixirscope", "diagnose", str(copy)],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        first = time.perf_counter() - first_started
        for name, args in (("spans --slowest 10", ["spans", str(copy), "--slowest", "10"]),
                           ("query --limit 20", ["query", str(copy), "--limit", "20"]),
                           ("diagnose (stored)", ["diagnose", str(copy)])):
            seconds = run("-m", "elixirscope", *args)
            print(f"  elixirscope {name}: {seconds:.2f} s wall, python -c pass "
                  f"{baseline:.2f} s: {seconds / baseline:.0f}x; goal {CLI_GOAL} s: "
                  f"{_verdict(seconds <= CLI_GOAL)}")
        print(f"  elixirscope diagnose (first run: found and stored): {first:.2f} s wall; "
              f"goal {CLI_GOAL} s: {_verdict(first <= CLI_GOAL)}")


def finalize_cost(events: int, large_info: dict[str, Any], large_events: int) -> None:
    import duckdb

    with tempfile.TemporaryDirectory(prefix="es-bench-final-") as folder:
        raw = Path(folder) / "raw.duckdb"
        record_batches(raw, agent_batches(service_workload(events)), node=NODE,
                       offset_ns=OFFSET_NS, finalize=False)
        con = duckdb.connect(str(raw))
        try:
            copy, _ = _timed(lambda: con.execute(
                "CREATE TEMP TABLE copied AS SELECT * FROM events").fetchall())
        finally:
            con.close()
        con = store.open_file(raw, read_only=False)
        try:
            seconds, _ = _timed(lambda: correlate.finalize(con))
        finally:
            con.close()
    goal = FINALIZE_GOALS[SMALL]
    print(f"finalize of {events:,} events: {seconds:.2f} s; copying the raw events once "
          f"{copy:.2f} s: {seconds / copy:.1f}x; goal {goal:g} s: "
          f"{_verdict(seconds <= goal)}")
    large = large_info["finalize_s"]
    goal = FINALIZE_GOALS[LARGE] * large_events / LARGE
    print(f"finalize of {large_events:,} events (when the cached recording was built, "
          f"{large_info['built']}): {large:.1f} s = {large / large_events * 1e6:.2f} "
          f"µs/event; goal {goal:g} s: {_verdict(large <= goal)}")


def metrics_cost(seconds: float) -> None:
    import elixirscope
    from elixirscope.remote_eval import eval_erlang
    from elixirscope.sample_nodes import start_bare

    def cpu(os_pid: int) -> float:
        fields = Path(f"/proc/{os_pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    with start_bare("erl", name_prefix="bench_metrics") as beam, \
            elixirscope.attach(beam.name, beam.cookie) as scope:
        node = scope.node
        os_pid = int(node.run(eval_erlang(node.anode, "list_to_integer(os:getpid())")))
        node.run(eval_erlang(node.anode, "[spawn(fun() -> receive stop -> ok end end) "
                                          "|| _ <- lists:seq(1, N)], ok",
                             bindings={"N": EXTRA_PROCESSES}))
        processes = node.run(eval_erlang(node.anode, "erlang:system_info(process_count)"))

        def window() -> float:
            before = cpu(os_pid)
            time.sleep(seconds)
            return cpu(os_pid) - before

        idle = min(window() for _ in range(2))
        scope.sample_metrics(10, 10.0)
        sampled = min(window() for _ in range(2))
        scope.sample_metrics(0, 0)
    extra = (sampled - idle) / seconds * 100
    print(f"metrics at 10 Hz, {processes:,} processes on the node: its CPU {sampled:.2f} s "
          f"in {seconds:g} s against {idle:.2f} s without: +{extra:.1f}% of a core; goal "
          f"{METRICS_GOAL}%: {_verdict(extra <= METRICS_GOAL)}")


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(prog="bench_diagnosis")
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_EVENTS:,} events for the large recording")
    args = parser.parse_args(list(argv))
    large_events = QUICK_EVENTS if args.quick else LARGE
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    small, _, how = recording(SMALL)
    print(f"small recording: {small} ({how})")
    diagnose_cost(small, SMALL)
    print("command line on the small recording:")
    cli_cost(small)
    large, large_info, how = recording(large_events)
    print(f"large recording: {large} ({how})")
    diagnose_cost(large, large_events)
    finalize_cost(SMALL, large_info, large_events)
    metrics_cost(5.0 if args.quick else 10.0)


if __name__ == "__main__":
    main(sys.argv[1:])
