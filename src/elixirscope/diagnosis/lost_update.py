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
    old: Any
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


def _lost(rec: RecordingQueries, history: list[StateTransition]) -> list[Finding]:
    reads: dict[str, _Read] = {}  # per client, its last read
    writes: dict[tuple[Any, ...], list[_Write]] = {}  # per field path, in order
    found: list[Finding] = []
    for transition in history:
        if not transition.known:
            continue
        client = _client(rec, transition)
        if client is None:
            continue
        changes = transition.delta.changes
        if not changes:
            reply = _reply(rec, transition)
            if reply is not None:
                reads[client] = _Read(transition, reply)
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
            earlier.append(_Write(transition, client, change.old, change.new))
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


def _client(rec: RecordingQueries, transition: StateTransition) -> str | None:
    """Who asked for the transition: the caller of a call, the sender of a message."""
    trigger = transition.trigger
    if trigger is None:
        return None
    try:
        value = payload_value(trigger.payload)
    except ETFDecodeError:
        return None
    if trigger.kind == "call" and isinstance(value, list) and len(value) >= 2:
        value = (_GEN_CALL, value[1], value[0])  # handle_call(Request, From, State)
    if isinstance(value, tuple) and len(value) == 3 and value[0] == _GEN_CALL:
        sender = value[1][0] if isinstance(value[1], tuple) and value[1] else None
        if isinstance(sender, Pid):
            return _label(rec, sender)
    if trigger.message_id is not None:
        message = rec.message_by_id(trigger.message_id)
        if message is not None and message.sender is not None:
            return message.sender_name or message.sender
    return None


def _label(rec: RecordingQueries, pid: Pid) -> str:
    shown = f"#PID<0.{pid.id}.{pid.serial}>"
    for pid_id, (text, _) in rec.dims.pids.items():
        if text == shown:
            return rec.dims.name(pid_id) or shown
    return shown


def _reply(rec: RecordingQueries, transition: StateTransition) -> Any:
    """What a call's callback replied (``{:reply, Reply, State}``), if recorded."""
    if transition.span_id is None:
        return None
    try:
        span = rec.span(transition.span_id)
        result = payload_value(span.result_payload) if span.result_payload else None
    except (QueryError, ETFDecodeError):
        return None
    if isinstance(result, tuple) and len(result) >= 3 and result[0] == _REPLY:
        return result[1]
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
