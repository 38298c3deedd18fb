"""``traceback``: the calls and messages that led to an event, across processes.

On the event's process: the traced call it happened in (for a return or exception,
the call that ended) and every call around it, innermost first. Then the message that
started the outermost of those calls (the span's trigger), whose send is the next
link's event, on the sender's process, and so on until a process where no message
started the calls: the origin. Outside any traced call the step back is the one
``Recording.causes`` takes: a receive leads to its send, anything else to the last
message its process received before it (or, if none, to its spawn: the origin).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from elixirscope.analysis.results import Traceback, TracebackLink
from elixirscope.elixir_format import inspect
from elixirscope.errors import ETFDecodeError, QueryError
from elixirscope.etf import Atom, Pid
from elixirscope.recording.results import Event, Message, Span, payload_value, shorten

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

MAX_FRAMES = 1000
EXIT = Atom("exit")


def traceback(rec: RecordingQueries, event: Event | int, max_links: int = 50) -> Traceback:
    """The traceback of ``event`` (an ``Event`` or its seq), at most ``max_links``
    processes long."""
    current = event if isinstance(event, Event) else rec.event(event)
    links: list[TracebackLink] = []
    seen = {current.seq}
    while True:
        if current.kind == "exit" and len(links) < max_links:
            cause, why = _exit_cause(rec, current)
            if cause is not None and cause.seq not in seen:
                links.append(TracebackLink(current, (), None, why))
                seen.add(cause.seq)
                current = cause
                continue
        stack = rec.stack(current, MAX_FRAMES)
        if current.kind == "exception" and len(links) < max_links:
            cause, why = _callee_exit(rec, current, stack)
            if cause is not None and cause.seq not in seen:
                links.append(TracebackLink(current, stack, None, why))
                seen.add(cause.seq)
                current = cause
                continue
        message, origin = _trigger(rec, current, stack)
        links.append(TracebackLink(current, stack, message))
        if message is None:
            break
        if message.send_seq is None:
            origin = (f"message {_short(message.text)} to {_who(rec, current.pid_id)} "
                      "came from a process whose sends were not recorded")
            break
        if message.send_seq in seen or len(links) >= max_links:
            origin = f"stopped after {len(links)} processes"
            break
        seen.add(message.send_seq)
        current = rec.event(message.send_seq)
    return Traceback(tuple(links), origin)


def _exit_cause(rec: RecordingQueries, exit_event: Event) -> tuple[Event | None, str]:
    """Why a process exited: the exception raised in it last before its exit, or else
    the exit, just before, of a process linked to it with the same reason (an exit
    signal it did not trap). The last message it received says nothing of that."""
    exception = rec.con.execute(
        "SELECT seq FROM events WHERE pid_id = ? AND kind = 3 AND seq < ? "
        "ORDER BY seq DESC LIMIT 1", [exit_event.pid_id, exit_event.seq]).fetchone()
    if exception is not None:
        raised = _innermost(rec, rec.event(exception[0]))
        where = f"{raised.mfa} " if raised.mfa else ""
        return raised, f"exited after {where}raised {_short(raised.text)}"
    callee, why = _callee_exit(rec, exit_event, ())
    if callee is not None:
        return callee, why
    linked = rec.con.execute(
        "SELECT e.seq FROM events e JOIN links l ON l.other_pid_id = e.pid_id "
        "WHERE l.pid_id = ? AND e.kind = 9 AND e.seq < ? AND e.payload = ? "
        "ORDER BY e.seq DESC LIMIT 1",
        [exit_event.pid_id, exit_event.seq, exit_event.payload]).fetchone()
    if linked is None:
        return None, ""
    other = rec.event(linked[0])
    return other, (f"died because linked {_who(rec, other.pid_id)} exited with "
                   f"{_short(other.text)}")


def _innermost(rec: RecordingQueries, raised: Event) -> Event:
    """The exception where ``raised`` began: the same exception leaves each traced
    call it passes through, innermost first."""
    while raised.span_id is not None:
        inner = rec.con.execute(
            "SELECT e.seq FROM events e JOIN spans s ON s.span_id = e.span_id "
            "WHERE e.pid_id = ? AND e.kind = 3 AND e.seq < ? AND s.parent_span_id = ? "
            "AND e.payload = ? ORDER BY e.seq DESC LIMIT 1",
            [raised.pid_id, raised.seq, raised.span_id, raised.payload]).fetchone()
        if inner is None:
            return raised
        raised = rec.event(inner[0])
    return raised


# What a call to another process exits with when the callee dies during it:
# {Reason, {Module, Function, [Target | _]}} (GenServer.call, gen_server:call, ...).
_CALLERS = frozenset({"gen", "gen_server", "Elixir.GenServer", "gen_statem", "gen_event",
                      "gen_server2", "p1_server", "Elixir.Task", "supervisor"})


def _callee_exit(rec: RecordingQueries, event: Event,
                 stack: tuple[Span, ...]) -> tuple[Event | None, str]:
    """For an exit, or an exception of class exit, that a call to another process
    raised because the callee died (the caller was monitoring it, not linked): the
    callee's exit with that reason, just before."""
    try:
        value = event.value
    except ETFDecodeError:
        return None, ""
    if event.kind == "exception":
        if not (isinstance(value, tuple) and len(value) == 2 and value[0] == EXIT):
            return None, ""
        value = value[1]
    target: Any = None
    reason: Any = value
    if (isinstance(value, tuple) and len(value) == 2 and isinstance(value[1], tuple)
            and len(value[1]) == 3 and str(value[1][0]) in _CALLERS
            and isinstance(value[1][2], list) and value[1][2]):
        reason, target = value[0], value[1][2][0]
    elif stack and stack[0].mfa == ":gen.call/4":
        args = payload_value(stack[0].args_payload) if stack[0].args_payload else []
        target = args[0] if isinstance(args, list) and args else None
    if target is None:
        return None, ""
    try:
        ids = rec.pid_ids(inspect(target) if isinstance(target, Pid) else str(target))
    except QueryError:
        return None, ""
    marks = ",".join("?" * len(ids))
    for (seq,) in rec.con.execute(
            f"SELECT seq FROM events WHERE kind = 9 AND pid_id IN ({marks}) AND seq < ? "
            "ORDER BY seq DESC LIMIT 5", [*ids, event.seq]).fetchall():
        died = rec.event(seq)
        try:
            same = died.value == reason
        except ETFDecodeError:
            same = False
        if same:
            return died, (f"its call to {_who(rec, died.pid_id)} failed because that "
                          f"process exited with {_short(died.text)}")
    return None, ""


