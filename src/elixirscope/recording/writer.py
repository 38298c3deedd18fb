"""The store writer: drains the ring buffer into the recording file on its own thread.

Chunks gather in memory and go to DuckDB in one transaction per flush (every
``flush_interval`` seconds, or sooner once ``flush_events`` are waiting), so a
recorder killed at any moment loses at most the last interval: DuckDB's write-ahead
log makes each committed flush durable and replays it when the file is next opened.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from elixirscope.recording import schema
from elixirscope.recording.ingest import EVENT_SCHEMA, Dimensions
from elixirscope.recording.ring import RingBuffer
from elixirscope.recording.store import put_meta
from elixirscope.tracing.events import METRICS

_READ_EVENTS = 1 << 16


class StoreWriter:
    """Appends chunks and the dimension rows that go with them; commits on ``flush``."""

    def __init__(self, con: duckdb.DuckDBPyConnection, dimensions: Dimensions) -> None:
        self.con = con
        self.dimensions = dimensions
        self.flushed_events = 0
        self.flushes = 0
        self.last_flush = time.monotonic()
        self._pending: list[pa.RecordBatch] = []
        self._pending_events = 0

    @property
    def pending_events(self) -> int:
        return self._pending_events

    def add(self, chunks: list[pa.RecordBatch]) -> None:
        for chunk in chunks:
            self._pending.append(chunk)
            samples = pc.sum(pc.equal(chunk.column("kind"), METRICS)).as_py() or 0
            self._pending_events += chunk.num_rows - samples

    def flush(self, meta: dict[str, Any] | None = None) -> int:
        """Writes what is pending in one transaction; returns the events written."""
        pids, functions, losses = self.dimensions.take()
        chunks, self._pending = self._pending, []
        count, self._pending_events = self._pending_events, 0
        cur = self.con.cursor()
        try:
            cur.execute("BEGIN")
            if pids:
                cur.executemany("INSERT INTO pids VALUES (?, ?, ?, ?)", pids)
            if functions:
                cur.executemany("INSERT INTO functions VALUES (?, ?, ?, ?)", functions)
            if losses:
                cur.executemany("INSERT INTO losses VALUES (?, ?, ?, ?, ?, ?)",
                                [(x.node_id, x.before_seq, x.ts, x.source, x.events, x.batches)
                                 for x in losses])
            if chunks:
                table = pa.Table.from_batches(chunks, schema=EVENT_SCHEMA)
                cur.register("incoming_events", table)
                columns = ", ".join(schema.RAW_EVENT_COLUMNS)
                cur.execute(f"INSERT INTO events ({columns}) SELECT {columns} "
                            f"FROM incoming_events WHERE kind <> {METRICS}")
                cur.execute("INSERT INTO process_samples SELECT node_id, pid_id, ts, "
                            f"wall_offset, payload FROM incoming_events WHERE kind = {METRICS}")
                cur.unregister("incoming_events")
            if meta:
                put_meta(cur, meta)
            cur.execute("COMMIT")
        finally:
            cur.close()
        self.flushed_events += count
        self.flushes += 1
        self.last_flush = time.monotonic()
        return count


class WriterThread(threading.Thread):
    """Reads the ring and flushes at least every ``flush_interval`` seconds."""

    def __init__(self, ring: RingBuffer, writer: StoreWriter, *, flush_interval: float = 1.0,
                 flush_events: int = 1 << 18,
                 meta: Callable[[], dict[str, Any]] | None = None) -> None:
        super().__init__(name="elixirscope-writer", daemon=True)
        self.ring = ring
        self.writer = writer
        self.flush_interval = flush_interval
        self.flush_events = flush_events
        self.meta = meta
        self.error: BaseException | None = None
        self._stop_requested = threading.Event()

    def run(self) -> None:
        try:
            while True:
                stopping = self._stop_requested.is_set()
                due = self.writer.last_flush + self.flush_interval - time.monotonic()
                chunks = self.ring.read(_READ_EVENTS, timeout=0 if stopping else max(due, 0.01))
                self.writer.add(chunks)
                drained = stopping and not len(self.ring)
                if (drained or self.writer.pending_events >= self.flush_events
                        or time.monotonic() >= self.writer.last_flush + self.flush_interval):
                    self.writer.flush(self.meta() if self.meta else None)
                if drained:
                    return
        except BaseException as exc:  # the recorder reports it; the thread must not die silently
            self.error = exc

    def stop(self, timeout: float | None = None) -> None:
        """Drains the ring, flushes, and returns when the thread is done."""
        self._stop_requested.set()
        self.ring.close()
        self.join(timeout)
