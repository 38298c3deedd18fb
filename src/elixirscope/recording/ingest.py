"""Agent batches into columnar chunks, with no work per event in Python.

The 30-byte headers are viewed as a numpy record array; the agent's pid and function
indexes become recording-wide ids through lookup arrays; the payload block becomes an
Arrow binary column over the batch's own bytes. Only sends addressed to a name take a
slower path: their ``{Name, Message}`` payload is split so the message bytes match
the receiver's.

The pid and function tables and the losses go to the writer through ``Dimensions``,
not through the ring buffer, so a chunk the ring drops never takes a pid with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from elixirscope.beam_names import module_display
from elixirscope.elixir_format import inspect
from elixirscope.errors import ETFDecodeError, ProtocolError
from elixirscope.etf import Pid, decode_body, encode
from elixirscope.tracing.batch import AgentStats, unpack
from elixirscope.tracing.events import METRICS, OTHER_IS_CALLER, TARGET_NOT_PID, TRUNCATED

HEADER = np.dtype([
    ("kind", "u1"), ("flags", "u1"), ("pid", ">u4"), ("ts", ">i8"), ("mfa", ">u4"),
    ("other", ">u4"), ("original", ">u4"), ("len", ">u4"),
])
assert HEADER.itemsize == 30

EVENT_SCHEMA = pa.schema([
    ("seq", pa.int64()), ("node_id", pa.int16()), ("pid_id", pa.int32()),
    ("kind", pa.uint8()), ("flags", pa.uint8()), ("ts", pa.int64()),
    ("wall_offset", pa.int64()), ("hlc", pa.int64()), ("mfa_id", pa.int32()),
    ("other_pid_id", pa.int32()), ("caller_mfa_id", pa.int32()), ("target", pa.string()),
    ("payload", pa.binary()), ("original_size", pa.uint32()),
])

_NONE = -1


def pid_text(pid: Pid, node: str) -> str:
    """``#PID<0.123.0>`` for the node's own processes, ``#PID<other@host.1.0>`` else."""
    where = "0" if str(pid.node) == node else str(pid.node)
    return f"#PID<{where}.{pid.id}.{pid.serial}>"


@dataclass
class Loss:
    node_id: int
    before_seq: int
    ts: int | None
    source: str
    events: int | None
    batches: int | None


@dataclass
class Dimensions:
    """Rows for the ``pids``, ``functions`` and ``losses`` tables, shared by every
    node's ingest and drained by the writer."""

    pids: dict[Pid, int] = field(default_factory=dict)
    functions: dict[tuple[str, str, int], int] = field(default_factory=dict)
    _new_pids: list[tuple[int, int, str, bytes]] = field(default_factory=list)
    _new_functions: list[tuple[int, str, str, int]] = field(default_factory=list)
    _losses: list[Loss] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def pid_id(self, pid: Pid, node_id: int, node: str) -> int:
        found = self.pids.get(pid)
        if found is None:
            found = self.pids[pid] = len(self.pids) + 1
            with self._lock:
                self._new_pids.append((found, node_id, pid_text(pid, node), encode(pid)))
        return found

    def function_id(self, mfa: Any) -> int:
        key = (str(mfa[0]), str(mfa[1]), int(mfa[2]))
        found = self.functions.get(key)
        if found is None:
            found = self.functions[key] = len(self.functions) + 1
            with self._lock:
                self._new_functions.append((found, module_display(key[0]), key[1], key[2]))
        return found

    def add_loss(self, loss: Loss) -> None:
        with self._lock:
            self._losses.append(loss)

    def take(self) -> tuple[list[tuple[int, int, str, bytes]], list[tuple[int, str, str, int]],
                            list[Loss]]:
        with self._lock:
            taken = self._new_pids, self._new_functions, self._losses
            self._new_pids, self._new_functions, self._losses = [], [], []
        return taken


@dataclass
class SeqCounter:
    """The recording-wide event sequence, shared by the ingests of every node."""

    next: int = 1

    def claim(self, count: int) -> int:
        first = self.next
        self.next += count
        return first