def _trigger(rec: RecordingQueries, event: Event,
             stack: tuple[Span, ...]) -> tuple[Message | None, str]:
    """The message that started the event's outermost traced call, and what to say if
    there is none."""
    who = _who(rec, event.pid_id)
    if stack:
        outer = stack[-1]
        if outer.trigger_message_id is not None:
            return rec.message_by_id(outer.trigger_message_id), ""
        if not rec.messages_recorded(event.pid_id):
            return None, (f"{outer.call} on {who}; its messages were not recorded (record "
                          f"with --trace-process {event.pid} --include messages to see what "
                          "started it)")
        if outer.function in CALLBACKS:
            return None, (f"{outer.call} on {who}, serving a message queued before the "
                          "recording (its request is in the arguments)")
        return None, f"{outer.call} on {who}, with no message received before it"
    if event.kind == "receive" and event.message_id is not None:
        return rec.message_by_id(event.message_id), ""
    step = rec.last_receive_before(event)
    if step is not None and step.event.kind == "receive" and step.event.message_id:
        return rec.message_by_id(step.event.message_id), ""
    if step is not None:
        return None, f"{who}, {step.relation}"
    if not rec.messages_recorded(event.pid_id):
        return None, (f"{who}, outside any traced call; its messages were not recorded "
                      f"(record with --trace-process {event.pid} --include messages)")
    return None, f"{who}, outside any traced call, with no message received before"


# Behaviour callbacks that serve one message each (see correlate's handlers).
CALLBACKS = ("handle_call", "handle_cast", "handle_info")


def _who(rec: RecordingQueries, pid_id: int) -> str:
    return rec.dims.label(pid_id)


def _short(text: str) -> str:
    return shorten(text)
