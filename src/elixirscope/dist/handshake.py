"""The initiating side of the distribution handshake, version 6 (OTP 23+), without I/O.

Feed it bytes with :meth:`ClientHandshake.receive_data`; send what it returns. When
``done`` is true, ``peer`` describes the node and ``leftover`` holds any bytes that
arrived after the handshake (they belong to the connection).

    us                                   node
    send_name  'N' flags creation name  ->
               <-  status 's' "ok"
               <-  challenge 'N' flags challenge creation name
    reply 'r' our_challenge digest      ->
               <-  ack 'a' digest
"""

from __future__ import annotations

import enum
import secrets
import struct
from dataclasses import dataclass

from elixirscope.dist import flags as dflags
from elixirscope.dist.cookie import Cookie
from elixirscope.errors import AuthenticationFailed, NameRefused, ProtocolError


class State(enum.Enum):
    AWAIT_STATUS = "awaiting the node's status"
    AWAIT_CHALLENGE = "awaiting the node's challenge"
    AWAIT_ACK = "awaiting the node's acknowledgement"
    DONE = "connected"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class Peer:
    name: str
    flags: int
    creation: int


_HEADER = struct.Struct(">H")
_SEND_NAME = struct.Struct(">cQIH")
_CHALLENGE = struct.Struct(">QIIH")
_REPLY = struct.Struct(">cI16s")


def frame(message: bytes) -> bytes:
    return _HEADER.pack(len(message)) + message


class ClientHandshake:
    def __init__(
        self,
        own_name: str,
        cookie: Cookie,
        *,
        creation: int,
        flags: int = dflags.OURS,
        challenge: int | None = None,
        target: str = "the node",
    ) -> None:
        self.own_name = own_name
        self.flags = flags
        self.creation = creation
        self.state = State.AWAIT_STATUS
        self.peer: Peer | None = None
        self.leftover = b""
        self._cookie = cookie
        self._challenge = secrets.randbits(32) if challenge is None else challenge
        self._target = target
        self._buffer = bytearray()

    @property
    def done(self) -> bool:
        return self.state is State.DONE

    def start(self) -> bytes:
        """The send_name message that opens the handshake."""
        name = self.own_name.encode()
        return frame(_SEND_NAME.pack(b"N", self.flags, self.creation, len(name)) + name)

    def receive_data(self, data: bytes) -> bytes:
        """Consumes bytes from the node; returns bytes to send (possibly empty)."""
        if self.state in (State.DONE, State.FAILED):
            raise ProtocolError(f"handshake data received while {self.state.value}")
        self._buffer += data
        out = bytearray()
        while self.state not in (State.DONE, State.FAILED):
            if len(self._buffer) < 2:
                break
            (length,) = _HEADER.unpack_from(self._buffer)
            if len(self._buffer) < 2 + length:
                break
            message = bytes(self._buffer[2 : 2 + length])
            del self._buffer[: 2 + length]
            out += self._handle(message)
        if self.done:
            self.leftover = bytes(self._buffer)
            self._buffer.clear()
        return bytes(out)

    def connection_closed(self) -> Exception:
        """The error that explains why the node hung up at this point of the handshake."""
        state, self.state = self.state, State.FAILED
        if state is State.AWAIT_STATUS:
            return NameRefused(
                f"{self._target} closed the connection before accepting our name; "
                "it may use long names (-name) where we used short ones, or the other way round"
            )
        if state is State.AWAIT_CHALLENGE:
            return ProtocolError(f"{self._target} closed the connection before its challenge")
        if state is State.AWAIT_ACK:
            return AuthenticationFailed(
                f"{self._target} rejected our cookie (taken from {self._cookie.source})"
            )
        return ProtocolError(f"{self._target} closed the connection")

    def _fail(self, error: Exception) -> Exception:
        self.state = State.FAILED
        return error

    def _handle(self, message: bytes) -> bytes:
        if self.state is State.AWAIT_STATUS:
            return self._on_status(message)
        if self.state is State.AWAIT_CHALLENGE:
            return self._on_challenge(message)
        return self._on_ack(message)

    def _on_status(self, message: bytes) -> bytes:
        if message[:1] != b"s":
            raise self._fail(ProtocolError(f"{self._target} sent no status to our name"))
        status = message[1:].decode("latin-1")
        if status in ("ok", "ok_simultaneous"):
            self.state = State.AWAIT_CHALLENGE
            return b""
        if status == "alive":
            # The node asks whether to drop its other connection from our name; hanging up
            # answers "no" as well as an explicit "sfalse" would.
            raise self._fail(NameRefused(
                f"{self._target} already has a connection from a node named {self.own_name}"
            ))
        if status == "not_allowed":
            raise self._fail(NameRefused(
                f"{self._target} does not allow connections from {self.own_name} "
                "(net_kernel:allow/1 or a name style it does not accept)"
            ))
        if status == "nok":
            raise self._fail(NameRefused(
                f"{self._target} is already connecting to {self.own_name}"
            ))
        raise self._fail(ProtocolError(f"{self._target} answered our name with {status!r}"))

    def _on_challenge(self, message: bytes) -> bytes:
        if message[:1] == b"n":
            raise self._fail(ProtocolError(
                f"{self._target} speaks the pre-OTP 23 handshake; OTP 25 or later is required"
            ))
        if message[:1] != b"N" or len(message) < 1 + _CHALLENGE.size:
            raise self._fail(ProtocolError(f"{self._target} sent a malformed challenge"))
        peer_flags, challenge, creation, name_len = _CHALLENGE.unpack_from(message, 1)
        start = 1 + _CHALLENGE.size
        name = message[start : start + name_len].decode("utf-8", "replace")
        missing = dflags.MANDATORY_OTP25 & ~peer_flags
        if missing:
            raise self._fail(ProtocolError(
                f"{name} lacks distribution capabilities OTP 25 requires: "
                + ", ".join(dflags.describe(missing))
            ))
        self.peer = Peer(name=name, flags=peer_flags, creation=creation)
        self.state = State.AWAIT_ACK
        return frame(_REPLY.pack(b"r", self._challenge, self._cookie.digest(challenge)))

    def _on_ack(self, message: bytes) -> bytes:
        if message[:1] != b"a" or len(message) != 17:
            raise self._fail(ProtocolError(f"{self._target} sent a malformed acknowledgement"))
        if message[1:] != self._cookie.digest(self._challenge):
            raise self._fail(AuthenticationFailed(
                f"{self._target} answered with a different cookie than ours "
                f"(taken from {self._cookie.source})"
            ))
        self.state = State.DONE
        return b""
