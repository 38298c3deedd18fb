"""Process metrics sampled while recording (``process_samples``): the mailbox length,
memory, reductions, status and current function of the traced processes and of the
node's busiest ones, several times a second. ``top_at`` is the table at a moment;
``series`` one process over time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import duckdb

from elixirscope.beam_names import mfa_display
from elixirscope.elixir_format import inspect
from elixirscope.errors import ETFDecodeError, QueryError
from elixirscope.etf import Atom
from elixirscope.recording.results import payload_value
from elixirscope.recording.timespec import TimeSpec, wall_ns

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

SORTS = {"queue": "queue", "memory": "memory", "reductions": "reductions_per_s"}
# How far back a sample still describes a process at a moment.
FRESH_NS = 1_000_000_000


@dataclass(frozen=True)
class Sample:
    """One process at one moment. ``reductions_per_s`` is measured against the
    process's previous sample (None for its first)."""

    time: float
    pid: str
    pid_id: int
    name: str | None
    queue: int
    memory: int
    reductions: int
    reductions_per_s: float | None
    status: str
    current_function: str

    def as_dict(self) -> dict[str, Any]:
        return {"time": self.time, "pid": self.pid, "pid_id": self.pid_id,
                "name": self.name, "message_queue_len": self.queue, "memory": self.memory,
                "reductions": self.reductions, "reductions_per_s": self.reductions_per_s,
                "status": self.status, "current_function": self.current_function}


def recorded(rec: RecordingQueries) -> bool:
    """Whether the recording holds process metrics."""
    try:
        row = rec.con.execute("SELECT 1 FROM process_samples LIMIT 1").fetchone()
    except duckdb.CatalogException:  # a recording made before metrics were sampled
        return False
    return row is not None


def top_at(rec: RecordingQueries, t: TimeSpec, *, sort: str = "queue",
           limit: int | None = 20) -> list[Sample]:
    """Each sampled process as it was at ``t`` (its last sample at most a second
    before), the largest by ``sort`` (queue, memory or reductions) first."""
    if sort not in SORTS:
        raise QueryError(f"sort by {', '.join(SORTS)}, not {sort!r}")
    _require(rec)
    at = wall_ns(t, rec.dims.start_wall_ns)
    rows = rec.con.execute(
        "WITH recent AS (SELECT pid_id, ts, wall_offset, payload, row_number() OVER "
        "(PARTITION BY pid_id ORDER BY ts DESC) AS n FROM process_samples "
        "WHERE ts + wall_offset <= ? AND ts + wall_offset > ?) "
        "SELECT pid_id, ts, wall_offset, payload, n FROM recent WHERE n <= 2 "
        "ORDER BY pid_id, n", [at, at - FRESH_NS]).fetchall()
    latest: dict[int, Sample] = {}
    previous: dict[int, tuple[int, int]] = {}
    for pid_id, ts, _, payload, n in rows:
        if n == 2:
            values = _values(payload)
            previous[pid_id] = (ts, int(values.get(Atom("r"), 0)))
    for pid_id, ts, offset, payload, n in rows:
        if n == 1:
            latest[pid_id] = _sample(rec, pid_id, ts, offset, payload, previous.get(pid_id))
    key = SORTS[sort]
    ranked = sorted(latest.values(), key=lambda s: -(getattr(s, key) or 0))
    return ranked if limit is None else ranked[:limit]


def series(rec: RecordingQueries, pid_id: int) -> list[Sample]:
    """Every sample of one process, in time order."""
    _require(rec)
    found: list[Sample] = []
    before: tuple[int, int] | None = None
    for ts, offset, payload in rec.con.execute(
            "SELECT ts, wall_offset, payload FROM process_samples WHERE pid_id = ? "
            "ORDER BY ts", [pid_id]).fetchall():
        sample = _sample(rec, pid_id, ts, offset, payload, before)
        before = (ts, sample.reductions)
        found.append(sample)
    return found


def growing_mailboxes(rec: RecordingQueries, min_queue: int) -> list[tuple[int, int, int]]:
    """``(pid_id, peak, last)`` for each sampled process whose mailbox reached
    ``min_queue`` messages; the queue length is read from the payload in Python."""
    if not recorded(rec):
        return []
    found = []
    for (pid_id,) in rec.con.execute("SELECT DISTINCT pid_id FROM process_samples"
                                     ).fetchall():
        queues = [sample.queue for sample in series(rec, pid_id)]
        if queues and max(queues) >= min_queue:
            found.append((pid_id, max(queues), queues[-1]))
    return found


def _require(rec: RecordingQueries) -> None:
    if not recorded(rec):
        raise QueryError(f"{rec.path} holds no process metrics (record with metrics on: "
                         "the default of elixirscope record and doctor)")


def _values(payload: bytes) -> dict[Any, Any]:
    try:
        value = payload_value(bytes(payload))
    except ETFDecodeError:
        return {}
    return value if isinstance(value, dict) else {}


def _sample(rec: RecordingQueries, pid_id: int, ts: int, offset: int, payload: bytes,
            before: tuple[int, int] | None) -> Sample:
    values = _values(payload)
    dims = rec.dims
    reductions = int(values.get(Atom("r"), 0))
    rate = None
    if before is not None and ts > before[0]:
        rate = (reductions - before[1]) / ((ts - before[0]) / 1e9)
    name = values.get(Atom("n"))
    function = values.get(Atom("f"))
    return Sample(
        time=(ts + offset - dims.start_wall_ns) / 1e9, pid=dims.pid(pid_id) or "?",
        pid_id=pid_id,
        name=inspect(name) if isinstance(name, Atom) and str(name) != "undefined"
        else dims.name(pid_id),
        queue=int(values.get(Atom("q"), 0)), memory=int(values.get(Atom("m"), 0)),
        reductions=reductions, reductions_per_s=rate,
        status=str(values.get(Atom("s"), "?")),
        current_function=_mfa(function))


def _mfa(function: Any) -> str:
    if isinstance(function, tuple) and len(function) == 3 and isinstance(function[2], int):
        return mfa_display(str(function[0]), str(function[1]), function[2])
    return inspect(function)
