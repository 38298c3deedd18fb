"""Deadlocks and call cycles: a cycle in the waits-for graph (A waits on B while B waits
on A, any length), live when the recording stopped or ended by a timeout."""

from __future__ import annotations

from typing import TYPE_CHECKING

from elixirscope.analysis.waits_graph import (
    Blocked,
    Edge,
    blocked_at_start,
    blocked_cycles,
    cycles,
)
from elixirscope.diagnosis.finding import Evidence, Finding

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries


def detect(rec: RecordingQueries) -> list[Finding]:
    found = [_finding(cycle) for cycle in cycles(rec)]
    found.extend(_blocked_finding(rec, cycle)
                 for cycle in blocked_cycles(blocked_at_start(rec)))
    return found


def _blocked_finding(rec: RecordingQueries, cycle: tuple[Blocked, ...]) -> Finding:
    """A cycle of calls already blocked when the tracing began."""
    dims = rec.dims
    names = [dims.name(entry.pid_id) or dims.pid(entry.pid_id) or "?" for entry in cycle]
    links = " while ".join(
        f"{who}{f' (in {entry.waiting_in})' if entry.waiting_in else ''} waits on "
        f"{names[(index + 1) % len(names)]}"
        for index, (who, entry) in enumerate(zip(names, cycle, strict=True)))
    still = all(entry.still for entry in cycle)
    title = (f"Deadlock: {links}; each was already blocked in a call when the recording "
             f"began{' and still was at its end' if still else ''}")
    start = min(entry.at for entry in cycle)
    return Finding(
        kind="deadlock", title=title, severity="critical", start=start, end=None,
        processes=tuple(names), evidence=Evidence(events=tuple(e.seq for e in cycle)),
        next_commands=("elixirscope query REC --kind mailbox --limit 20",
                       f"elixirscope waits REC --at {start:.3f}"),
        details=tuple(f"{name}: in :gen.do_call/4, monitoring "
                      f"{dims.label(entry.callee_pid_id)}" for name, entry in
                      zip(names, cycle, strict=True)),
        weight=float(len(cycle)))


def _finding(cycle: tuple[Edge, ...]) -> Finding:
    waits = [edge.wait for edge in cycle]
    start = max(wait.since for wait in waits)
    live = [wait for wait in waits if wait.outcome == "waiting"]
    end = start if live else min(edge.end for edge in cycle)
    links = " while ".join(
        f"{_who(wait.span.pid_name, wait.pid)}"
        f"{f' (in {wait.caller.mfa})' if wait.caller else ''} calls {wait.callee} "
        f"with {wait.request}" for wait in waits)
    if live:
        ending = "still waiting when the recording stopped"
    else:
        broken = min(waits, key=lambda wait: wait.since + (wait.duration or 0.0))
        ending = (f"broken after {broken.duration or 0.0:.3g} s when "
                  f"{_who(broken.span.pid_name, broken.pid)}'s call {broken.outcome}")
    title = f"Call cycle (deadlock): {links}; {ending}"
    first = min(waits, key=lambda wait: wait.since)
    return Finding(
        kind="deadlock", title=title, severity="critical", start=start,
        end=None if live else end,
        processes=tuple(dict.fromkeys(_who(w.span.pid_name, w.pid) for w in waits)),
        evidence=Evidence(waits=tuple(w.span.span_id for w in waits),
                          spans=tuple(w.caller.span_id for w in waits if w.caller)),
        next_commands=(f"elixirscope waits REC --at {start:.3f}",
                       f"elixirscope traceback REC {first.span.span_id}"),
        details=tuple(f"{_who(w.span.pid_name, w.pid)} waits on {w.callee} for {w.request} "
                      f"since {w.since:.3f} s: {w.outcome}"
                      f"{f' after {w.duration:.3g} s' if w.duration is not None else ''}"
                      for w in waits),
        weight=sum(w.duration or 0.0 for w in waits))


def _who(name: str | None, pid: str) -> str:
    return name or pid
