"""``next_event`` / ``prev_event``: stepping through a recording from an event.

* ``by="process"`` (step into): the next or previous event of the same process.
* ``by="span"`` (step over): the next or previous event at the same call level: from a
  call, its return (a whole traced call is one step); from an event inside a call, the
  next event directly in that call (a nested call counts as its call and its return),
  up to the call's own return.
* ``by="message"`` (follow the message): forward, a send leads to its receive and a
  receive to the call it started; backward, a receive leads to its send and a call
  that a message started to that message's receive. From any other event, the next or
  previous send or receive of the same process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elixirscope.errors import QueryError
from elixirscope.recording import sql
from elixirscope.recording.results import Event
from elixirscope.tracing.events import KIND_CODES

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

WAYS = ("process", "span", "message")
_MESSAGES = (KIND_CODES["send"], KIND_CODES["send_to_dead"], KIND_CODES["receive"])


def step(rec: RecordingQueries, event: Event | int, by: str = "process",
         forward: bool = True) -> Event | None:
    """The event one step from ``event`` (an ``Event`` or its seq), or ``None`` at the
    end of the way."""
    if by not in WAYS:
        raise QueryError(f"by must be one of {', '.join(WAYS)}, not {by!r}")
    here = event if isinstance(event, Event) else rec.event(event)
    if by == "message":
        jumped = _follow(rec, here, forward)
        if jumped is not None:
            return jumped
        kinds = ", ".join(map(str, _MESSAGES))
        return _neighbour(rec, here, forward, "pid_id = ?", f"kind IN ({kinds})",
                          params=[here.pid_id])
    if by == "process":
        return _neighbour(rec, here, forward, "pid_id = ?", params=[here.pid_id])
    # A call or return of its own span steps at its parent's level.
    own = (here.kind == "call" and here.span_id == here.seq) or (
        here.kind in ("return", "exception") and here.span_id is not None)
    level = here.parent_span_id if own else here.span_id
    own_sql = "((kind = 1 AND span_id = seq) OR (kind IN (2, 3) AND span_id IS NOT NULL))"
    if level is None:
        return _neighbour(rec, here, forward, "pid_id = ?",
                          f"(span_id IS NULL OR (parent_span_id IS NULL AND {own_sql}))",
                          params=[here.pid_id])
    return _neighbour(rec, here, forward, "pid_id = ?",
                      f"(span_id = ? OR (parent_span_id = ? AND {own_sql}))",
                      params=[here.pid_id, level, level])


def _neighbour(rec: RecordingQueries, here: Event, forward: bool, *clauses: str,
               params: list[object]) -> Event | None:
    sign, direction = (">", "ASC") if forward else ("<", "DESC")
    rows = rec.event_rows(sql.Where(), direction, 1, *clauses,
                           f"(hlc, seq) {sign} (?, ?)", params=[*params, here.hlc, here.seq])
    return rec.event_of_row(rows[0]) if rows else None


def _follow(rec: RecordingQueries, here: Event, forward: bool) -> Event | None:
    if forward and here.kind in ("send", "send_to_dead") and here.message_id is not None:
        message = rec.message_by_id(here.message_id)
        return None if message is None or message.receive_seq is None else \
            rec.event(message.receive_seq)
    if forward and here.kind == "receive" and here.message_id is not None:
        message = rec.message_by_id(here.message_id)
        return None if message is None or message.handler_span_id is None else \
            rec.event(message.handler_span_id)
    if not forward and here.kind == "receive" and here.message_id is not None:
        message = rec.message_by_id(here.message_id)
        if message is not None and message.send_seq not in (None, here.seq):
            return rec.event(message.send_seq)
    if not forward and here.kind == "call" and here.span_id == here.seq:
        span = rec.span_or_none(here.seq)
        message = None if span is None or span.trigger_message_id is None else \
            rec.message_by_id(span.trigger_message_id)
        if message is not None and message.receive_seq is not None:
            return rec.event(message.receive_seq)
    return None
