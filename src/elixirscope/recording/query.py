"""The stored questions of a finished recording: events, spans, messages, processes,
causes, waits and time travel (``RecordingQueries``). The analyses and findings built on
these live above them (``elixirscope.recordings.Recording`` brings them together).

A recording whose recorder never finished (killed, or the machine went down) has no
derived tables yet; opening it builds them in place (``Recording.recovered``). Every
failure to read the file, at open or later (damage can surface lazily, page by page),
is a ``RecordingError`` in one sentence; a question the recording cannot answer
(a process or module it never saw, an unknown kind) is a ``QueryError``.

Processes are named as people write them: ``#PID<0.123.0>``, ``<0.123.0>``, a
registered name (``Bank.Auditor``, ``:logger``) or a ``pid_id``. Modules as Elixir
writes them (``Bank.Account``, ``:gen_server``, ``gen_server``); functions by name or
``name/arity``. Times are described in :mod:`elixirscope.recording.timespec`; ``since``
is inclusive and ``until`` exclusive.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self, TypeVar, cast

import duckdb

from elixirscope.beam_names import function_atom, module_atom, module_display
from elixirscope.elixir_format import register_records
from elixirscope.errors import ETFDecodeError, QueryError
from elixirscope.etf import Atom, encode
from elixirscope.recording import correlate, sql, store
from elixirscope.recording import waits as _waits
from elixirscope.recording.results import (
    CauseStep,
    Event,
    Message,
    Process,
    Span,
    event_from_row,
    mfa_text,
    payload_text,
    payload_value,
    shorten,
)
from elixirscope.recording.sql import (
    MESSAGE_COLUMNS,
    MESSAGE_TIME,
    SPAN_COLUMNS,
    SPAN_START,
    Where,
    direction,
    event_sql,
    kind_codes,
    limit_sql,
)
from elixirscope.recording.state_diff import StateDiff
from elixirscope.recording.state_results import FieldChange, Replay, StateTransition
from elixirscope.recording.timespec import TimeSpec, seconds, wall_ns
from elixirscope.recording.timetravel import TimeTravel
from elixirscope.recording.waits import Wait
from elixirscope.tracing.events import KIND_CODES

__all__ = ["QueryError", "RecordingQueries", "open_store"]

_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")
_Q = TypeVar("_Q", bound="RecordingQueries")

# Letter runs that inspect() prints around a term's own data (#PID<...>,
# MapSet.new(...), Date.range(...), <<1::size(3)>>, ...): not in the ETF bytes.
_DECORATIONS = frozenset({"PID", "Reference", "Port", "Function", "new", "range", "parse",
                          "requirement", "size"})
_LETTER_RUN = re.compile(r"[A-Za-z]{3,}")
# Escapes inspect prints: \n \d \e ..., \xHH, \x{HHHH}, \uFEFF. Any backslash may begin
# one (a text can start on the second half of \\), and a text may begin inside one.
_ESCAPE = re.compile(r"\\(?:x\{[0-9A-F]*\}?|x[0-9A-F]{0,2}|u[0-9A-F]{0,4}|[^\\])?",
                     re.DOTALL)
_ESCAPE_TAIL = re.compile(r"^(?:[abdefnrtv]|[xu]?\{?[0-9A-F]{0,6}\}?)")
_FUNCTION_SPEC = re.compile(r"^(.+?)(?:/(\d+))?$")
_NORMAL, _SHUTDOWN = Atom("normal"), Atom("shutdown")


def open_store(path: str | Path, *, writable: bool = False
               ) -> tuple[duckdb.DuckDBPyConnection, bool]:
    """A connection to a recording (read-only unless ``writable``), and whether opening
    it had to finalize it first, in place (a recording whose recorder never finished;
    ``RecordingError`` while another process still writes it)."""
    target = Path(path)
    con = store.open_file(target, read_only=not writable)
    with store.reading(target):
        finalized = store.read_meta(con).get("finalized") is True
    if finalized:
        return con, False
    con.close()
    con = store.open_file(target, read_only=False)
    try:
        with store.reading(target):
            correlate.finalize(con)
    finally:
        con.close()
    return store.open_file(target, read_only=not writable), True


def reads(method: Callable[Concatenate[_Q, _P], _R]) -> Callable[Concatenate[_Q, _P], _R]:
    """DuckDB errors while the method reads become one-sentence ``RecordingError``s."""
    @functools.wraps(method)
    def wrapper(self: _Q, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        with store.reading(self.path):
            return method(self, *args, **kwargs)
    return wrapper


# Past this many payloads to read, a join does it faster than a literal IN list.
_JOIN_PAYLOADS = 5_000


@dataclass(frozen=True)
class _Dimensions:
    """The small tables, in memory: ids to node names, pids, names and functions."""

    nodes: dict[int, str]
    offsets: dict[int, int]
    pids: dict[int, tuple[str, int]]
    names: dict[int, tuple[str, ...]]
    functions: dict[int, tuple[str, str, int]]
    start_wall_ns: int
    last_ts: dict[int, int]  # per node, when its recording ended (else its last event)

    def pid(self, pid_id: int | None) -> str | None:
        return None if pid_id is None else self.pids[pid_id][0]

    def name(self, pid_id: int | None) -> str | None:
        names = self.names.get(pid_id) if pid_id is not None else None
        return names[0] if names else None

    def label(self, pid_id: int | None) -> str:
        """``#PID<0.5.0> (Bank.Auditor)``, or the pid alone."""
        if pid_id is None:
            return "an unrecorded process"
        name = self.name(pid_id)
        return f"{self.pid(pid_id)} ({name})" if name else str(self.pid(pid_id))

    def mfa(self, mfa_id: int) -> str:
        """``Bank.Account.deposit/2``."""
        module, function, arity = self.functions[mfa_id]
        return f"{module}.{function}/{arity}"

    def node_of(self, pid_id: int | None) -> int | None:
        return None if pid_id is None else self.pids[pid_id][1]

    def at(self, ts: int, node_id: int) -> float:
        """Seconds from the start to ``ts`` on the node's clock."""
        return (ts + self.offsets.get(node_id, 0) - self.start_wall_ns) / 1e9

    def time(self, ts: int | None, node_id: int | None) -> float | None:
        return None if ts is None or node_id is None else self.at(ts, node_id)




