"""Agent batches written from Python, byte for byte in the agent's format.

For tests and benchmarks of everything downstream of the agent (ingest, store,
correlation, queries, exports) without a node, and for tools that replay events.
"""

from __future__ import annotations

from typing import Any

from elixirscope.etf import Atom, Pid, encode
from elixirscope.tracing.batch import BATCH, HEADER
from elixirscope.tracing.events import KIND_CODES, OTHER_IS_CALLER, RETURN_EXPECTED


class BatchBuilder:
    """Collects events and cuts them into ``es_batch`` tuples, keeping the agent's
    pid and function indexes (one shared index space, first mention in the batch)."""

    def __init__(self, node: str = "app@host") -> None:
        self.node = Atom(node)
        self._index: dict[Any, int] = {}
        self._new_pids: list[tuple[int, Pid]] = []
        self._new_mfas: list[tuple[int, tuple[Atom, Atom, int]]] = []
        self._headers: list[bytes] = []
        self._payloads: list[bytes] = []
        self._seq = 0
        self._kept = 0
        self.dropped = 0

    def pid(self, number: int, serial: int = 0) -> Pid:
        return Pid(self.node, number, serial, 1)

    def add(self, kind: str, pid: Pid, ts: int, *, mfa: tuple[str, str, int] | None = None,
            other: Pid | None = None, caller: tuple[str, str, int] | None = None,
            value: Any = None, payload: bytes | None = None, flags: int = 0,
            returns: bool | None = None) -> None:
        """One event. ``value`` is encoded as the payload (or ``payload`` is used as
        is); calls are marked as expecting a return unless ``returns=False``."""
        code = KIND_CODES[kind]
        if kind == "call" and returns is not False:
            flags |= RETURN_EXPECTED
        other_index = 0
        if caller is not None:
            other_index = self._mfa_index(caller)
            flags |= OTHER_IS_CALLER
        elif other is not None:
            other_index = self._pid_index(other)
        raw = payload if payload is not None else encode(value if value is not None else [])
        self._headers.append(HEADER.pack(code, flags, self._pid_index(pid), ts,
                                         self._mfa_index(mfa) if mfa else 0, other_index,
                                         len(raw), len(raw)))
        self._payloads.append(raw)
        self._kept += 1

    def __len__(self) -> int:
        return len(self._headers)

    def batch(self, *, skip_seq: int = 0) -> tuple[Any, ...]:
        """The events added since the last batch; ``skip_seq`` leaves a gap in the
        sequence as if that many batches were lost on the way."""
        self._seq += 1 + skip_seq
        batch = (BATCH, self._seq, self._new_pids, self._new_mfas,
                 (self._kept + self.dropped, self._kept, self.dropped, 0, 1.0),
                 b"".join(self._headers), b"".join(self._payloads))
        self._new_pids, self._new_mfas, self._headers, self._payloads = [], [], [], []
        return batch

    def _pid_index(self, pid: Pid) -> int:
        if pid not in self._index:
            self._index[pid] = len(self._index) + 1
            self._new_pids.append((self._index[pid], pid))
        return self._index[pid]

    def _mfa_index(self, mfa: tuple[str, str, int]) -> int:
        key = (Atom(mfa[0]), Atom(mfa[1]), int(mfa[2]))
        if key not in self._index:
            self._index[key] = len(self._index) + 1
            self._new_mfas.append((self._index[key], key))
        return self._index[key]

