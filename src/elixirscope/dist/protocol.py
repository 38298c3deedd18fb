"""Messages on an established distribution connection, without I/O.

After the handshake every frame is a 4-byte big-endian length and that many bytes; a
zero-length frame is a tick. We announce neither atom caches nor fragments, so every
other frame is a pass-through: ``p``, the control tuple, and for some operations the
message itself, each a complete external term.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any, ClassVar

from elixirscope.errors import ETFDecodeError, ProtocolError
from elixirscope.etf import Atom, Pid, Reference, decode_prefix, encode

PASS_THROUGH = 112

LINK = 1
SEND = 2
EXIT = 3
UNLINK = 4
REG_SEND = 6
GROUP_LEADER = 7
EXIT2 = 8
SEND_TT = 12
EXIT_TT = 13
REG_SEND_TT = 16
EXIT2_TT = 18
MONITOR_P = 19
DEMONITOR_P = 20
MONITOR_P_EXIT = 21
SEND_SENDER = 22
SEND_SENDER_TT = 23
PAYLOAD_EXIT = 24
PAYLOAD_EXIT_TT = 25
PAYLOAD_EXIT2 = 26
PAYLOAD_EXIT2_TT = 27
PAYLOAD_MONITOR_P_EXIT = 28
ALIAS_SEND = 33
ALIAS_SEND_TT = 34
UNLINK_ID = 35
UNLINK_ID_ACK = 36

TICK = b"\x00\x00\x00\x00"
_LENGTH = struct.Struct(">I")
_EMPTY = Atom("")


class Event:
    """Something the node told us."""


@dataclass(frozen=True, slots=True)
class Tick(Event):
    pass


@dataclass(frozen=True, slots=True)
class Send(Event):
    """A message for one of our pids (SEND, SEND_SENDER, ALIAS_SEND and their _TT forms)."""

    to: Pid | Reference
    message: Any
    sender: Pid | None = None


@dataclass(frozen=True, slots=True)
class RegSend(Event):
    """A message for a name registered on our side."""

    sender: Pid
    to: Atom
    message: Any


@dataclass(frozen=True, slots=True)
class Link(Event):
    sender: Pid
    to: Pid


@dataclass(frozen=True, slots=True)
class UnlinkId(Event):
    id: int
    sender: Pid
    to: Pid


@dataclass(frozen=True, slots=True)
class UnlinkIdAck(Event):
    id: int
    sender: Pid
    to: Pid


@dataclass(frozen=True, slots=True)
class Exit(Event):
    """A linked process died (EXIT), or someone called ``exit(Pid, Reason)`` (EXIT2)."""

    sender: Pid
    to: Pid
    reason: Any
    via_link: bool = True


@dataclass(frozen=True, slots=True)
class MonitorP(Event):
    sender: Pid
    to: Pid | Atom
    ref: Reference


@dataclass(frozen=True, slots=True)
class DemonitorP(Event):
    sender: Pid
    to: Pid | Atom
    ref: Reference


@dataclass(frozen=True, slots=True)
class MonitorPExit(Event):
    """A monitored process went down: the DOWN message's origin."""

    sender: Pid | Atom
    to: Pid
    ref: Reference
    reason: Any


@dataclass(frozen=True, slots=True)
class Unsupported(Event):
    """A well-formed control message we have no use for (group leader changes, ...)."""

    control: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Malformed(Event):
    """A frame that did not decode. The framing is intact, so the connection goes on."""

    error: str
    frame: bytes


class Decoder:
    """Splits the byte stream into frames and frames into events."""

    max_frame: ClassVar[int] = 1 << 30

    def __init__(self, max_frame: int | None = None) -> None:
        self._buffer = bytearray()
        self._max_frame = max_frame or self.max_frame

    def receive_data(self, data: bytes) -> list[Event]:
        buffer = self._buffer
        buffer += data
        events: list[Event] = []
        offset = 0
        end = len(buffer)
        while end - offset >= 4:
            (length,) = _LENGTH.unpack_from(buffer, offset)
            if length > self._max_frame:
                raise ProtocolError(
                    f"the node sent a frame of {length} bytes, over the {self._max_frame} limit"
                )
            if end - offset - 4 < length:
                break
            start = offset + 4
            offset = start + length
            if length == 0:
                events.append(Tick())
            else:
                events.append(parse_frame(bytes(buffer[start:offset])))
        if offset:
            del buffer[:offset]
        return events


