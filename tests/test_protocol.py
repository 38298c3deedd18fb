"""Frames and control messages of an established connection, with no socket."""

from __future__ import annotations

import struct

import pytest

from elixirscope.dist import protocol
from elixirscope.errors import ProtocolError
from elixirscope.etf import Atom, Pid, Reference, encode

ME = Pid(Atom("es@host"), 1, 0, 7)
THEM = Pid(Atom("app@host"), 88, 0, 3)
REF = Reference(Atom("app@host"), 3, (1, 2, 3))


def frame(control: tuple[object, ...], *payload: object) -> bytes:
    body = b"p" + encode(control) + b"".join(encode(item) for item in payload)
    return struct.pack(">I", len(body)) + body


def test_ticks_and_messages_split_anywhere() -> None:
    stream = (protocol.TICK + frame((2, Atom(""), ME), (Atom("hello"), 1))
              + frame((6, THEM, Atom(""), Atom("box")), [1, 2]))
    for cut in range(len(stream) + 1):
        decoder = protocol.Decoder()
        events = decoder.receive_data(stream[:cut]) + decoder.receive_data(stream[cut:])
        assert events == [
            protocol.Tick(),
            protocol.Send(to=ME, message=(Atom("hello"), 1)),
            protocol.RegSend(sender=THEM, to=Atom("box"), message=[1, 2]),
        ]


@pytest.mark.parametrize(("control", "payload", "expected"), [
    ((22, THEM, ME), ["m"], protocol.Send(to=ME, message=b"m", sender=THEM)),
    ((1, THEM, ME), [], protocol.Link(sender=THEM, to=ME)),
    ((35, 9, THEM, ME), [], protocol.UnlinkId(id=9, sender=THEM, to=ME)),
    ((36, 9, THEM, ME), [], protocol.UnlinkIdAck(id=9, sender=THEM, to=ME)),
    ((3, THEM, ME, Atom("boom")), [], protocol.Exit(sender=THEM, to=ME, reason=Atom("boom"))),
    ((24, THEM, ME), [Atom("boom")], protocol.Exit(sender=THEM, to=ME, reason=Atom("boom"))),
    ((8, THEM, ME, Atom("kill")), [],
     protocol.Exit(sender=THEM, to=ME, reason=Atom("kill"), via_link=False)),
    ((19, THEM, ME, REF), [], protocol.MonitorP(sender=THEM, to=ME, ref=REF)),
    ((20, THEM, ME, REF), [], protocol.DemonitorP(sender=THEM, to=ME, ref=REF)),
    ((21, THEM, ME, REF, Atom("normal")), [],
     protocol.MonitorPExit(sender=THEM, to=ME, ref=REF, reason=Atom("normal"))),
    ((28, THEM, ME, REF), [Atom("noproc")],
     protocol.MonitorPExit(sender=THEM, to=ME, ref=REF, reason=Atom("noproc"))),
    ((7, THEM, ME), [], protocol.Unsupported((7, THEM, ME))),
])
def test_control_messages(control: tuple[object, ...], payload: list[object],
                          expected: protocol.Event) -> None:
    assert protocol.Decoder().receive_data(frame(control, *payload)) == [expected]


def test_outgoing_frames_decode_back() -> None:
    sent = (protocol.send(THEM, "hi") + protocol.reg_send(ME, Atom("rex"), 1)
            + protocol.link(ME, THEM) + protocol.unlink_id(4, ME, THEM)
            + protocol.monitor_p(ME, Atom("name"), REF))
    events = protocol.Decoder().receive_data(sent)
    assert events == [
        protocol.Send(to=THEM, message=b"hi"),
        protocol.RegSend(sender=ME, to=Atom("rex"), message=1),
        protocol.Link(sender=ME, to=THEM),
        protocol.UnlinkId(id=4, sender=ME, to=THEM),
        protocol.MonitorP(sender=ME, to=Atom("name"), ref=REF),
    ]


@pytest.mark.parametrize("body", [
    b"p\x83",                                 # truncated term
    b"p" + encode((2, Atom(""), ME)) + b"\x83h",  # truncated payload
    b"p" + encode([1, 2]),                    # control is not a tuple
    b"p" + encode((2, Atom(""), ME)),         # SEND without its message
    b"D\x00\x00",                             # a distribution header we never asked for
    b"p" + encode((Atom("x"),)),              # no operation number
    b"p" + encode((2,)),                      # too short for its operation
    b"p" + encode((1, THEM, ME)) + encode(1) + b"\x00",  # stray bytes
])
def test_malformed_frames_are_reported_and_the_stream_goes_on(body: bytes) -> None:
    decoder = protocol.Decoder()
    events = decoder.receive_data(struct.pack(">I", len(body)) + body + protocol.TICK)
    assert isinstance(events[0], protocol.Malformed)
    assert events[1:] == [protocol.Tick()]


def test_oversized_frame_is_a_protocol_error_not_an_allocation() -> None:
    with pytest.raises(ProtocolError, match="limit"):
        protocol.Decoder(max_frame=1000).receive_data(struct.pack(">I", 1 << 31))
