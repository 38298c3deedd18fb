"""What queries over a recording return: events, spans, messages, processes, causes.

Times are seconds from the start of the recording. Payloads stay raw ETF until asked
for: ``value`` decodes one, ``text`` prints it the way Elixir does (no element or
string limit, pids of the event's own node as ``#PID<0.x.y>``), and ``as_dict()``
gives a JSON-ready dict with the text in place of the bytes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from elixirscope.elixir_format import format_call, inspect
from elixirscope.errors import ETFDecodeError
from elixirscope.etf import decode
from elixirscope.recording.state_delta import StateChainError, parse_record
from elixirscope.recording.state_diff import MISSING, delta_changes
from elixirscope.tracing.events import KINDS, TRUNCATED


def payload_value(payload: bytes) -> Any:
    """The term a payload holds (``ETFDecodeError`` if its bytes are damaged)."""
    return decode(payload)


def payload_value_or_none(payload: bytes | None) -> Any:
    """The term a payload holds, or None for no payload or damaged bytes."""
    if not payload:
        return None
    try:
        return decode(payload)
    except ETFDecodeError:
        return None


def payload_text(payload: bytes, node: str | None) -> str:
    """The payload as Elixir prints it, in full, on one line."""
    try:
        value = decode(payload)
    except ETFDecodeError as exc:
        return f"#ElixirScope.Undecodable<{len(payload)} bytes: {exc}>"
    return inspect(value, limit=None, printable_limit=None, local_node=node)


def state_record_text(payload: bytes, node: str | None) -> str:
    """A state record as what it says about the state: whole, what changed (as
    ``history`` prints it, the earlier values shown as ``?``), unchanged, or unknown."""
    try:
        record = parse_record(payload)
        shown = {"key": "whole", "initial": "read at the start"}
        if record.whole:
            return (f"state #{record.number}, {shown[record.kind]}: "
                    f"{inspect(record.value, limit=None, local_node=node)}")
        if record.kind == "delta":
            changes = delta_changes(MISSING, record.value)
            return f"state #{record.number} changed: " + "; ".join(map(str, changes.changes))
        if record.kind == "same":
            return f"state #{record.number}: unchanged"
        if record.kind == "terminate":
            return f"state #{record.number}: terminate ({inspect(record.value)})"
        if record.kind == "too_large":
            return (f"state #{record.number}: too large to record ({record.value:,} bytes); "
                    "unknown until the next whole state")
        return f"state #{record.number}: unknown ({inspect(record.value)})"
    except (ETFDecodeError, StateChainError, TypeError):
        return payload_text(payload, node)


def shorten(text: str, width: int = 60) -> str:
    """``text`` cut to ``width`` characters, an ellipsis marking the cut."""
    return text if len(text) <= width else text[: width - 1] + "…"


def duration_text(seconds: float) -> str:
    """``31 µs``, ``1.134 ms``, ``2.500 s``."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.3f} ms"
    return f"{seconds:.3f} s"


def mfa_text(module: str | None, function: str | None, arity: int | None) -> str | None:
    """``Bank.Account.deposit/2`` from a module as Elixir writes it."""
    if module is None or function is None or arity is None:
        return None
    return f"{module}.{function}/{arity}"


def _as_dict(result: Any, texts: dict[str, str | None]) -> dict[str, Any]:
    """The result's fields, bytes fields left out, plus ``texts``."""
    out: dict[str, Any] = {}
    for item in dataclasses.fields(result):
        value = getattr(result, item.name)
        if not isinstance(value, bytes):
            out[item.name] = list(value) if isinstance(value, tuple) else value
    out.update(texts)
    return out


@dataclass(frozen=True)
class Event:
    """One recorded trace event.

    ``time`` is seconds from the start, ``ts`` the node's monotonic nanoseconds,
    ``wall_ns`` its wall clock (Unix ns), ``hlc`` the clock events are ordered by.
    ``other_pid`` is the receiver of a send, the child of a spawn, the parent of a
    spawned, the peer of a link; ``caller`` the calling function of a call (if traced
    with callers); ``target`` the registered name a send was addressed to.
    """

    seq: int
    node: str
    pid: str
    pid_id: int
    pid_name: str | None
    kind: str
    time: float
    ts: int
    wall_ns: int
    hlc: int
    module: str | None
    function: str | None
    arity: int | None
    other_pid: str | None
    caller: str | None
    target: str | None
    payload: bytes = field(repr=False)
    truncated: bool
    original_size: int
    span_id: int | None
    parent_span_id: int | None
    message_id: int | None
    correlation_id: int | None

    @property
    def mfa(self) -> str | None:
        return mfa_text(self.module, self.function, self.arity)

    @cached_property
    def value(self) -> Any:
        """The decoded payload: arguments of a call, the value of a return,
        ``{class, reason}`` of an exception, the message of a send or receive, the
        reason of an exit, the name of a register."""
        return payload_value(self.payload)

    @cached_property
    def text(self) -> str:
        if self.kind == "state":
            return state_record_text(self.payload, self.node)
        return payload_text(self.payload, self.node)

    def as_dict(self) -> dict[str, Any]:
        return _as_dict(self, {"mfa": self.mfa, "text": self.text})


# The columns event_from_row reads, in its order.
EVENT_COLUMNS = ("seq, node_id, pid_id, kind, flags, ts, wall_offset, hlc, mfa_id, "
                 "other_pid_id, caller_mfa_id, target, payload, original_size, span_id, "
                 "parent_span_id, message_id, correlation_id")