class BatchIngest:
    """Turns one node's agent batches into Arrow record batches (``EVENT_SCHEMA``)."""

    def __init__(self, node: str, node_id: int, offset_ns: int, dimensions: Dimensions,
                 seq: SeqCounter, *, first_batch: int = 1,
                 lookup: Callable[[int], Any] | None = None) -> None:
        self.node = node
        self.node_id = node_id
        self.offset_ns = offset_ns
        self.dimensions = dimensions
        self.seq = seq
        self.agent = AgentStats()
        self.next_batch = first_batch
        # Index entries sent before this ingest started (a recording begun mid-session).
        self._lookup = lookup
        self.lost_batches = 0
        self.events = 0  # events of the recording (not the process metrics samples)
        self.samples = 0
        self.last_ts: int | None = None
        self._hlc = 0
        self._pids = np.full(64, _NONE, dtype=np.int32)
        self._mfas = np.full(64, _NONE, dtype=np.int32)

    def ingest(self, batch: Any) -> pa.RecordBatch:
        number, new_pids, new_mfas, stats, headers, payloads = unpack(batch)
        self._learn(new_pids, new_mfas)
        records = np.frombuffer(headers, dtype=HEADER)
        count = len(records)
        first_seq = self.seq.claim(count)
        self._account(number, stats, first_seq, records)
        chunk = self._columns(records, payloads, first_seq)
        samples = int(np.count_nonzero(records["kind"] == METRICS)) if count else 0
        self.events += count - samples
        self.samples += samples
        if count:
            self.last_ts = int(records["ts"][-1])
        return chunk

    def _learn(self, new_pids: Any, new_mfas: Any) -> None:
        try:
            for index, pid in new_pids:
                if not isinstance(pid, Pid):
                    raise ProtocolError("the agent sent a pid table entry that is not a pid")
                self._grow_to(index)
                self._pids[index] = self.dimensions.pid_id(pid, self.node_id, self.node)
            for index, mfa in new_mfas:
                self._grow_to(index)
                self._mfas[index] = self.dimensions.function_id(mfa)
        except (TypeError, ValueError, IndexError) as exc:
            raise ProtocolError(f"the agent sent a malformed index table ({exc})") from None

    def _grow_to(self, index: int) -> None:
        """Both tables cover ``index`` (pids and functions share one index space)."""
        if index < 1:
            raise ProtocolError("the agent sent an index below 1")
        if index < len(self._pids):
            return
        size = len(self._pids)
        while size <= index:
            size *= 2
        self._pids = _grown(self._pids, size)
        self._mfas = _grown(self._mfas, size)

    def _account(self, number: int, stats: AgentStats, first_seq: int,
                 records: np.ndarray) -> None:
        ts = int(records["ts"][0]) if len(records) else self.last_ts
        if number > self.next_batch:
            gap = number - self.next_batch
            self.lost_batches += gap
            self.dimensions.add_loss(Loss(self.node_id, first_seq, ts, "agent_gap", None, gap))
        self.next_batch = max(self.next_batch, number + 1)
        if stats.dropped > self.agent.dropped:
            self.dimensions.add_loss(Loss(self.node_id, first_seq, ts, "agent_dropped",
                                          stats.dropped - self.agent.dropped, None))
        self.agent = stats

    def _columns(self, records: np.ndarray, payloads: bytes, first_seq: int) -> pa.RecordBatch:
        count = len(records)
        flags = records["flags"]
        lengths = records["len"].astype(np.int64)
        offsets = np.zeros(count + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if offsets[-1] != len(payloads):
            raise ProtocolError("an agent batch's payloads do not add up to its records")
        ts = records["ts"].astype(np.int64)
        pid_ids, mfa_ids, others, callers = self._resolve(records)
        is_caller = (flags & OTHER_IS_CALLER) != 0
        payload_array: pa.Array = pa.BinaryArray.from_buffers(
            pa.binary(), count, [None, pa.py_buffer(offsets.astype(np.int32)),
                                 pa.py_buffer(payloads)])
        target: pa.Array = pa.nulls(count, pa.string())
        named = np.flatnonzero(flags & TARGET_NOT_PID)
        if len(named):
            payload_array, target = _split_named(payload_array, named, flags, count)
        wall = ts + self.offset_ns
        hlc = self._advance_hlc(wall)
        columns = [
            pa.array(np.arange(first_seq, first_seq + count, dtype=np.int64)),
            pa.array(np.full(count, self.node_id, dtype=np.int16)),
            pa.array(pid_ids),
            pa.array(records["kind"]),
            pa.array(flags),
            pa.array(ts),
            pa.array(np.full(count, self.offset_ns, dtype=np.int64)),
            pa.array(hlc),
            pa.array(mfa_ids, mask=mfa_ids == _NONE),
            pa.array(others, mask=is_caller | (others == _NONE)),
            pa.array(callers, mask=~is_caller | (callers == _NONE)),
            target,
            payload_array,
            pa.array(records["original"].astype(np.uint32)),
        ]
        return pa.RecordBatch.from_arrays(columns, schema=EVENT_SCHEMA)

    def _resolve(self, records: np.ndarray) -> tuple[np.ndarray, ...]:
        """Recording-wide ids for the pid, function and other columns. An index this
        ingest never learned is looked up in the session once (a recording begun
        mid-session); after that it is the agent's error."""
        for retry in (False, True):
            try:
                pid_ids = self._pids[records["pid"]]
                mfa_ids = self._mfas[records["mfa"]]
                others = self._pids[records["other"]]
                callers = self._mfas[records["other"]]
            except IndexError:
                unknown = True
            else:
                unknown = bool((pid_ids == _NONE).any()
                               or ((mfa_ids == _NONE) & (records["mfa"] != 0)).any()
                               or ((others == _NONE) & (callers == _NONE)
                                   & (records["other"] != 0)).any())
            if not unknown:
                return pid_ids, mfa_ids, others, callers
            if retry or self._lookup is None:
                break
            self._learn_missing(records)
        raise ProtocolError("an agent batch names a pid or function it never sent")

    def _learn_missing(self, records: np.ndarray) -> None:
        indexes = np.unique(np.concatenate([records["pid"], records["mfa"], records["other"]]))
        indexes = indexes[indexes > 0]
        if not len(indexes):
            return
        self._grow_to(int(indexes[-1]))
        unknown = indexes[(self._pids[indexes] == _NONE) & (self._mfas[indexes] == _NONE)]
        if len(unknown):
            assert self._lookup is not None
            self._learn([(i, term) for i in unknown.tolist()
                         if isinstance(term := self._lookup(i), Pid)],
                        [(i, term) for i in unknown.tolist()
                         if isinstance(term := self._lookup(i), tuple)])

    def _advance_hlc(self, wall: np.ndarray) -> np.ndarray:
        """h[i] = max(wall[i], h[i-1] + 1), vectorised: h[i] - i is a running maximum."""
        count = len(wall)
        if not count:
            return wall
        steps = np.arange(count, dtype=np.int64)
        shifted = wall - steps
        shifted[0] = max(int(shifted[0]), self._hlc + 1)
        hlc = np.maximum.accumulate(shifted) + steps
        self._hlc = int(hlc[-1])
        return hlc


def _grown(table: np.ndarray, size: int) -> np.ndarray:
    grown = np.full(size, _NONE, dtype=np.int32)
    grown[: len(table)] = table
    return grown


def _split_named(payloads: pa.BinaryArray, rows: np.ndarray, flags: np.ndarray,
                 count: int) -> tuple[pa.Array, pa.Array]:
    """``{Name, Message}`` payloads become the message's own ETF and the name's text."""
    values: list[bytes | None] = payloads.to_pylist()
    targets: list[str | None] = [None] * count
    for row in rows.tolist():
        raw = values[row]
        if raw is None or flags[row] & TRUNCATED or raw[:3] != b"\x83h\x02":
            continue
        try:
            name, end = decode_body(raw, 3)
        except ETFDecodeError:
            continue
        targets[row] = inspect(name)
        values[row] = b"\x83" + raw[end:]
    return pa.array(values, pa.binary()), pa.array(targets, pa.string())

