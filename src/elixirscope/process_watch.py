"""``ps --watch``: the process table refreshed, with what changed per second."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from elixirscope.dist.async_node import AsyncNode
from elixirscope.etf import Pid
from elixirscope.process_labels import ProcessLabel
from elixirscope.process_table import (
    NodeTotals,
    ProcessRow,
    SortKey,
    describe_processes,
    fetch_node_totals,
)


@dataclass(frozen=True, slots=True)
class WatchedRow:
    """A process and how its counters moved per second since the last refresh (``None``
    on the first refresh and for a process that was not there then)."""

    row: ProcessRow
    mailbox_per_s: float | None
    memory_per_s: float | None
    reductions_per_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return {**self.row.as_dict(), "mailbox_per_s": self.mailbox_per_s,
                "memory_per_s": self.memory_per_s, "reductions_per_s": self.reductions_per_s}


@dataclass(frozen=True, slots=True)
class WatchFrame:
    totals: NodeTotals
    rows: list[WatchedRow]
    seconds: float | None  # since the previous refresh

    def as_dict(self) -> dict[str, Any]:
        return {"totals": self.totals.as_dict(), "seconds": self.seconds,
                "processes": [row.as_dict() for row in self.rows]}


class ProcessWatch:
    """Successive snapshots of a node's processes; a process's label is asked for once."""

    def __init__(self, node: AsyncNode, *, sort: SortKey = "reductions",
                 limit: int | None = None) -> None:
        self.node = node
        self.sort = sort
        self.limit = limit
        self._labels: dict[Pid, ProcessLabel] = {}
        self._previous: dict[str, ProcessRow] = {}
        self._previous_at: float | None = None

    async def refresh(self) -> WatchFrame:
        pids = await self.node.rpc("erlang", "processes", [])
        described = await describe_processes(self.node, pids, self._labels)
        at = time.monotonic()
        totals = await fetch_node_totals(self.node)
        alive = set(pids)
        self._labels = {pid: label for pid, label in self._labels.items() if pid in alive}
        seconds = None if self._previous_at is None else max(at - self._previous_at, 1e-3)
        rows = [self._watched(row, seconds) for row in described if row is not None]
        self._previous = {item.row.pid: item.row for item in rows}
        self._previous_at = at
        rows.sort(key=self._key(), reverse=True)
        return WatchFrame(totals, rows[:self.limit] if self.limit else rows, seconds)

    def _watched(self, row: ProcessRow, seconds: float | None) -> WatchedRow:
        before = self._previous.get(row.pid)
        if seconds is None or before is None:
            return WatchedRow(row, None, None, None)
        return WatchedRow(row, (row.mailbox - before.mailbox) / seconds,
                          (row.memory - before.memory) / seconds,
                          (row.reductions - before.reductions) / seconds)

    def _key(self) -> Any:
        if self.sort == "memory":
            return lambda item: item.row.memory
        if self.sort == "mailbox":
            return lambda item: item.row.mailbox
        # Like top: the busiest now, not the one that has worked most since it started.
        return lambda item: (item.reductions_per_s or 0.0, item.row.reductions)
