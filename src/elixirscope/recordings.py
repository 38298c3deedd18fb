"""The public ``Recording``: a recording's stored queries (``recording.query``), the
analyses built on them (``elixirscope.analysis``) and its findings
(``elixirscope.diagnosis``), on one object. ``open_recording(path) -> Recording``.

The layers import downward only: the store and its queries know nothing of the
analyses, the analyses nothing of the detectors, and this module, which knows them
all, is imported by the CLI, the web UI and the API alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from elixirscope.analysis import call_stats as _call_stats
from elixirscope.analysis import find as _find
from elixirscope.analysis import framework as _framework
from elixirscope.analysis import ranges as _ranges
from elixirscope.analysis import repeats as _repeats
from elixirscope.analysis import rerun as _rerun
from elixirscope.analysis import stepping as _stepping
from elixirscope.analysis import traceback as _traceback
from elixirscope.analysis.results import (
    FunctionStats,
    RangeNode,
    RepeatedTree,
    RerunResult,
    Traceback,
)
from elixirscope.analysis.waits_graph import WaitGraph, graph_at
from elixirscope.diagnosis import detectors, stored
from elixirscope.diagnosis.finding import Finding
from elixirscope.diagnosis.run import diagnose
from elixirscope.dist.node import Node
from elixirscope.errors import QueryError
from elixirscope.recording.query import RecordingQueries, open_store, reads
from elixirscope.recording.results import Event, Span
from elixirscope.recording.timespec import TimeSpec

__all__ = ["QueryError", "Recording", "open_recording"]


def open_recording(path: str | Path, *, writable: bool = False) -> Recording:
    """Opens a recording for queries (read-only unless ``writable``: then ``findings()``
    stores what it finds). A recording that was never finalized is finalized first, in
    place, unless another process is still writing it."""
    target = Path(path)
    con, recovered = open_store(target, writable=writable)
    return Recording(con, target, recovered=recovered, writable=writable)


class Recording(RecordingQueries):
    """An open recording (``open_recording``); a context manager, or call ``close()``.
    ``recovered`` is true when the recording had not been finalized (its recorder
    was killed) and opening it did so. Each analysis is a thin entry to its module in
    ``elixirscope.analysis``, documented there."""

    @reads
    def findings(self, *, refresh: bool = False) -> list[Finding]:
        """What is wrong in the recording, worst first: the findings stored in it when
        the same detectors wrote them, else found now (and stored, when the recording
        was opened ``writable``). ``refresh`` finds them again whatever is stored."""
        current = detectors.version()
        found = None if refresh else self.stored_findings()
        if found is None:
            found = diagnose(self)
            if self.writable:
                stored.write(self.con, found, current)
        return found

    @reads
    def stored_findings(self) -> list[Finding] | None:
        """The findings stored in the recording by the detectors running now, or None
        (none stored, or stored by other detectors)."""
        return stored.read(self.con, detectors.version())

    @reads
    def waits_at(self, t: TimeSpec) -> WaitGraph:
        """The waits-for graph at ``t``: who waits on whom, and the cycles."""
        return graph_at(self, t)

    @reads
    def requests(self, route: str | None = None, status: int | None = None,
                 slowest: int | None = None) -> list[_framework.Request]:
        """The HTTP requests of a framework trace, with their route, action, status,
        params and the Ecto queries made inside each."""
        return _framework.requests(self, route=route, status=status, slowest=slowest)

    @reads
    def waterfall(self, span_id: int) -> list[dict[str, Any]]:
        """A request and every traced call inside it (dispatch, plug pipeline, queries
        ...), each with its offset and duration from the request's start."""
        return _framework.waterfall(self, span_id)

    @reads
    def queries(self, slowest: int | None = None) -> list[_framework.Query]:
        """Every Ecto query of a framework trace, with the request it ran in."""
        return _framework.queries(self, slowest=slowest)

    @reads
    def repeated_queries(self, min_runs: int = 3) -> list[_framework.QueryShape]:
        """Query texts run ``min_runs`` times or more inside one request (N+1)."""
        return _framework.repeated_queries(self, min_runs=min_runs)

    @reads
    def channels(self) -> list[_framework.ChannelTopic]:
        """Per channel topic: joins, handle_in events, and the broadcasts with the
        processes they reached."""
        return _framework.channels(self)

    @reads
    def broadcasts(self) -> list[_framework.Broadcast]:
        """Every Phoenix.PubSub broadcast, with the processes it reached."""
        return _framework.broadcasts(self)

    @reads
    def liveviews(self) -> list[_framework.LiveViewSummary]:
        """Each LiveView process with its callbacks, their times and its assigns'
        changes (its state: ``state_history`` works on a LiveView as on a GenServer)."""
        return _framework.liveviews(self)

    @reads
    def traceback(self, event: Event | int, max_links: int = 50) -> Traceback:
        """The traced calls around ``event`` (innermost first), the message that started
        the outermost, the sender's calls at the send, and so on back to the origin."""
        return _traceback.traceback(self, event, max_links)

    @reads
    def range(self, span: Span | int, max_depth: int | None = None,
              messages: bool = False, limit: int = 10_000) -> RangeNode:
        """Everything between a call and its return, as a tree of the calls inside it
        (at most ``max_depth`` levels, ``limit`` calls), with ``messages`` the sends and
        receives too."""
        return _ranges.call_range(self, span, max_depth, messages, limit)

    @reads
    def call_stats(self, module: str | None = None, function: str | None = None,
                   pid: str | int | None = None, since: TimeSpec | None = None,
                   until: TimeSpec | None = None, sort: str = "acc",
                   limit: int | None = None, by: str = "function") -> list[FunctionStats]:
        """Per function (``by="process"``: per function and process): count,
        accumulated and own time, duration percentiles."""
        return _call_stats.call_stats(self, module, function, pid, since, until, sort, limit,
                                      by)

    @reads
    def repeated_call_trees(self, min_count: int = 2, min_size: int = 1,
                            module: str | None = None, function: str | None = None,
                            pid: str | int | None = None, since: TimeSpec | None = None,
                            until: TimeSpec | None = None,
                            limit: int | None = 20) -> list[RepeatedTree]:
        """Identical call subtrees that repeat, the most wasted time first."""
        return _repeats.repeated_call_trees(self, min_count, min_size, module, function,
                                            pid, since, until, limit)

    @reads
    def find(self, what: Any, *, pid: str | int | None = None, module: str | None = None,
             function: str | None = None, kind: str | Iterable[str] | None = None,
             since: TimeSpec | None = None, until: TimeSpec | None = None,
             limit: int | None = 1000, order: str = "asc") -> list[Event]:
        """Events whose payload holds a term, a substring of a binary (``str`` or
        ``bytes``), or a subterm a predicate (a callable; slower) accepts."""
        return _find.find(self, what, pid=pid, module=module, function=function, kind=kind,
                          since=since, until=until, limit=limit, order=order)

    @reads
    def next(self, event: Event | int, by: str = "process") -> Event | None:
        """The next event by process (step into), span (step over) or message."""
        return _stepping.step(self, event, by, forward=True)

    @reads
    def prev(self, event: Event | int, by: str = "process") -> Event | None:
        """The previous event by process, span or message."""
        return _stepping.step(self, event, by, forward=False)

    @reads
    def rerun(self, span: Span | int, node: Node, *, timeout: float = 15.0) -> RerunResult:
        """SIDE-EFFECTING: calls the span's function again on the live ``node`` with the
        recorded arguments and compares the result with the recorded one."""
        return _rerun.rerun(self, span, node, timeout=timeout)


