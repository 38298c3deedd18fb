"""Agent batches into events, without per-event term parsing.

A batch is ``{es_batch, Seq, NewPids, NewMfas, Stats, Headers, Payloads}``.
``Headers`` is a block of fixed 30-byte records, read in one ``iter_unpack``::

    kind:8 flags:8 pid:32 timestamp:64/signed mfa:32 other:32 original_size:32 len:32

and ``Payloads`` holds each record's ``len`` payload bytes, in the same order.

Pids and MFAs travel as indexes into tables the agent extends in each batch, so
only the first mention of a process or function costs an ETF term.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from elixirscope.errors import ProtocolError
from elixirscope.etf import Atom, Pid
from elixirscope.tracing.events import KIND_NAMES, OTHER_IS_CALLER, Mfa, TraceEvent

HEADER = struct.Struct(">BBIqIIII")
BATCH = Atom("es_batch")


@dataclass(slots=True)
class AgentStats:
    """The agent's counters as of the latest batch."""

    received: int = 0
    kept: int = 0
    dropped: int = 0
    sampled_out: int = 0
    adaptive_rate: float = 1.0

    @classmethod
    def from_term(cls, stats: Any) -> AgentStats:
        try:
            received, kept, dropped, sampled_out, adaptive = stats
            return cls(int(received), int(kept), int(dropped), int(sampled_out),
                       float(adaptive))
        except (TypeError, ValueError):
            raise ProtocolError("the agent sent malformed counters") from None


def unpack(batch: Any) -> tuple[int, Any, Any, AgentStats, bytes, bytes]:
    """``(seq, new_pids, new_mfas, stats, headers, payloads)`` of a well-shaped batch."""
    if not (isinstance(batch, tuple) and len(batch) == 7 and batch[0] == BATCH
            and isinstance(batch[1], int) and isinstance(batch[5], bytes)
            and isinstance(batch[6], bytes)):
        raise ProtocolError("the agent sent a batch of the wrong shape")
    _, seq, new_pids, new_mfas, stats, headers, payloads = batch
    if len(headers) % HEADER.size:
        raise ProtocolError("an agent batch ends inside a record header")
    return seq, new_pids, new_mfas, AgentStats.from_term(stats), headers, payloads


@dataclass
class BatchDecoder:
    """Decodes one session's batches; keeps its pid and MFA tables and the sequence."""

    node: str
    offset_ns: int = 0
    pids: dict[int, Pid] = field(default_factory=dict)
    mfas: dict[int, Mfa] = field(default_factory=dict)
    next_seq: int = 1
    lost_batches: int = 0
    stats: AgentStats = field(default_factory=AgentStats)

    def decode(self, batch: Any) -> list[TraceEvent]:
        seq, new_pids, new_mfas, self.stats, headers, payloads = unpack(batch)
        if seq != self.next_seq:
            self.lost_batches += seq - self.next_seq
        self.next_seq = seq + 1
        self.learn(new_pids, new_mfas)
        return self._records(headers, payloads)

    def learn(self, new_pids: Any, new_mfas: Any) -> None:
        """Takes a batch's index entries. The session calls it for every batch as it
        arrives, whoever consumes the batch, so the tables never miss an entry."""
        for index, pid in new_pids:
            self.pids[index] = pid
        for index, mfa in new_mfas:
            self.mfas[index] = mfa

    def lookup(self, index: int) -> Pid | Mfa | None:
        """The pid or function the agent numbered ``index``."""
        return self.pids.get(index) or self.mfas.get(index)

    @staticmethod
    def count(batch: Any) -> int:
        """How many events a batch holds, without decoding it."""
        return len(batch[5]) // HEADER.size

    def _records(self, headers: bytes, payloads: bytes) -> list[TraceEvent]:
        if len(headers) % HEADER.size:
            raise ProtocolError("an agent batch ends inside a record header")
        events: list[TraceEvent] = []
        append = events.append
        pids, mfas, kinds = self.pids, self.mfas, KIND_NAMES
        node, offset_ns = self.node, self.offset_ns
        position = 0
        try:
            for kind, flags, pid, timestamp, mfa, other, original, length in \
                    HEADER.iter_unpack(headers):
                start = position
                position += length
                other_value: Pid | Mfa | None
                if not other:
                    other_value = None
                elif flags & OTHER_IS_CALLER:
                    other_value = mfas.get(other)
                else:
                    other_value = pids.get(other)
                append(TraceEvent(kinds[kind], node, pids[pid], timestamp,
                                  mfas.get(mfa) if mfa else None, other_value,
                                  payloads[start:position], flags, original, offset_ns))
        except (KeyError, IndexError) as exc:
            raise ProtocolError(f"an agent batch names an unknown kind, pid or function ({exc})"
                                ) from None
        if position != len(payloads):
            raise ProtocolError("an agent batch's payloads do not add up to its records")
        return events
