"""The waits-for graph: which process waits on which, at any moment, and the cycles in
it over the whole recording (a deadlock, live or ended by a timeout).

A wait's callee is named as the caller named it: a pid, a registered name, or
``{name, node}``; a name is resolved to the process that held it when the wait began
(names follow their holders). A callee the recording never saw stays unresolved: an
edge to nowhere, never part of a cycle.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from elixirscope.beam_names import module_display
from elixirscope.elixir_format import inspect
from elixirscope.errors import ETFDecodeError, QueryError
from elixirscope.etf import Atom, Pid
from elixirscope.recording.results import payload_value
from elixirscope.recording.timespec import TimeSpec, wall_ns
from elixirscope.recording.waits import Wait, waits

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries


@dataclass(frozen=True)
class Edge:
    """``wait.pid`` waits on ``callee_pid_id`` (None: a process the recording never saw)."""

    wait: Wait
    callee_pid_id: int | None

    @property
    def end(self) -> float:
        """When the wait ended (for a wait with no end, the recording's end)."""
        return self.wait.since + (self.wait.duration or 0.0)


@dataclass(frozen=True)
class WaitGraph:
    """The waits open at ``at`` (seconds from the start) and the cycles among them,
    each as its edges in call order."""

    at: float
    edges: tuple[Edge, ...]
    cycles: tuple[tuple[Edge, ...], ...]


def resolved_waits(rec: RecordingQueries) -> list[Edge]:
    """Every wait of the recording with its callee resolved, by start time."""
    found = waits(rec, limit=None)
    resolver = _Resolver(rec)
    return [Edge(wait, resolver.pid_id(wait)) for wait in found]


def graph_at(rec: RecordingQueries, t: TimeSpec) -> WaitGraph:
    """The waits-for graph at ``t``: every wait begun at or before ``t`` and not yet
    ended."""
    dims = rec.dims
    at = (wall_ns(t, dims.start_wall_ns) - dims.start_wall_ns) / 1e9
    return graph_of(resolved_waits(rec), at)


def graph_of(edges: list[Edge], at: float) -> WaitGraph:
    """The graph at ``at`` seconds from the start, of waits already resolved."""
    open_then = tuple(edge for edge in edges
                      if edge.wait.since <= at and (edge.wait.outcome == "waiting"
                                                    or edge.end > at))
    return WaitGraph(at, open_then, tuple(_cycles_among(open_then)))


def cycles(rec: RecordingQueries) -> list[tuple[Edge, ...]]:
    """Every distinct cycle that formed in the waits-for graph during the recording, in
    the order they closed: the edge that closed it last."""
    edges = resolved_waits(rec)
    by_pid: dict[int, list[Edge]] = defaultdict(list)
    for edge in edges:
        by_pid[edge.wait.span.pid_id].append(edge)
    starts = {pid_id: [edge.wait.since for edge in group] for pid_id, group in by_pid.items()}

    def open_wait(pid_id: int, at: float) -> Edge | None:
        group = by_pid.get(pid_id)
        if not group:
            return None
        index = bisect.bisect_right(starts[pid_id], at) - 1
        # Nested waits of one process (a call inside a call) are open together; the
        # innermost, the latest begun, is the one it is blocked in.
        while index >= 0:
            edge = group[index]
            if edge.wait.outcome == "waiting" or edge.end > at:
                return edge
            index -= 1
        return None

    found: list[tuple[Edge, ...]] = []
    seen: set[frozenset[int]] = set()
    for edge in edges:
        chain = [edge]
        at = edge.wait.since
        current = edge.callee_pid_id
        visited = {edge.wait.span.pid_id}
        while current is not None and current not in visited:
            visited.add(current)
            following = open_wait(current, at)
            if following is None:
                break
            chain.append(following)
            current = following.callee_pid_id
        if current is not None and current == edge.wait.span.pid_id and len(chain) > 1:
            key = frozenset(link.wait.span.span_id for link in chain)
            if key not in seen:
                seen.add(key)
                found.append(tuple(sorted(chain, key=lambda link: link.wait.since)))
    return found


@dataclass(frozen=True)
class Blocked:
    """A process that was already waiting for a call's reply when its tracing began
    (the call began before the recording): ``callee_pid_id`` is the process it
    monitored while waiting; ``still`` is true when the process did nothing more
    while recorded."""

    pid_id: int
    callee_pid_id: int | None
    at: float
    seq: int
    still: bool
    waiting_in: str | None  # the innermost function of its own below the call


def blocked_at_start(rec: RecordingQueries) -> list[Blocked]:
    """The processes the recording found waiting in a call when their tracing began."""
    resolver = _Resolver(rec)
    found = []
    for seq, pid_id, payload, ts in rec.con.execute(
            "SELECT seq, pid_id, payload, ts FROM events WHERE kind = 18 ORDER BY seq"
    ).fetchall():
        try:
            value = payload_value(bytes(payload))
        except ETFDecodeError:
            continue
        callees = value.get(Atom("waiting_on")) if isinstance(value, dict) else None
        if not callees:
            continue
        callee = next((pid_id_ for pid_id_ in map(resolver.pid_of, callees)
                       if pid_id_ is not None), None)
        later = rec.con.execute("SELECT 1 FROM events WHERE pid_id = ? AND seq > ? "
                                "AND kind NOT IN (18) LIMIT 1", [pid_id, seq]).fetchone()
        node_id = rec.dims.node_of(pid_id) or 0
        found.append(Blocked(pid_id, callee, rec.dims.at(ts, node_id), seq, later is None,
                             _own_frame(value.get(Atom("stack")))))
    return found


_CALL_MACHINERY = frozenset({"gen", "gen_server", "gen_statem", "gen_event", "proc_lib",
                             "Elixir.GenServer", "gen_server2", "p1_server"})


def _own_frame(stack: Any) -> str | None:
    """The first frame of a blocked process's stack that is not the call machinery."""
    if not isinstance(stack, list):
        return None
    for frame in stack:
        if (isinstance(frame, tuple) and len(frame) == 3
                and str(frame[0]) not in _CALL_MACHINERY and isinstance(frame[2], int)):
            return f"{module_display(str(frame[0]))}.{frame[1]}/{frame[2]}"
    return None


def blocked_cycles(blocked: list[Blocked]) -> list[tuple[Blocked, ...]]:
    """The cycles among processes blocked in calls at the start."""
    by_pid = {entry.pid_id: entry for entry in blocked}
    found: list[tuple[Blocked, ...]] = []
    seen: set[frozenset[int]] = set()
    for start in by_pid:
        order: list[int] = []
        current: int | None = start
        while current is not None and current in by_pid and current not in order:
            order.append(current)
            current = by_pid[current].callee_pid_id
        if current is not None and current in order:
            loop = order[order.index(current):]
            if frozenset(loop) not in seen:
                seen.add(frozenset(loop))
                found.append(tuple(by_pid[pid_id] for pid_id in loop))
    return found


def _cycles_among(edges: tuple[Edge, ...]) -> list[tuple[Edge, ...]]:
    """The cycles of a graph in which each process waits on at most one other (its
    innermost wait)."""
    blocked: dict[int, Edge] = {}
    for edge in sorted(edges, key=lambda link: link.wait.since):
        blocked[edge.wait.span.pid_id] = edge
    found: list[tuple[Edge, ...]] = []
    seen: set[frozenset[int]] = set()
    for start in blocked:
        path: list[Edge] = []
        current: int | None = start
        order: list[int] = []
        while current is not None and current in blocked and current not in order:
            order.append(current)
            path.append(blocked[current])
            current = blocked[current].callee_pid_id
        if current is not None and current in order:
            loop = path[order.index(current):]
            key = frozenset(link.wait.span.span_id for link in loop)
            if key not in seen:
                seen.add(key)
                found.append(tuple(loop))
    return found


class _Resolver:
    """Callee names and pids to the recording's pid ids."""

    def __init__(self, rec: RecordingQueries) -> None:
        self.rec = rec
        dims = rec.dims
        self.by_pid = {(shown, node_id): pid_id
                       for pid_id, (shown, node_id) in dims.pids.items()}
        self.nodes = {name: node_id for node_id, name in dims.nodes.items()}
        self.holders: dict[str, list[tuple[int, float | None, float | None]]] | None = None

    def pid_id(self, wait: Wait) -> int | None:
        target = _first_argument(wait)
        node_id = self.rec.dims.node_of(wait.span.pid_id)
        if isinstance(target, tuple) and len(target) == 2 and isinstance(target[1], Atom):
            node_id = self.nodes.get(str(target[1]), node_id)
            target = target[0]
        if isinstance(target, Pid):
            return self.pid_of(target)
        if isinstance(target, Atom):
            return self._holder(inspect(target), wait.since)
        return None

    def pid_of(self, pid: Any) -> int | None:
        """The recording's id of a pid term (None for one it never saw)."""
        if not isinstance(pid, Pid):
            return None
        node_id = self.nodes.get(str(pid.node))
        if node_id is None:
            return None
        return self.by_pid.get((f"#PID<0.{pid.id}.{pid.serial}>", node_id))

    def _holder(self, name: str, at: float) -> int | None:
        try:
            candidates = self.rec.pid_ids(name)
        except QueryError:
            return None
        if len(candidates) == 1:
            return candidates[0]
        holders = self._name_spans().get(name.lstrip(":"), [])
        for pid_id, since, until in holders:
            if pid_id in candidates and (since is None or since <= at) and (
                    until is None or at < until):
                return pid_id
        return candidates[-1]

    def _name_spans(self) -> dict[str, list[tuple[int, float | None, float | None]]]:
        if self.holders is None:
            dims = self.rec.dims
            self.holders = defaultdict(list)
            for pid_id, name, since, until in self.rec.con.execute(
                    "SELECT pid_id, name, since_ts, until_ts FROM process_names").fetchall():
                node_id = dims.node_of(pid_id) or 0
                self.holders[name.lstrip(":")].append(
                    (pid_id, dims.time(since, node_id), dims.time(until, node_id)))
        return self.holders


def _first_argument(wait: Wait) -> Any:
    try:
        args = payload_value(wait.span.args_payload)
    except ETFDecodeError:
        return None
    first = args[0] if isinstance(args, list) and args else None
    if isinstance(first, dict):  # a %Task{}: the task's process is the callee
        return first.get(Atom("pid"))
    return first
