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

from typing import TYPE_CHECKING

from elixirscope.analysis.results import Traceback, TracebackLink
from elixirscope.recording import query
from elixirscope.recording.results import Event, Message, Span

if TYPE_CHECKING:
    from elixirscope.recording.query import Recording

MAX_FRAMES = 1000


def traceback(rec: Recording, event: Event | int, max_links: int = 50) -> Traceback:
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
        stack = _stack(rec, current)
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


def _exit_cause(rec: Recording, exit_event: Event) -> tuple[Event | None, str]:
    """Why a process exited: the exception raised in it last before its exit, or else
    the exit, just before, of a process linked to it with the same reason (an exit
    signal it did not trap). The last message it received says nothing of that."""
    exception = rec.con.execute(
        "SELECT seq FROM events WHERE pid_id = ? AND kind = 3 AND seq < ? "
        "ORDER BY seq DESC LIMIT 1", [exit_event.pid_id, exit_event.seq]).fetchone()
    if exception is not None:
        raised = rec.event(exception[0])
        where = f"{raised.mfa} " if raised.mfa else ""
        return raised, f"exited after {where}raised {_short(raised.text)}"
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


def _stack(rec: Recording, event: Event) -> tuple[Span, ...]:
    frames: list[Span] = []
    span_id = event.span_id
    while span_id is not None and len(frames) < MAX_FRAMES:
        span = rec._span_or_none(span_id)
        if span is None:
            break
        frames.append(span)
        span_id = span.parent_span_id
    return tuple(frames)


def _trigger(rec: Recording, event: Event,
             stack: tuple[Span, ...]) -> tuple[Message | None, str]:
    """The message that started the event's outermost traced call, and what to say if
    there is none."""
    who = _who(rec, event.pid_id)
    if stack:
        outer = stack[-1]
        if outer.trigger_message_id is not None:
            return rec._message(outer.trigger_message_id), ""
        if not rec.messages_recorded(event.pid_id):
            return None, (f"{outer.call} on {who}; its messages were not recorded (record "
                          f"with --trace-process {event.pid} --include messages to see what "
                          "started it)")
        if outer.function in CALLBACKS:
            return None, (f"{outer.call} on {who}, serving a message queued before the "
                          "recording (its request is in the arguments)")
        return None, f"{outer.call} on {who}, with no message received before it"
    if event.kind == "receive" and event.message_id is not None:
        return rec._message(event.message_id), ""
    step = rec._before(event)
    if step is not None and step.event.kind == "receive" and step.event.message_id:
        return rec._message(step.event.message_id), ""
    if step is not None:
        return None, f"{who}, {step.relation}"
    if not rec.messages_recorded(event.pid_id):
        return None, (f"{who}, outside any traced call; its messages were not recorded "
                      f"(record with --trace-process {event.pid} --include messages)")
    return None, f"{who}, outside any traced call, with no message received before"


# Behaviour callbacks that serve one message each (see correlate's handlers).
CALLBACKS = ("handle_call", "handle_cast", "handle_info")


def _who(rec: Recording, pid_id: int) -> str:
    return rec._dims.label(pid_id)


def _short(text: str) -> str:
    return query._short(text)
