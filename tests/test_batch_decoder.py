"""Agent batches decoded without a node: sequence gaps, tables, garbled input."""

from __future__ import annotations

import pytest

from elixirscope.errors import ProtocolError
from elixirscope.etf import Atom, Pid, encode
from elixirscope.tracing.batch import BATCH, HEADER, BatchDecoder
from elixirscope.tracing.events import KIND_CODES, OTHER_IS_CALLER, TRUNCATED

PID = Pid(Atom("app@host"), 80, 0, 1)
OTHER = Pid(Atom("app@host"), 81, 0, 1)
MFA = (Atom("Elixir.Bank.Account"), Atom("deposit"), 2)
CALLER = (Atom("Elixir.Bank.Transfer"), Atom("run"), 3)


def record(kind: str, *, pid: int = 1, ts: int = 10, mfa: int = 0, other: int = 0,
           flags: int = 0, payload: bytes = b"", original: int | None = None
           ) -> tuple[bytes, bytes]:
    header = HEADER.pack(KIND_CODES[kind], flags, pid, ts, mfa, other,
                         len(payload) if original is None else original, len(payload))
    return header, payload


def batch(seq: int, records: list[tuple[bytes, bytes]], new_pids: list[object] = (),
          new_mfas: list[object] = ()) -> tuple[object, ...]:
    return (BATCH, seq, list(new_pids), list(new_mfas), (5, 4, 1, 0, 1.0),
            b"".join(h for h, _ in records), b"".join(p for _, p in records))


def test_events_carry_hot_fields_and_lazy_payloads() -> None:
    decoder = BatchDecoder("app@host", offset_ns=1_000)
    args = encode([1, b"x"])
    events = decoder.decode(batch(1, [
        record("call", pid=1, mfa=3, other=4, flags=OTHER_IS_CALLER, payload=args),
        record("send", pid=1, other=2, payload=encode(Atom("hi")), ts=-5),
        record("return", pid=1, mfa=3, payload=encode(b"big"), flags=TRUNCATED,
               original=9000),
    ], new_pids=[(1, PID), (2, OTHER)], new_mfas=[(3, MFA), (4, CALLER)]))
    call, send, ret = events
    assert (call.kind, call.pid, call.mfa, call.caller, call.value) == (
        "call", PID, MFA, CALLER, [1, b"x"])
    assert call.node == "app@host" and call.wall_time_ns == call.timestamp + 1_000
    assert (send.kind, send.peer, send.value, send.timestamp) == ("send", OTHER, Atom("hi"), -5)
    assert ret.truncated and ret.original_size == 9000 and ret.value == b"big"
    assert decoder.stats.received == 5 and decoder.stats.dropped == 1
    assert BatchDecoder.count(batch(1, [record("exit")] * 7)) == 7


def test_sequence_gaps_are_counted_as_lost_batches() -> None:
    decoder = BatchDecoder("app@host")
    decoder.decode(batch(1, [record("exit")], new_pids=[(1, PID)]))
    decoder.decode(batch(4, [record("exit")]))
    assert decoder.lost_batches == 2
    decoder.decode(batch(5, []))
    assert decoder.lost_batches == 2


@pytest.mark.parametrize("bad", [
    (BATCH, 1, [], [], (0, 0, 0, 0, 1.0), b"\x00" * 29, b""),        # header cut short
    batch(1, [record("call", pid=9)]),                                 # unknown pid index
    (*batch(1, [record("call", pid=1, payload=b"abc")])[:6], b"ab"),   # payloads too short
    (BATCH, 1, [], []),                                                 # wrong arity
])
def test_garbled_batches_are_protocol_errors(bad: tuple[object, ...]) -> None:
    decoder = BatchDecoder("app@host", pids={1: PID})
    with pytest.raises(ProtocolError):
        decoder.decode(bad)
