"""The handshake state machine, byte by byte, with no socket."""

from __future__ import annotations

import hashlib
import struct

import pytest

from elixirscope.dist import flags
from elixirscope.dist.cookie import Cookie
from elixirscope.dist.handshake import ClientHandshake, State, frame
from elixirscope.errors import AuthenticationFailed, NameRefused, ProtocolError

COOKIE = Cookie("monster", "the test")
NODE_CHALLENGE = 0xDEADBEEF
OUR_CHALLENGE = 12345


def md5(text: str) -> bytes:
    return hashlib.md5(text.encode()).digest()


def challenge_message(peer_flags: int = flags.MANDATORY_OTP26 | flags.PUBLISHED,
                      name: bytes = b"app@host") -> bytes:
    body = b"N" + struct.pack(">QIIH", peer_flags, NODE_CHALLENGE, 77, len(name)) + name
    return frame(body)


def new_handshake() -> ClientHandshake:
    return ClientHandshake("es_1@me", COOKIE, creation=4242, challenge=OUR_CHALLENGE,
                           target="app@host")


def test_send_name_is_a_version_6_name_message_without_published_flag() -> None:
    data = new_handshake().start()
    (length,) = struct.unpack(">H", data[:2])
    assert length == len(data) - 2
    tag, our_flags, creation, name_len = struct.unpack(">cQIH", data[2:17])
    assert tag == b"N"
    assert creation == 4242
    assert data[17:] == b"es_1@me" and name_len == 7
    assert not our_flags & flags.PUBLISHED
    assert our_flags & flags.MANDATORY_OTP26 == flags.MANDATORY_OTP26
    assert our_flags & flags.MANDATORY_25_DIGEST


def test_full_exchange_fed_one_byte_at_a_time() -> None:
    hs = new_handshake()
    hs.start()
    incoming = frame(b"sok") + challenge_message()
    sent = b"".join(hs.receive_data(incoming[i:i + 1]) for i in range(len(incoming)))
    assert hs.state is State.AWAIT_ACK
    assert sent == frame(b"r" + struct.pack(">I", OUR_CHALLENGE) + md5(f"monster{NODE_CHALLENGE}"))
    assert hs.peer is not None and hs.peer.name == "app@host" and hs.peer.creation == 77
    after = b"\x00\x00\x00\x00rest"
    assert hs.receive_data(frame(b"a" + md5(f"monster{OUR_CHALLENGE}")) + after) == b""
    assert hs.done
    assert hs.leftover == after


def test_ack_with_another_cookie_is_an_authentication_failure() -> None:
    hs = new_handshake()
    hs.receive_data(frame(b"sok") + challenge_message())
    with pytest.raises(AuthenticationFailed, match="different cookie"):
        hs.receive_data(frame(b"a" + md5(f"other{OUR_CHALLENGE}")))
    assert hs.state is State.FAILED


def test_hang_up_after_our_reply_means_the_cookie_was_rejected() -> None:
    hs = new_handshake()
    hs.receive_data(frame(b"sok") + challenge_message())
    error = hs.connection_closed()
    assert isinstance(error, AuthenticationFailed)
    assert "the test" in str(error) and "monster" not in str(error)


def test_hang_up_before_status_suggests_the_name_style() -> None:
    error = new_handshake().connection_closed()
    assert isinstance(error, NameRefused) and "long names" in str(error)


@pytest.mark.parametrize(("status", "expected"), [
    (b"snot_allowed", "does not allow"),
    (b"salive", "already has a connection"),
    (b"snok", "already connecting"),
])
def test_refusals_each_have_their_own_sentence(status: bytes, expected: str) -> None:
    with pytest.raises(NameRefused, match=expected):
        new_handshake().receive_data(frame(status))


def test_simultaneous_ok_goes_on() -> None:
    hs = new_handshake()
    assert hs.receive_data(frame(b"sok_simultaneous")) == b""
    assert hs.state is State.AWAIT_CHALLENGE


def test_peer_without_otp25_capabilities_is_refused() -> None:
    hs = new_handshake()
    with pytest.raises(ProtocolError, match="MAP_TAG"):
        hs.receive_data(frame(b"sok") + challenge_message(flags.MANDATORY_OTP25 & ~flags.MAP_TAG))


def test_old_handshake_challenge_is_refused() -> None:
    hs = new_handshake()
    with pytest.raises(ProtocolError, match="OTP 23"):
        hs.receive_data(frame(b"sok") + frame(b"n" + bytes(20)))


@pytest.mark.parametrize("garbage", [frame(b"x"), frame(b"")])
def test_garbage_status_is_a_protocol_error(garbage: bytes) -> None:
    with pytest.raises(ProtocolError):
        new_handshake().receive_data(garbage)


def test_truncated_challenge_is_a_protocol_error() -> None:
    hs = new_handshake()
    with pytest.raises(ProtocolError, match="malformed challenge"):
        hs.receive_data(frame(b"sok") + frame(b"N" + bytes(5)))


def test_cookie_never_shows_in_repr_or_str() -> None:
    assert "monster" not in repr(COOKIE) and "monster" not in str(COOKIE)
    assert "monster" not in repr(new_handshake().__dict__)
