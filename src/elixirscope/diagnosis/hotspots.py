"""Busy processes and hot functions: a process that spent most of the recording running
one function's own code (own time: the time in the function minus the traced calls it
made). Waiting is not running: calls to other processes and sleeps are left out, and so are
the framework layer's spans (read from telemetry, they time waits as well).

A process is busy when its own time in traced code is at least ``BUSY_SHARE`` of the
recording and ``MIN_BUSY`` seconds, and, where process metrics were sampled, they saw it
running in at least half of its samples (own time includes untraced sleeps and
receives; a process never sampled was never among the node's busiest); the function
that took most of it is named.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from elixirscope.analysis import metrics
from elixirscope.analysis.call_stats import call_stats
from elixirscope.analysis.results import FunctionStats
from elixirscope.diagnosis.finding import Evidence, Finding
from elixirscope.recording.results import duration_text
from elixirscope.tracing.events import FRAMEWORK

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

BUSY_SHARE = 0.5
MIN_BUSY = 0.5
# Own time in these is waiting, not running.
WAITING = {(":gen", "call", 4), (":timer", "sleep", 1), ("Process", "sleep", 1),
           (":erlang", "hibernate", 3), (":gen_server", "call", 2),
           (":gen_server", "call", 3), ("GenServer", "call", 2), ("GenServer", "call", 3),
           ("Task", "await", 2)}


def detect(rec: RecordingQueries) -> list[Finding]:
    dims = rec.dims
    ends = [dims.at(ts, node_id) for node_id, ts in dims.last_ts.items() if ts is not None]
    duration = max(ends, default=0.0)
    if duration <= 0:
        return []
    # The framework layer's spans (requests, queries, LiveView callbacks) are read from
    # telemetry: their time is elapsed time, waiting on the database or the client
    # included, not evidence of running.
    waiting = WAITING | {tuple(row) for row in rec.con.execute(
        "SELECT DISTINCT f.module, f.function, f.arity FROM events e JOIN functions f "
        f"USING (mfa_id) WHERE e.kind = 1 AND e.flags & {FRAMEWORK} != 0").fetchall()}
    per_process: dict[str, list[FunctionStats]] = defaultdict(list)
    for stats in call_stats(rec, None, None, None, None, None, "own", None, "process"):
        if (stats.module, stats.function, stats.arity) not in waiting and stats.pid:
            per_process[stats.pid].append(stats)
    sampled = metrics.recorded(rec)
    found = []
    for pid, functions in per_process.items():
        busy = sum(stats.own_time for stats in functions)
        if busy >= max(BUSY_SHARE * duration, MIN_BUSY) and (
                not sampled or _seen_running(rec, pid)):
            found.append(_finding(pid, functions, busy, duration))
    return found


def _seen_running(rec: RecordingQueries, pid: str) -> bool:
    """Whether the process metrics saw the process running in at least half of its
    samples. A process they never sampled was never among the node's busiest."""
    samples = [sample for pid_id in rec.pid_ids(pid) for sample in metrics.series(rec, pid_id)]
    running = sum(1 for sample in samples if sample.status in ("running", "runnable",
                                                               "garbage_collecting"))
    return bool(samples) and running >= len(samples) / 2


def _finding(pid: str, functions: list[FunctionStats], busy: float,
             duration: float) -> Finding:
    hottest = max(functions, key=lambda stats: stats.own_time)
    who = hottest.pid_name or pid
    mfa = f"{hottest.module}.{hottest.function}/{hottest.arity}"
    title = (f"Busy process {who}: it ran {duration_text(busy)} of the "
             f"{duration_text(duration)} recorded ({busy / duration:.0%}), "
             f"{duration_text(hottest.own_time)} of it in {mfa} (own time, "
             f"{hottest.count:,} calls of {duration_text(hottest.mean)})")
    details = tuple(f"{stats.module}.{stats.function}/{stats.arity}: own "
                    f"{duration_text(stats.own_time)} in {stats.count:,} calls"
                    for stats in sorted(functions, key=lambda s: -s.own_time)[:5])
    return Finding(
        kind="hot_function", title=title, severity="warning", start=0.0, end=duration,
        processes=(who,), evidence=Evidence(),
        next_commands=(f"elixirscope stats REC --pid {who} --sort own",
                       f"elixirscope spans REC --pid {who} --slowest 10"),
        details=details, weight=busy)
