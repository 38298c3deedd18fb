"""Waits: calls to another process made from traced code, as the recording holds them.

``GenServer.call``, ``:gen_statem.call`` and the calls of gen_server2 and p1_server
all go through ``:gen.call/4``, which the agent traces inside traced code, and so
``Task.await/2`` on a node that runs Elixir. Each such
span is a wait: who waited (the process, and the traced callback it waited in), on
whom (the first argument, as the caller named it), for what request, since when, and
how it ended: answered, timed out, the callee exited, or still waiting when the
recording stopped. This is the waits-for data a deadlock needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from elixirscope.elixir_format import inspect
from elixirscope.errors import QueryError
from elixirscope.etf import Atom
from elixirscope.recording.results import Span, payload_value_or_none
from elixirscope.recording.sql import Where

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

# The calls that wait for another process (as the recording names their modules).
WAITING_CALLS = ((":gen", "call", 4), ("Task", "await", 2))
EXIT = Atom("exit")
PID_KEY, MFA_KEY = Atom("pid"), Atom("mfa")
TIMEOUT = Atom("timeout")


@dataclass(frozen=True)
class Wait:
    """One call to another process. ``outcome`` is ``answered``, ``timed out``,
    ``callee exited``, ``raised``, ``caller exited`` or ``waiting`` (no end in the
    recording: ``duration`` is then the time up to the recording's last event)."""

    span: Span
    caller: Span | None
    callee: str
    request: str
    since: float
    duration: float | None
    outcome: str
    detail: str | None

    @property
    def pid(self) -> str:
        return self.span.pid

    def as_dict(self) -> dict[str, Any]:
        return {
            "span_id": self.span.span_id, "pid": self.span.pid, "pid_name": self.span.pid_name,
            "in": self.caller.mfa if self.caller else None,
            "in_span_id": self.caller.span_id if self.caller else None,
            "callee": self.callee, "request": self.request, "since": self.since,
            "duration": self.duration, "outcome": self.outcome, "detail": self.detail,
        }


def waits(rec: RecordingQueries, pid: str | int | None = None, *,
          limit: int | None = 1000) -> list[Wait]:
    """The waits of the recording (of one process with ``pid``), by start time."""
    spans: list[Span] = []
    for module, function, arity in WAITING_CALLS:
        try:
            spans += [s for s in rec.spans(module=module, function=function, pid=pid,
                                           limit=limit) if s.arity == arity]
        except QueryError:
            continue  # nothing called it in this recording
    spans.sort(key=lambda span: (span.start, span.span_id))
    if limit is not None:
        spans = spans[:limit]
    newest = rec.events(limit=1, order="desc")
    last = newest[0].time if newest else None
    parents = {s.parent_span_id for s in spans if s.parent_span_id is not None}
    where = Where()
    where.within("s.span_id", sorted(parents))
    callers = {span.span_id: span for span in rec.spans_where(where, "s.span_id", None)}
    return [_wait(s, callers.get(s.parent_span_id) if s.parent_span_id else None, last)
            for s in spans]


def _wait(span: Span, caller: Span | None, last: float | None) -> Wait:
    args = payload_value_or_none(span.args_payload)
    callee, request = ("?", "?")
    if isinstance(args, list) and len(args) == 4:
        callee, request = (inspect(args[0], local_node=span.node),
                           inspect(args[2], local_node=span.node))
    elif isinstance(args, list) and len(args) == 2 and isinstance(args[0], dict):
        task = args[0]  # Task.await(%Task{pid: ..., mfa: ...}, timeout)
        callee = inspect(task.get(PID_KEY), local_node=span.node)
        request = f"Task.await of {inspect(task.get(MFA_KEY), local_node=span.node)}"
    outcome, detail = _outcome(span)
    duration = span.duration
    if duration is None and span.outcome == "open" and isinstance(last, (int, float)):
        duration = max(0.0, float(last) - span.start)
    return Wait(span=span, caller=caller, callee=callee, request=request, since=span.start,
                duration=duration, outcome=outcome, detail=detail)


def _outcome(span: Span) -> tuple[str, str | None]:
    if span.outcome == "open":
        return "waiting", None
    if span.outcome == "exit":
        return "caller exited", span.result
    result = payload_value_or_none(span.result_payload) if span.result_payload else None
    if span.outcome == "return":
        reply = result[1] if isinstance(result, tuple) and len(result) == 2 else result
        return "answered", inspect(reply, local_node=span.node)
    # An exception: {exit, {timeout, _}} when no reply came in time, {exit, Reason}
    # when the callee died or was not there.
    if isinstance(result, tuple) and len(result) == 2 and result[0] == EXIT:
        reason = result[1]
        if reason == TIMEOUT or (isinstance(reason, tuple) and reason and reason[0] == TIMEOUT):
            return "timed out", None
        shown = reason[0] if isinstance(reason, tuple) and reason else reason
        return "callee exited", inspect(shown, local_node=span.node)
    return "raised", span.result