class RecordingQueries:
    """An open recording (``open_recording``); a context manager, or call ``close()``.
    ``recovered`` is true when the recording had not been finalized (its recorder
    was killed) and opening it did so."""

    def __init__(self, con: duckdb.DuckDBPyConnection, path: Path, *,
                 recovered: bool = False, writable: bool = False) -> None:
        self.con = con
        self.path = path
        self.recovered = recovered
        self.writable = writable
        # Its nodes' record definitions, for printing their records with field names.
        for node, rows in (self.meta.get("records") or {}).items():
            register_records(node, {(name, size): fields for name, size, fields in rows})

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.path}>"

    @functools.cached_property
    def meta(self) -> dict[str, Any]:
        """The recording's ``meta`` table: traces, limits, agent and ring counters."""
        with store.reading(self.path):
            return store.read_meta(self.con)

    @functools.cached_property
    def dims(self) -> _Dimensions:
        with store.reading(self.path):
            con = self.con
            nodes = con.execute("SELECT node_id, name, time_offset_ns, started_ts "
                                "FROM nodes").fetchall()
            starts = [started + offset for _, _, offset, started in nodes if started is not None]
            if not starts:
                first = con.execute("SELECT min(ts + wall_offset) FROM events").fetchone()
                starts = [first[0]] if first and first[0] is not None else [0]
            names = con.execute("SELECT pid_id, names FROM processes").fetchall()
            return _Dimensions(
                nodes={node_id: name for node_id, name, _, _ in nodes},
                offsets={node_id: offset for node_id, _, offset, _ in nodes},
                pids={pid_id: (pid, node_id) for pid_id, node_id, pid in
                      con.execute("SELECT pid_id, node_id, pid FROM pids").fetchall()},
                names={pid_id: tuple(found) for pid_id, found in names if found},
                functions={row[0]: (row[1], row[2], row[3]) for row in con.execute(
                    "SELECT mfa_id, module, function, arity FROM functions").fetchall()},
                start_wall_ns=min(starts),
                last_ts=dict(con.execute(
                    "SELECT n.node_id, greatest(n.ended_ts, max(e.ts)) FROM nodes n "
                    "LEFT JOIN events e USING (node_id) GROUP BY n.node_id, n.ended_ts"
                ).fetchall()))

    # --- events -------------------------------------------------------------------------

    @reads
    def events(self, pid: str | int | None = None, module: str | None = None,
               function: str | None = None, kind: str | Iterable[str] | None = None,
               since: TimeSpec | None = None, until: TimeSpec | None = None,
               text: str | None = None, limit: int | None = 1000,
               order: str = "asc") -> list[Event]:
        """The events that pass every filter given, in time order (``order="desc"``:
        latest first), at most ``limit`` (``None``: all).

        ``pid`` keeps one process's events; ``module``/``function`` the events of those
        functions (calls, returns, exceptions, spawns); ``kind`` one kind or several.

        ``text`` keeps events whose payload, printed as Elixir prints it in full,
        contains the text. Searching works in two passes. SQL first keeps the events
        whose raw ETF bytes hold every run of three or more ASCII letters of the text
        (``search_tokens``: escapes such as ``\\n`` and the words inspect adds by
        itself, such as ``PID`` or ``Function``, left out), either as bytes (atoms,
        binaries, charlists of bytes) or as the small integers of a charlist the VM
        encodes element by element. Each candidate is then decoded, printed and
        checked, chunk by chunk, until ``limit`` events match. A text with no such run
        (``42``, ``:ok``) is checked by printing every event the other filters keep.
        """
        where = self.event_filter(pid, module, function, kind, since, until)
        sort = direction(order)
        if text is None:
            rows = self.event_rows(where, sort, limit)
            return [self.event_of_row(row) for row in rows]
        for token in search_tokens(text):
            where.add("(contains(payload::VARCHAR, ?) OR contains(payload::VARCHAR, ?))",
                      token, _as_small_integers(token))
        return self._search(where, sort, text, limit)

    @reads
    def event(self, seq: int) -> Event:
        """The event numbered ``seq``."""
        where = Where()
        where.add("seq = ?", seq)
        rows = self.event_rows(where, "ASC", 1)
        if not rows:
            raise QueryError(f"there is no event {seq} in {self.path}")
        return self.event_of_row(rows[0])

    def event_filter(self, pid: str | int | None, module: str | None, function: str | None,
                      kind: str | Iterable[str] | None, since: TimeSpec | None,
                      until: TimeSpec | None) -> Where:
        where = Where()
        where.within("pid_id", self.pid_ids(pid) if pid is not None else None)
        where.within("mfa_id", self.mfa_ids(module, function))
        where.within("kind", kind_codes(kind) if kind is not None else None)
        self.time_range(where, "ts + wall_offset", since, until, raw="ts")
        return where

    def time_range(self, where: Where, column: str, since: TimeSpec | None,
                    until: TimeSpec | None, raw: str | None = None) -> None:
        """``column`` (a wall-clock expression) within the window. With ``raw``, the
        node-clock column it is computed from, the same window is also put on ``raw``
        widened by the nodes' offsets: DuckDB skips row groups by a bare column's
        min/max, never by an expression's."""
        start = self.dims.start_wall_ns
        offsets = self.dims.offsets.values() or [0]
        if since is not None:
            low = wall_ns(since, start)
            where.add(f"{column} >= ?", low)
            if raw is not None:
                where.add(f"{raw} >= ?", low - max(offsets))
        if until is not None:
            high = wall_ns(until, start)
            where.add(f"{column} < ?", high)
            if raw is not None:
                where.add(f"{raw} < ?", high - min(offsets))

    def event_rows(self, where: Where, direction: str, limit: int | None,
                    *extra: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        sql = event_sql(where, direction, *extra) + limit_sql(limit)
        return self.con.execute(sql, [*where.params, *params]).fetchall()

    def _search(self, where: Where, direction: str, text: str,
                limit: int | None) -> list[Event]:
        """Candidates streamed in chunks from one query, checked in Python."""
        found: list[Event] = []
        if limit == 0:
            return found
        nodes = self.dims.nodes
        with self.con.cursor() as cur:
            cur.execute(event_sql(where, direction), where.params)
            while rows := cur.fetchmany(sql.SEARCH_CHUNK):
                for row in rows:
                    printed = payload_text(row[12], nodes.get(row[1], ""))
                    if text in printed:
                        event = self.event_of_row(row)
                        event.__dict__["text"] = printed  # the cached_property's slot
                        found.append(event)
                        if len(found) == limit:
                            return found
        return found

    def event_of_row(self, row: tuple[Any, ...]) -> Event:
        dims = self.dims
        return event_from_row(row, node=dims.nodes.get(row[1], ""), pids=dims.pids,
                              names=dims.names, functions=dims.functions,
                              start_wall_ns=dims.start_wall_ns)

    # --- names --------------------------------------------------------------------------

    def pid_ids(self, spec: str | int) -> list[int]:
        """The recorded processes ``spec`` names (a pid printed as ``#PID<0.5.0>`` may be
        on any node of a multi-node recording)."""
        dims = self.dims
        if isinstance(spec, int) and not isinstance(spec, bool):
            if spec not in dims.pids:
                raise QueryError(f"there is no process with pid_id {spec} in {self.path}")
            return [spec]
        text = str(spec).strip()
        pid = re.fullmatch(r"(?:#PID)?<([^<>]+)>", text)
        if pid:
            wanted = f"#PID<{pid.group(1)}>"
            ids = [pid_id for pid_id, (shown, _) in dims.pids.items() if shown == wanted]
            what = wanted
        else:
            candidates = {text, _display(text)}
            ids = [pid_id for pid_id, names in dims.names.items()
                   if candidates.intersection(names)]
            what = f"process named {text}"
        if not ids:
            raise QueryError(f"there is no {what} in {self.path}")
        return ids

    def mfa_ids(self, module: str | None, function: str | None) -> list[int] | None:
        if module is None and function is None:
            return None
        wanted_module = _display(module) if module is not None else None
        name: str | None = None
        arity: int | None = None
        if function is not None:
            match = _FUNCTION_SPEC.match(function.strip())
            name = str(function_atom(match.group(1) if match else function))
            arity = int(match.group(2)) if match and match.group(2) else None
        ids = [mfa_id for mfa_id, (m, f, a) in self.dims.functions.items()
               if wanted_module in (None, m) and name in (None, f) and arity in (None, a)]
        if not ids:
            what = " ".join(x for x in (wanted_module, function) if x)
            raise QueryError(f"{what} does not appear in {self.path}")
        return ids

    # --- spans --------------------------------------------------------------------------

    @reads
    def spans(self, module: str | None = None, function: str | None = None,
              pid: str | int | None = None, min_duration: float | None = None,
              slowest: int | None = None, since: TimeSpec | None = None,
              until: TimeSpec | None = None, limit: int | None = 1000) -> list[Span]:
        """Traced calls, by start time; ``slowest=N``: the N longest, longest first.
        ``min_duration`` (seconds) keeps the calls that took at least that long;
        ``since``/``until`` filter on the start. A call still running when the recording
        stopped (``outcome`` open: a call that hangs) has no duration; it counts as
        lasting up to the recording's last event (``running_for``), and comes first
        among the slowest."""
        where = Where()
        where.within("s.pid_id", self.pid_ids(pid) if pid is not None else None)
        where.within("s.mfa_id", self.mfa_ids(module, function))
        if min_duration is not None:
            where.add(f"{self.lasted_sql()} >= ?", round(min_duration * 1e9))
        self.time_range(where, SPAN_START, since, until, raw="s.start_ts")
        if slowest is None:
            return self.spans_where(where, f"{SPAN_START}, s.span_id", limit)
        return self.spans_where(where, f"s.outcome = 'open' DESC, {self.lasted_sql()} DESC "
                                "NULLS LAST, s.span_id",
                                slowest if limit is None else min(slowest, limit))

    def lasted_sql(self) -> str:
        """SQL: a span's duration, or for one still open, its time up to the end of its
        node's recording."""
        ends = " ".join(f"WHEN {node_id} THEN {int(ts)}"
                        for node_id, ts in self.dims.last_ts.items() if ts is not None)
        running = f"(CASE s.node_id {ends} END) - s.start_ts" if ends else "NULL"
        return f"coalesce(s.duration_ns, {running})"

    @reads
    def span(self, span_id: int) -> Span:
        """The span whose call event is ``span_id``."""
        found = self.span_or_none(span_id)
        if found is None:
            raise QueryError(f"there is no span {span_id} in {self.path}")
        return found

    def stack(self, event: Event, max_frames: int = 1000) -> tuple[Span, ...]:
        """The traced calls open on the event's process at that moment, innermost
        first: the call the event happened in (for a return or exception, the call it
        ended), its caller, and so on out."""
        frames: list[Span] = []
        span_id = event.span_id
        while span_id is not None and len(frames) < max_frames:
            span = self.span_or_none(span_id)
            if span is None:
                break
            frames.append(span)
            span_id = span.parent_span_id
        return tuple(frames)

    def span_or_none(self, span_id: int) -> Span | None:
        where = Where()
        where.add("s.span_id = ?", span_id)
        found = self.spans_where(where, "s.span_id", 1)
        return found[0] if found else None

    def spans_where(self, where: Where, order: str, limit: int | None) -> list[Span]:
        sql = (f"SELECT {SPAN_COLUMNS} FROM spans s LEFT JOIN nodes n USING (node_id) "
               f"{where.sql()} ORDER BY {order}{limit_sql(limit)}")
        rows = self.con.execute(sql, where.params).fetchall()
        payloads = self._payloads([row[0] for row in rows] + [row[12] for row in rows])
        return [self._span(row, payloads) for row in rows]

    def _span(self, row: tuple[Any, ...], payloads: dict[int, bytes]) -> Span:
        (span_id, node_id, pid_id, mfa_id, depth, parent, start_ts, end_ts, duration_ns,
         outcome, correlation_id, trigger, end_seq) = row
        dims = self.dims
        module, function, arity = dims.functions[mfa_id]
        return Span(
            span_id=span_id, node=dims.nodes.get(node_id, ""), pid=dims.pids[pid_id][0],
            pid_id=pid_id, pid_name=dims.name(pid_id), module=module, function=function,
            arity=arity, depth=depth, parent_span_id=parent, start=dims.at(start_ts, node_id),
            end=dims.time(end_ts, node_id),
            duration=None if duration_ns is None else duration_ns / 1e9, outcome=outcome,
            running_for=(max(0, dims.last_ts.get(node_id, start_ts) - start_ts) / 1e9
                         if outcome == "open" else None),
            correlation_id=correlation_id, trigger_message_id=trigger,
            args_payload=payloads.get(span_id, b""),
            result_payload=payloads.get(end_seq) if end_seq is not None else None)

    def _payloads(self, seqs: Iterable[int | None]) -> dict[int, bytes]:
        wanted = sorted({seq for seq in seqs if seq is not None})
        if not wanted:
            return {}
        if len(wanted) > _JOIN_PAYLOADS:
            # Many: one hash join over the events beats planning a huge literal list.
            rows = self.con.execute(
                "SELECT e.seq, e.payload FROM events e JOIN "
                "(SELECT unnest(?::BIGINT[]) AS seq) w USING (seq)", [wanted])
            return {seq: bytes(payload) for seq, payload in rows.fetchall()}
        # One placeholder per seq: a literal IN list can use the index on seq that
        # finalize builds; IN (SELECT unnest(...)) reads every payload.
        marks = ", ".join("?" * len(wanted))
        rows = self.con.execute(
            f"SELECT seq, payload FROM events WHERE seq IN ({marks})", wanted)
        return {seq: bytes(payload) for seq, payload in rows.fetchall()}

    # --- messages -----------------------------------------------------------------------

    @reads
    def message_flow(self, a: str | int, b: str | int | None = None,
                     since: TimeSpec | None = None, until: TimeSpec | None = None,
                     limit: int | None = 1000) -> list[Message]:
        """Messages between processes ``a`` and ``b``, both ways, or every message to or
        from ``a``; by the time they were sent (or received, if the send was not
        recorded)."""
        first = self.pid_ids(a)
        where = Where()
        if b is None:
            where.add("(m.sender_pid_id IN (SELECT unnest(?::BIGINT[])) OR "
                      "m.receiver_pid_id IN (SELECT unnest(?::BIGINT[])))", first, first)
        else:
            second = self.pid_ids(b)
            pair = ("(m.sender_pid_id IN (SELECT unnest(?::BIGINT[])) AND "
                    "m.receiver_pid_id IN (SELECT unnest(?::BIGINT[])))")
            where.add(f"({pair} OR {pair})", first, second, second, first)
        self.time_range(where, MESSAGE_TIME, since, until)
        return self._messages(where, limit)

    def message_by_id(self, message_id: int) -> Message | None:
        where = Where()
        where.add("m.message_id = ?", message_id)
        found = self._messages(where, 1)
        return found[0] if found else None

    def _messages(self, where: Where, limit: int | None) -> list[Message]:
        sql = (f"SELECT {MESSAGE_COLUMNS} FROM messages m LEFT JOIN nodes n USING (node_id) "
               f"{where.sql()} ORDER BY {MESSAGE_TIME}, m.message_id{limit_sql(limit)}")
        rows = self.con.execute(sql, where.params).fetchall()
        payloads = self._payloads(row[2] if row[2] is not None else row[3] for row in rows)
        dims = self.dims
        found = []
        for (message_id, node_id, send_seq, receive_seq, sender, receiver, target, sent_ts,
             received_ts, handled_ts, queue_ns, to_dead, send_span, handler_span) in rows:
            receiver_node = dims.node_of(receiver) or node_id
            found.append(Message(
                message_id=message_id, node=dims.nodes.get(node_id, ""),
                sender=dims.pid(sender), sender_name=dims.name(sender),
                receiver=dims.pid(receiver), receiver_name=dims.name(receiver),
                target=target, sent=dims.time(sent_ts, dims.node_of(sender) or node_id),
                received=dims.time(received_ts, receiver_node),
                handled=dims.time(handled_ts, receiver_node),
                queue_time=None if queue_ns is None else queue_ns / 1e9,
                to_dead=bool(to_dead), send_seq=send_seq, receive_seq=receive_seq,
                send_span_id=send_span, handler_span_id=handler_span,
                payload=payloads.get(send_seq if send_seq is not None else receive_seq,
                                     b"")))
        return found

    # --- processes ----------------------------------------------------------------------

    @reads
    def processes(self) -> list[Process]:
        """Every process the recording saw, in the order it first appeared."""
        rows = self.con.execute(
            "SELECT pid_id, node_id, parent_pid_id, initial_call, names, first_ts, last_ts, "
            "spawned_ts, exit_ts, exit_reason, events FROM processes "
            "ORDER BY first_ts NULLS LAST, pid_id").fetchall()
        dims = self.dims
        return [Process(
            pid=dims.pids[pid_id][0], pid_id=pid_id, node=dims.nodes.get(node_id, ""),
            names=tuple(names or ()), parent=dims.pid(parent), initial_call=initial_call,
            first_seen=dims.time(first_ts, node_id), last_seen=dims.time(last_ts, node_id),
            spawned=dims.time(spawned_ts, node_id), exited=dims.time(exit_ts, node_id),
            events=events, exit_payload=None if reason is None else bytes(reason))
            for (pid_id, node_id, parent, initial_call, names, first_ts, last_ts, spawned_ts,
                 exit_ts, reason, events) in rows]

    # --- causes -------------------------------------------------------------------------

    @reads
    def causes(self, event_or_seq: Event | int, max_steps: int = 50) -> list[CauseStep]:
        """What led to an event, nearest first: the span it ran in, the outermost
        traced call around that, the message that triggered the call, the send of that
        message, the span that sent it, and so on back. A process's first doings lead
        to its spawn; events outside any traced call lead to the last message their
        process received before them."""
        event = event_or_seq if isinstance(event_or_seq, Event) else self.event(event_or_seq)
        steps: list[CauseStep] = []
        seen = {event.seq}
        while len(steps) < max_steps:
            step = self._cause_of(event)
            if step is None or step.event.seq in seen:
                break
            steps.append(step)
            seen.add(step.event.seq)
            event = step.event
        return steps

    def _cause_of(self, event: Event) -> CauseStep | None:
        if event.kind == "receive":
            return self._sender(event)
        if event.kind == "exit":
            fatal = self.fatal(event)
            if fatal is not None:
                return fatal
        if event.kind == "call":
            span = self.span_or_none(event.seq)
            step = self._span_cause(span) if span is not None else None
            return step or self.last_receive_before(event)
        if event.span_id is not None:
            call = self.event(event.span_id)
            return CauseStep(f"in span {call.mfa}", call)
        return self.last_receive_before(event)

    def _sender(self, receive: Event) -> CauseStep | None:
        message = None if receive.message_id is None else self.message_by_id(receive.message_id)
        if message is None or message.send_seq is None or message.send_seq == receive.seq:
            return None
        send = self.event(message.send_seq)
        return CauseStep(f"sent by {self._where(send)}", send)

    def _span_cause(self, span: Span) -> CauseStep | None:
        """For a nested call its outermost traced call; for an outermost one the
        message that triggered it."""
        if span.depth > 1:
            outer = span
            while outer.depth > 1 and outer.parent_span_id is not None:
                outer = self.span(outer.parent_span_id)
            if outer.span_id != span.span_id:
                return CauseStep(f"inside {outer.mfa}, the outermost traced call on "
                                 f"{self.dims.label(outer.pid_id)}",
                                 self.event(outer.span_id))
        trigger = span.trigger_message_id
        message = None if trigger is None else self.message_by_id(trigger)
        if message is None:
            return None
        text = shorten(message.text)
        if message.receive_seq is not None:
            receive = self.event(message.receive_seq)
            return CauseStep(f"triggered by message {text} received by "
                             f"{self.dims.label(receive.pid_id)}", receive)
        if message.send_seq is not None:
            send = self.event(message.send_seq)
            return CauseStep(f"triggered by message {text} sent by {self._where(send)}", send)
        return None

    def fatal(self, exit_event: Event) -> CauseStep | None:
        """What the process was doing when it died: a call the exit left open, or an
        exception that was the last thing its traced calls did."""
        rows = self.con.execute(
            "SELECT span_id FROM spans WHERE end_seq = ? AND outcome = 'exit' "
            "ORDER BY depth DESC LIMIT 1", [exit_event.seq]).fetchall()
        if rows:
            call = self.event(rows[0][0])
            return CauseStep(f"while in {call.mfa}, which never returned", call)
        # An exception that escaped the outermost traced call is what the process
        # could not handle, even if cleanup code (terminate/2) was traced after it.
        rows = self.con.execute(
            "SELECT end_seq FROM spans WHERE pid_id = ? AND depth = 1 "
            "AND outcome = 'exception' AND end_seq < ? ORDER BY end_seq DESC LIMIT 1",
            [exit_event.pid_id, exit_event.seq]).fetchall()
        if rows:
            raised = self.event(rows[0][0])
            return CauseStep(f"after {raised.mfa} raised {shorten(raised.text)}", raised)
        return None

    def last_receive_before(self, event: Event) -> CauseStep | None:
        """The last message the event's process received before it, or else the
        process's spawn."""
        rows = self.event_rows(
            Where(), "DESC", 1, "pid_id = ?", "kind = ?", "(hlc, seq) < (?, ?)",
            params=(event.pid_id, KIND_CODES["receive"], event.hlc, event.seq))
        if rows:
            receive = self.event_of_row(rows[0])
            return CauseStep(f"after receiving message {shorten(receive.text)}", receive)
        rows = self.event_rows(Where(), "ASC", 1, "other_pid_id = ?", "kind = ?",
                                params=(event.pid_id, KIND_CODES["spawn"]))
        if rows:
            spawn = self.event_of_row(rows[0])
            return CauseStep(f"{self.dims.label(event.pid_id)} spawned by "
                             f"{self._where(spawn)}", spawn)
        return None

    def _where(self, event: Event) -> str:
        """``#PID<0.5.0> (Bank.Client) in span Bank.Client.run/1``."""
        who = self.dims.label(event.pid_id)
        if event.span_id is None:
            return who
        span = self.span_or_none(event.span_id)
        return f"{who} in span {span.mfa}" if span else who

    # --- waits --------------------------------------------------------------------------

    @reads
    def messages_recorded(self, pid_id: int) -> bool:
        """Whether the recording holds any message the process sent or received: when
        not, its messages were not traced (an absence there says nothing)."""
        return self.con.execute(
            "SELECT 1 FROM events WHERE pid_id = ? AND kind IN (4, 5, 6) LIMIT 1",
            [pid_id]).fetchone() is not None

    def waits(self, pid: str | int | None = None, *, limit: int | None = 1000) -> list[Wait]:
        """Calls to other processes made from traced code (``recording.waits``)."""
        return _waits.waits(self, pid, limit=limit)

    # --- summary ------------------------------------------------------------------------

    @reads
    def summary(self, top: int = 5) -> dict[str, Any]:
        """What the recording holds, in numbers and the ``top`` most notable items."""
        con, dims, one = self.con, self.dims, self.scalar
        end = one("SELECT max(coalesce(n.ended_ts, e.last) + n.time_offset_ns) FROM nodes n "
                  "LEFT JOIN (SELECT node_id, max(ts) AS last FROM events GROUP BY node_id) e "
                  "USING (node_id)")
        busiest = con.execute(
            "SELECT mfa_id, count(*) AS calls FROM events WHERE kind = ? "
            "GROUP BY mfa_id ORDER BY calls DESC, mfa_id LIMIT ?",
            [KIND_CODES["call"], top]).fetchall()
        losses = con.execute("SELECT source, sum(events), sum(batches) FROM losses "
                             "GROUP BY source ORDER BY source").fetchall()
        trips = con.execute("SELECT wall_ns, detail FROM session_events "
                            "WHERE what = 'breaker_trip' ORDER BY wall_ns").fetchall()
        meta = self.meta
        return {
            "path": str(self.path),
            "nodes": [dims.nodes[key] for key in sorted(dims.nodes)],
            "events": one("SELECT count(*) FROM events"),
            "duration": 0.0 if end is None else max(0.0, (end - dims.start_wall_ns) / 1e9),
            "processes": one("SELECT count(*) FROM processes"),
            "spans": one("SELECT count(*) FROM spans"),
            "messages": one("SELECT count(*) FROM messages"),
            "busiest_functions": [{"mfa": mfa_text(*dims.functions[mfa_id]), "calls": calls}
                                  for mfa_id, calls in busiest],
            "slowest_spans": [{"span_id": span.span_id, "mfa": span.mfa, "pid": span.pid,
                               "pid_name": span.pid_name, "start": span.start,
                               "duration": span.duration, "outcome": span.outcome}
                              for span in self.spans(slowest=top)],
            "crashes": [{"seq": crash.seq, "pid": crash.pid, "pid_name": crash.pid_name,
                         "time": crash.time, "reason": crash.text}
                        for crash in self.crashes()],
            "losses": {source: {"events": events, "batches": batches}
                       for source, events, batches in losses},
            "breaker_trips": [{"time": seconds(wall, dims.start_wall_ns), "detail": detail}
                              for wall, detail in trips],
            "meta": {key: meta.get(key) for key in ("traces", "limits", "ring", "drops",
                                                    "agent_stats", "recorder_version")},
            "recovered": self.recovered,
        }

    # --- time travel --------------------------------------------------------------------

    @functools.cached_property
    def _time_travel(self) -> TimeTravel:
        return TimeTravel(self)

    @reads
    def state_history(self, pid: str | int, limit: int | None = None) -> list[StateTransition]:
        """Every recorded state transition of a process (a pid, ``<0.5.0>``, or a
        registered name: every process that held the name, in time order), ending
        with its exit if it ended while recorded."""
        return self._time_travel.history(pid, limit)

    @reads
    def state_at(self, pid: str | int, t: TimeSpec) -> Any:
        """The exact state of a process at ``t`` (seconds from the start, ``"2.5s"``,
        an ISO time or a datetime): the state after its last transition at or before
        ``t``. ``QueryError`` if none was recorded by then, or it cannot be known."""
        return self._time_travel.state_at(pid, t)

    @reads
    def state_transition_at(self, pid: str | int, t: TimeSpec) -> StateTransition:
        """The transition whose state a process had at ``t``."""
        return self._time_travel.transition_at(pid, t)

    @reads
    def replay_to(self, pid: str | int, t: TimeSpec) -> Replay:
        """The state at ``t``, the transition that made it, and its causal chain back
        through messages and spans to the origin."""
        return self._time_travel.replay_to(pid, t)

    @reads
    def diff(self, pid: str | int, t1: TimeSpec, t2: TimeSpec) -> StateDiff:
        """What changed in a process's state from ``t1`` to ``t2``."""
        return self._time_travel.diff(pid, t1, t2)

    @reads
    def field_history(self, pid: str | int, path: Sequence[Any]) -> list[FieldChange]:
        """Every change of one field of a process's state (``path`` is a sequence of
        keys, e.g. ``[Atom("accounts"), b"alice", Atom("balance")]``; see
        ``parse_field_path`` for the text form), each with the transition and
        message that made it."""
        return self._time_travel.field_history(pid, path)

    def cached(self, key: str, compute: Callable[[], _T]) -> _T:
        """``compute()``, once per open recording: for analyses that several detectors
        and views read (a finished recording does not change while it is open)."""
        memo: dict[str, Any] = self.__dict__.setdefault("_memo", {})
        if key not in memo:
            memo[key] = compute()
        return cast(_T, memo[key])

    def scalar(self, sql: str) -> Any:
        row = self.con.execute(sql).fetchone()
        return None if row is None else row[0]

    def crashes(self) -> list[Event]:
        """Exit events whose reason is not normal, shutdown or ``{:shutdown, _}``."""
        where = Where()
        where.add("kind = ?", KIND_CODES["exit"])
        # The common clean exits skip decoding (as the VM encodes them since OTP 26).
        where.add("payload NOT IN (?, ?)", encode(_NORMAL), encode(_SHUTDOWN))
        return [event for event in map(self.event_of_row, self.event_rows(where, "ASC", None))
                if not clean_exit(event.payload)]



def search_tokens(text: str) -> list[str]:
    """The letter runs of ``text`` that the raw ETF of any term whose printed form
    contains ``text`` contains too."""
    # Escapes print letters the data does not hold.
    text = _ESCAPE.sub(" ", _ESCAPE_TAIL.sub("", text, count=1))
    tokens: list[str] = []
    for run in _LETTER_RUN.findall(text):
        if run not in tokens and not any(run in word for word in _DECORATIONS):
            tokens.append(run)
    return tokens


def _as_small_integers(token: str) -> str:
    """The ETF of ``token``'s letters as elements of a list: each is SMALL_INTEGER_EXT
    (tag 97, which is ``a``) and the letter's byte."""
    return "".join(f"a{letter}" for letter in token)


def clean_exit(payload: bytes) -> bool:
    """Whether an exit reason is normal, shutdown or ``{:shutdown, _}``."""
    try:
        reason = payload_value(payload)
    except ETFDecodeError:
        return False
    if isinstance(reason, tuple) and len(reason) == 2:
        return bool(reason[0] == _SHUTDOWN)
    return reason in (_NORMAL, _SHUTDOWN)


def _display(module: str) -> str:
    """A module or registered name as Elixir writes it: ``Bank.Account``, ``:logger``."""
    return module_display(str(module_atom(module)))