def parse_frame(frame: bytes) -> Event:
    if frame[0] != PASS_THROUGH:
        return Malformed(f"frame type {frame[0]} is not a pass-through", frame)
    try:
        control, offset = decode_prefix(frame, 1)
        payload = _NO_PAYLOAD
        if offset < len(frame):
            payload, offset = decode_prefix(frame, offset)
        if offset != len(frame):
            return Malformed(f"{len(frame) - offset} stray bytes after the message", frame)
        if not isinstance(control, tuple) or not control or not isinstance(control[0], int):
            return Malformed("the control message is not a tuple with an operation", frame)
        return _event(control, payload)
    except ETFDecodeError as exc:
        return Malformed(str(exc), frame)
    except (ValueError, IndexError, TypeError) as exc:
        return Malformed(f"control message of the wrong shape ({exc})", frame)


class _NoPayload:
    def __repr__(self) -> str:
        return "<no payload>"


_NO_PAYLOAD: Any = _NoPayload()


def _needs_payload(payload: Any, op: int) -> Any:
    if payload is _NO_PAYLOAD:
        raise ValueError(f"operation {op} carries no message")
    return payload


def _event(control: tuple[Any, ...], payload: Any) -> Event:
    op = control[0]
    if op in (SEND, SEND_TT):
        return Send(to=control[2], message=_needs_payload(payload, op))
    if op in (SEND_SENDER, SEND_SENDER_TT):
        return Send(to=control[2], message=_needs_payload(payload, op), sender=control[1])
    if op in (ALIAS_SEND, ALIAS_SEND_TT):
        return Send(to=control[2], message=_needs_payload(payload, op), sender=control[1])
    if op in (REG_SEND, REG_SEND_TT):
        return RegSend(sender=control[1], to=control[3], message=_needs_payload(payload, op))
    if op == LINK:
        return Link(sender=control[1], to=control[2])
    if op == UNLINK_ID:
        return UnlinkId(id=control[1], sender=control[2], to=control[3])
    if op == UNLINK_ID_ACK:
        return UnlinkIdAck(id=control[1], sender=control[2], to=control[3])
    if op in (EXIT, EXIT_TT):
        return Exit(sender=control[1], to=control[2], reason=control[-1])
    if op in (PAYLOAD_EXIT, PAYLOAD_EXIT_TT):
        return Exit(sender=control[1], to=control[2], reason=_needs_payload(payload, op))
    if op in (EXIT2, EXIT2_TT):
        return Exit(sender=control[1], to=control[2], reason=control[-1], via_link=False)
    if op in (PAYLOAD_EXIT2, PAYLOAD_EXIT2_TT):
        return Exit(sender=control[1], to=control[2], reason=_needs_payload(payload, op),
                    via_link=False)
    if op == MONITOR_P:
        return MonitorP(sender=control[1], to=control[2], ref=control[3])
    if op == DEMONITOR_P:
        return DemonitorP(sender=control[1], to=control[2], ref=control[3])
    if op == MONITOR_P_EXIT:
        return MonitorPExit(sender=control[1], to=control[2], ref=control[3], reason=control[4])
    if op == PAYLOAD_MONITOR_P_EXIT:
        return MonitorPExit(sender=control[1], to=control[2], ref=control[3],
                            reason=_needs_payload(payload, op))
    return Unsupported(control)


def _frame(control: tuple[Any, ...], message: Any = _NO_PAYLOAD) -> bytes:
    body = b"p" + encode(control)
    if message is not _NO_PAYLOAD:
        body += encode(message)
    return _LENGTH.pack(len(body)) + body


def send(to: Pid, message: Any) -> bytes:
    return _frame((SEND, _EMPTY, to), message)


def reg_send(sender: Pid, to: Atom, message: Any) -> bytes:
    return _frame((REG_SEND, sender, _EMPTY, to), message)


def link(sender: Pid, to: Pid) -> bytes:
    return _frame((LINK, sender, to))


def unlink_id(id: int, sender: Pid, to: Pid) -> bytes:
    return _frame((UNLINK_ID, id, sender, to))


def unlink_id_ack(id: int, sender: Pid, to: Pid) -> bytes:
    return _frame((UNLINK_ID_ACK, id, sender, to))


def exit_signal(sender: Pid, to: Pid, reason: Any) -> bytes:
    """The EXIT a linked process of ours sends when it ends."""
    return _frame((EXIT, sender, to, reason))


def monitor_p(sender: Pid, to: Pid | Atom, ref: Reference) -> bytes:
    return _frame((MONITOR_P, sender, to, ref))


def demonitor_p(sender: Pid, to: Pid | Atom, ref: Reference) -> bytes:
    return _frame((DEMONITOR_P, sender, to, ref))


def monitor_p_exit(sender: Pid | Atom, to: Pid, ref: Reference, reason: Any) -> bytes:
    """Tells a node that one of our monitored processes went down."""
    return _frame((MONITOR_P_EXIT, sender, to, ref, reason))