def event_from_row(row: Sequence[Any], *, node: str, pids: Mapping[int, tuple[str, int]],
                   names: Mapping[int, tuple[str, ...]],
                   functions: Mapping[int, tuple[str, str, int]],
                   start_wall_ns: int) -> Event:
    """An ``Event`` from a row of ``EVENT_COLUMNS``, with the recording's small tables
    (``node``: the name of the row's node)."""
    (seq, _, pid_id, kind, flags, ts, wall_offset, hlc, mfa_id, other_pid_id,
     caller_mfa_id, target, payload, original_size, span_id, parent_span_id,
     message_id, correlation_id) = row
    module, function, arity = functions.get(mfa_id, (None, None, None))
    caller = functions.get(caller_mfa_id)
    found_names = names.get(pid_id)
    return Event(
        seq=seq, node=node, pid=_pid_text(pids, pid_id), pid_id=pid_id,
        pid_name=found_names[0] if found_names else None,
        kind=KINDS.get(kind, f"kind{kind}"),
        time=(ts + wall_offset - start_wall_ns) / 1e9, ts=ts, wall_ns=ts + wall_offset,
        hlc=hlc, module=module, function=function, arity=arity,
        other_pid=None if other_pid_id is None else _pid_text(pids, other_pid_id),
        caller=mfa_text(*caller) if caller else None, target=target,
        payload=bytes(payload), truncated=bool(flags & TRUNCATED),
        original_size=original_size, span_id=span_id, parent_span_id=parent_span_id,
        message_id=message_id, correlation_id=correlation_id)


def _pid_text(pids: Mapping[int, tuple[str, int]], pid_id: int) -> str:
    # A live recording's pids table may lag its events by one flush.
    found = pids.get(pid_id)
    return found[0] if found else f"pid_id {pid_id}"


@dataclass(frozen=True)
class Span:
    """One traced call, from its call event to its return, exception or the end of
    its process. ``outcome`` is return, exception, exit or open (still running when the
    recording stopped: ``end`` and ``duration`` are then ``None``, and ``running_for``
    says how long it had been running by the recording's last event)."""

    span_id: int
    node: str
    pid: str
    pid_id: int
    pid_name: str | None
    module: str
    function: str
    arity: int
    depth: int
    parent_span_id: int | None
    start: float
    end: float | None
    duration: float | None
    outcome: str
    correlation_id: int | None
    trigger_message_id: int | None
    args_payload: bytes = field(repr=False)
    result_payload: bytes | None = field(repr=False)
    running_for: float | None = None  # open: seconds from its start to the recording's end

    @property
    def open(self) -> bool:
        """Still running when the recording stopped (a call that hangs)."""
        return self.outcome == "open"

    @property
    def mfa(self) -> str:
        return f"{self.module}.{self.function}/{self.arity}"

    @cached_property
    def args(self) -> str:
        """The arguments, as Elixir prints the list of them."""
        return payload_text(self.args_payload, self.node)

    @cached_property
    def call(self) -> str:
        """The call as it was written: ``Catalog.page(80)``."""
        try:
            args = payload_value(self.args_payload) if self.args_payload else []
        except ETFDecodeError:
            return f"{self.module}.{self.function}({self.args})"
        return format_call(self.module, self.function, args, limit=None, printable_limit=None,
                           local_node=self.node)

    @cached_property
    def result(self) -> str | None:
        """The return value, ``{class, reason}`` of an exception, or the exit reason."""
        if self.result_payload is None:
            return None
        return payload_text(self.result_payload, self.node)

    def as_dict(self) -> dict[str, Any]:
        return _as_dict(self, {"mfa": self.mfa, "call": self.call, "args": self.args,
                               "result": self.result}) | {"open": self.open}


@dataclass(frozen=True)
class Message:
    """One message: its send, its receive, or both. ``handled`` is when the receiver
    began the call the message triggered, ``queue_time`` how long it waited for it."""

    message_id: int
    node: str
    sender: str | None
    sender_name: str | None
    receiver: str | None
    receiver_name: str | None
    target: str | None
    sent: float | None
    received: float | None
    handled: float | None
    queue_time: float | None
    to_dead: bool
    send_seq: int | None
    receive_seq: int | None
    send_span_id: int | None
    handler_span_id: int | None
    payload: bytes = field(repr=False)

    @cached_property
    def value(self) -> Any:
        return payload_value(self.payload)

    @cached_property
    def text(self) -> str:
        return payload_text(self.payload, self.node)

    def as_dict(self) -> dict[str, Any]:
        return _as_dict(self, {"text": self.text})


@dataclass(frozen=True)
class Process:
    """A process the recording saw. ``names`` are its registered names, in order."""

    pid: str
    pid_id: int
    node: str
    names: tuple[str, ...]
    parent: str | None
    initial_call: str | None
    first_seen: float | None
    last_seen: float | None
    spawned: float | None
    exited: float | None
    events: int
    exit_payload: bytes | None = field(repr=False)

    @property
    def name(self) -> str | None:
        return self.names[0] if self.names else None

    @cached_property
    def exit_reason(self) -> str | None:
        if self.exit_payload is None:
            return None
        return payload_text(self.exit_payload, self.node)

    def as_dict(self) -> dict[str, Any]:
        return _as_dict(self, {"exit_reason": self.exit_reason})


@dataclass(frozen=True)
class CauseStep:
    """One step back along a causal chain: ``relation`` says in words how ``event``
    led to the step before it."""

    relation: str
    event: Event

    def as_dict(self) -> dict[str, Any]:
        return {"relation": self.relation, "event": self.event.as_dict()}
