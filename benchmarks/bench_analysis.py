"""Analysis queries on a large recording: ``call_stats``, ``repeated_call_trees``,
``find`` (a value, a predicate), ``traceback`` and ``range``.

The recording is the one ``bench_recording_queries`` builds and caches (10 M events by
default, ``--quick`` 1 M): 100 processes, requests of 12 events (4 spans three levels
deep, 2 messages) whose results ``{:ok, n}`` carry the request number, so most call
subtrees are unique. Baselines measured in the same run: ``spans(slowest=100)`` over
every span, and one full read of every payload (``sum(hash(payload))``), the floor of
any question about payloads.

Goals: ``call_stats`` and ``repeated_call_trees`` at most 2 s each, ``find`` of a value
in the payloads at most 1 s.

Run alone with ``.venv/bin/python -m benchmarks.bench_analysis [--quick] [--events N]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks.bench_recording_queries import (
    EVENTS,
    QUICK_EVENTS,
    SEED,
    build,
    cache_path,
    cached,
    check_against_builder,
    service_workload,
)
from elixirscope.etf import Atom

RUNS = 3
STATS_GOAL = REPEATS_GOAL = 2.0
FIND_GOAL = 1.0


def _timed(call: Callable[[], Any], runs: int = RUNS) -> tuple[float, float, Any]:
    """Median and worst of ``runs`` runs, and the last result."""
    times = []
    result = None
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
    return statistics.median(times), max(times), result


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def _line(name: str, median: float, worst: float, baselines: dict[str, float],
          note: str = "", goal: float | None = None) -> None:
    ratios = ", ".join(f"{median / base:.1f}x {label}" for label, base in baselines.items())
    verdict = "" if goal is None else (
        f"; goal at most {goal:g} s: {'met' if worst <= goal else 'missed'}")
    print(f"{name}: median {_ms(median)}, worst {_ms(worst)} ({ratios}){note}{verdict}")


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(prog="bench_analysis")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events")
    args = parser.parse_args(list(argv))
    events = args.events or (QUICK_EVENTS if args.quick else EVENTS)

    from elixirscope.recordings import open_recording

    path = cache_path(events)
    if cached(path) is None:
        check_against_builder(lambda n: service_workload(n, seed=SEED + 1))
        print(f"building {path} (bench_recording_queries' recording) ...", flush=True)
        build(path, events)
    with open_recording(path) as rec:
        one = rec.scalar
        count, spans = one("SELECT count(*) FROM events"), one("SELECT count(*) FROM spans")
        print(f"recording: {path}; {count:,} events, {spans:,} spans; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {RUNS} runs each")
        rec.events(pid=1, limit=1)  # loads the small tables
        slowest, _, _ = _timed(lambda: rec.spans(slowest=100))
        scan, _, _ = _timed(lambda: one("SELECT sum(hash(payload)) FROM events"))
        print(f"baselines: spans(slowest=100) {_ms(slowest)}; read every payload "
              f"(sum(hash(payload))) {_ms(scan)}")
        base = {"spans(slowest)": slowest, "payload read": scan}

        median, worst, stats = _timed(rec.call_stats)
        _line("call_stats() (every function)", median, worst, base,
              f"; {len(stats)} functions, {sum(s.count for s in stats):,} calls",
              STATS_GOAL)
        median, worst, _ = _timed(lambda: rec.call_stats(module="Shop.Repo", sort="p99"))
        _line("call_stats(module=Shop.Repo, sort=p99)", median, worst, base)

        median, worst, trees = _timed(rec.repeated_call_trees)
        top = trees[0] if trees else None
        _line("repeated_call_trees()", median, worst, base,
              f"; {len(trees)} returned" + (f", first {top.mfa} x{top.count} wasting "
                                             f"{_ms(top.wasted)}" if top else ""),
              REPEATS_GOAL)

        median, worst, found = _timed(lambda: rec.find((Atom("req"), 123_456)))
        _line("find({:req, 123456}) (a message)", median, worst, base,
              f"; {len(found)} events", FIND_GOAL)
        median, worst, found = _timed(lambda: rec.find(654_321))
        _line("find(654321) (anywhere in payloads)", median, worst, base,
              f"; {len(found)} events", FIND_GOAL)
        median, worst, found = _timed(lambda: rec.find("no such text"))
        _line('find("no such text") (nothing matches)', median, worst, base,
              f"; {len(found)} events", FIND_GOAL)

        window = {"pid": 1, "since": 10.0, "until": 11.0}
        in_window = len(rec.events(limit=None, **window))  # type: ignore[arg-type]
        median, worst, found = _timed(lambda: rec.find(
            lambda v: isinstance(v, int) and v % 1000 == 7, **window))  # type: ignore[arg-type]
        print(f"find(predicate) over one process's 1 s window ({in_window:,} events "
              f"decoded): median {_ms(median)} = {in_window / median:,.0f} events/s; "
              f"{len(found)} events")

        # Every client sends its next request after the reply to the last one, so a
        # traceback walks back request by request until max_links (50) processes.
        calls = rec.events(kind="return", since=30, until=30.01, limit=5)
        median, worst, backs = _timed(lambda: [rec.traceback(e) for e in calls], runs=1)
        links = sum(len(back.links) for back in backs)
        print(f"traceback: {len(calls)} returns, {_ms(median / max(1, len(calls)))} each, "
              f"{_ms(median / max(1, links))} per process link ({links} links)")
        roots = rec.spans(since=30, until=30.01, limit=20)
        roots = [span for span in roots if span.depth == 1]
        median, worst, _ = _timed(lambda: [rec.range(span) for span in roots], runs=1)
        print(f"range: {len(roots)} handler spans, {_ms(median / max(1, len(roots)))} each")


if __name__ == "__main__":
    main(sys.argv[1:])
