"""Lost updates: a client reads a field of a server's state, another client writes that
field, and the first client then writes it from the value it had read: the other
write is lost (read-modify-write across two calls, with no check in between).

Read from the state history of the processes whose state was recorded: each
transition's trigger names the client (the ``From`` of a call, the sender of a
message), a transition that changed nothing is a read when its reply holds the
field's value, and a transition that changed the field is a write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from elixirscope.diagnosis.finding import Evidence, Finding
from elixirscope.elixir_format import inspect
from elixirscope.errors import ETFDecodeError, QueryError
from elixirscope.etf import Atom, Pid
from elixirscope.recording.results import payload_value, shorten
from elixirscope.recording.state_results import StateTransition

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

MAX_TRANSITIONS = 20_000
_GEN_CALL = Atom("$gen_call")
_REPLY = Atom("reply")


@dataclass(frozen=True)
class _Read:
    transition: StateTransition
    reply: Any


@dataclass(frozen=True)
class _Write:
    transition: StateTransition
    client: str
    new: Any


def detect(rec: RecordingQueries) -> list[Finding]:
    servers = [row[0] for row in rec.con.execute(
        "SELECT DISTINCT pid_id FROM events WHERE kind = 17").fetchall()]
    found: list[Finding] = []
    for pid_id in servers:
        try:
            history = rec.state_history(pid_id, limit=MAX_TRANSITIONS)
        except QueryError:
            continue
        found.extend(_lost(rec, history))
    return found


@dataclass(frozen=True)
class _Callback:
    """What one callback of the server was asked, by whom, and what it replied."""

    client: str | None
    reply: Any


def _callbacks(rec: RecordingQueries, pid_id: int) -> dict[int, _Callback]:
    """Per outermost callback span of the process: its client (the From of a call,
    else the sender of the message it served) and its reply, in one query."""
    found: dict[int, _Callback] = {}
    pids = {text: pid for pid, (text, _) in rec.dims.pids.items()}
    for span_id, args, result, sender in rec.con.execute(
            "SELECT s.span_id, e.payload, r.payload, m.sender_pid_id FROM spans s "
            "JOIN events e ON e.seq = s.span_id LEFT JOIN events r ON r.seq = s.end_seq "
            "LEFT JOIN messages m ON m.message_id = s.trigger_message_id "
            "WHERE s.pid_id = ? AND s.depth = 1", [pid_id]).fetchall():
        client = _from(rec, pids, _decoded(args))
        if client is None and sender is not None:
            client = rec.dims.name(sender) or rec.dims.pid(sender)
        reply = _decoded(result)
        found[span_id] = _Callback(client, reply[1] if isinstance(reply, tuple) and len(
            reply) >= 3 and reply[0] == _REPLY else None)
    return found


def _lost(rec: RecordingQueries, history: list[StateTransition]) -> list[Finding]:
    reads: dict[str, _Read] = {}  # per client, its last read
    writes: dict[tuple[Any, ...], list[_Write]] = {}  # per field path, in order
    found: list[Finding] = []
    callbacks = _callbacks(rec, history[0].pid_id) if history else {}
    if len({c.client for c in callbacks.values() if c.client is not None}) < 2:
        return found  # one client cannot lose another's update
    for transition in history:
        callback = callbacks.get(transition.span_id) if transition.span_id else None
        if not transition.known or callback is None or callback.client is None:
            continue
        client = callback.client
        changes = transition.delta.changes
        if not changes:
            if callback.reply is not None:
                reads[client] = _Read(transition, callback.reply)
            continue
        read = reads.get(client)
        for change in changes:
            path = tuple(change.path)
            if not path:
                continue
            earlier = writes.setdefault(path, [])
            if read is not None:
                between = [w for w in earlier if w.client != client
                           and w.transition.time >= read.transition.time]
                seen = _field(read.transition.state, path)
                if between and seen is not None and _holds(read.reply, seen):
                    found.append(_finding(transition, client, read, between[-1], path,
                                          change.new))
            earlier.append(_Write(transition, client, change.new))
    return found


def _finding(transition: StateTransition, client: str, read: _Read, other: _Write,
             path: tuple[Any, ...], new: Any) -> Finding:
    server = transition.pid_name or transition.pid
    field = ".".join(str(key) if isinstance(key, Atom) else inspect(key) for key in path)
    seen = _field(read.transition.state, path)
    title = (f"Lost update on {server}'s {field}: {client} read {field} = "
             f"{_text(seen)} at {read.transition.time:.3f} s, {other.client} then wrote "
             f"{_text(other.new)} at {other.transition.time:.3f} s, and {client} wrote "
             f"{_text(new)} at {transition.time:.3f} s from the value it had read: the "
             f"write of {_text(other.new)} was lost")
    return Finding(
        kind="lost_update", title=title, severity="error",
        start=read.transition.time, end=transition.time,
        processes=(server, client, other.client),
        evidence=Evidence(events=tuple(t.seq for t in (read.transition, other.transition,
                                                      transition)),
                          spans=tuple(t.span_id for t in (read.transition, other.transition,
                                                         transition) if t.span_id)),
        next_commands=(f"elixirscope history REC {server}",
                       f"elixirscope state REC {server} --at {other.transition.time:.3f}"),
        details=(f"read: {_trigger(read.transition)}",
                 f"other write: {_trigger(other.transition)}",
                 f"stale write: {_trigger(transition)}"),
        weight=transition.time - read.transition.time)


def _from(rec: RecordingQueries, pids: dict[str, int], args: Any) -> str | None:
    """The caller of a ``handle_call(Request, From, State)``: From's pid (its name when
    the recording knows one)."""
    if isinstance(args, list) and len(args) == 3 and isinstance(args[1], tuple) and args[1]:
        caller = args[1][0]
        if isinstance(caller, Pid):
            shown = f"#PID<0.{caller.id}.{caller.serial}>"
            pid_id = pids.get(shown)
            return (rec.dims.name(pid_id) if pid_id is not None else None) or shown
    return None


def _decoded(payload: bytes | None) -> Any:
    if payload is None:
        return None
    try:
        return payload_value(bytes(payload))
    except ETFDecodeError:
        return None


def _field(state: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        in_map = isinstance(state, dict) and key in state
        in_tuple = isinstance(state, tuple) and isinstance(key, int) and 0 <= key < len(state)
        if not (in_map or in_tuple):
            return None
        state = state[key]
    return state


def _holds(term: Any, value: Any, depth: int = 4) -> bool:
    """Whether ``value`` is ``term`` or one of its parts."""
    if term == value and type(term) is type(value):
        return True
    if depth == 0:
        return False
    if isinstance(term, (tuple, list)):
        return any(_holds(item, value, depth - 1) for item in term)
    if isinstance(term, dict):
        return any(_holds(item, value, depth - 1) for item in term.values())
    return False


def _text(value: Any) -> str:
    return shorten(inspect(value), 40)


def _trigger(transition: StateTransition) -> str:
    """``0.030 s {:set_balance, 120}``: the request of a call, else the message."""
    trigger = transition.trigger
    if trigger is None:
        return f"{transition.time:.3f} s {transition.callback}"
    try:
        value = payload_value(trigger.payload)
    except ETFDecodeError:
        value = None
    if isinstance(value, tuple) and len(value) == 3 and value[0] == _GEN_CALL:
        text = inspect(value[2])
    elif trigger.kind == "call" and isinstance(value, list) and value:
        text = inspect(value[0])
    else:
        text = trigger.text
    return f"{transition.time:.3f} s {shorten(text, 100)} ({transition.callback})"
