"""Recording a live tracing session to a file: ``Scope.record(path) -> Recorder``.

The pipeline, thread by thread:

* network thread (the asyncio loop): each agent batch becomes a columnar chunk
  (``BatchIngest``, vectorised) and goes into the ring buffer;
* writer thread: drains the ring into DuckDB, one transaction per flush interval;
* the caller's thread, at stop: last flush, process snapshot, correlation.

With the ``block`` overflow strategy a full ring stops the network thread reading
the node's socket until the writer makes room: the distribution buffer on the node
fills, the agent's non-blocking sends fail and it drops (and counts) whole batches
inside the VM, which is where shedding load is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from elixirscope.elixir_format import inspect
from elixirscope.errors import ElixirScopeError, ProtocolError
from elixirscope.etf import Atom, Pid
from elixirscope.process_labels import named_processes
from elixirscope.process_table import describe_processes
from elixirscope.recording import correlate
from elixirscope.recording.ingest import BatchIngest, Dimensions, SeqCounter
from elixirscope.recording.ring import Overflow, RingBuffer, RingStats
from elixirscope.recording.store import create, put_meta
from elixirscope.recording.writer import StoreWriter, WriterThread
from elixirscope.tracing.record_defs import record_definitions
from elixirscope.version import __version__

if TYPE_CHECKING:
    import duckdb

    from elixirscope.tracing.scope import AsyncScope, TraceInfo, TraceStopped

NODE_ID = 1
# At most this many processes are asked about when the recording stops.
_SNAPSHOT_PIDS = 20_000


@dataclass(frozen=True)
class RecorderStats:
    """What the recorder has done so far."""

    events: int
    written: int
    rate: float
    elapsed: float
    ring: RingStats
    agent_received: int
    agent_dropped: int
    agent_sampled_out: int
    adaptive_rate: float
    lost_batches: int
    malformed_batches: int
    breaker: str | None
    stop_message: str | None = None
    discarded_at_stop: int = 0

    @property
    def dropped(self) -> int:
        """Events lost on the way, wherever: in the agent (its distribution buffer was
        busy, or its queue was discarded after a stop), in the ring, and at the stop.
        Lost batches are counted apart: how many events they held is unknown."""
        return self.agent_dropped + self.ring.dropped + self.discarded_at_stop

    @property
    def kept_share(self) -> float:
        """The share of the traced events the recording holds (1.0: all of them)."""
        seen = self.events + self.dropped + self.agent_sampled_out
        return self.events / seen if seen else 1.0


class Recorder:
    """Records everything its scope traces into one file, in the background."""

    def __init__(self, scope: AsyncScope, path: Path, *, capacity: int, overflow: Overflow,
                 flush_interval: float) -> None:
        self.scope = scope
        self.path = path
        self.ring = RingBuffer(capacity, overflow)
        self.dimensions = Dimensions()
        self.ingest = BatchIngest(scope.node.name, NODE_ID, scope.offset_ns, self.dimensions,
                                  SeqCounter(), lookup=scope.lookup)
        self.started = time.monotonic()
        self.stopped_at: float | None = None
        self.malformed_batches = 0
        self.discarded_at_stop = 0
        self.breaker: str | None = None
        self.stop_message: str | None = None
        self._session_events: list[tuple[int, int | None, int, str, str | None]] = []
        self._space = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._start_names: dict[Pid, str] = {}
        self._start_ts: int | None = None
        self._lock = threading.Lock()
        self._con = create(path)
        self._writer = StoreWriter(self._con, self.dimensions)
        self._thread = WriterThread(self.ring, self._writer, flush_interval=flush_interval,
                                    meta=self._progress_meta)
        self.ring.on_space = self._on_space
        self._snapshot_rows: list[tuple[int, int, str | None, str | None, bool]] = []
        self._end_ts: int | None = None
        self._traces: list[dict[str, Any]] = []
        self._records: dict[tuple[str, int], list[str]] = {}
        self._closed = False
        self._finished = False

    @classmethod
    async def start(cls, scope: AsyncScope, path: str | Path, *, capacity: int = 1 << 20,
                    overflow: Overflow = "block", flush_interval: float = 1.0) -> Recorder:
        recorder = cls(scope, Path(path), capacity=capacity, overflow=overflow,
                       flush_interval=flush_interval)
        try:
            await recorder._begin()
        except BaseException:
            recorder._con.close()
            with contextlib.suppress(OSError):
                Path(path).unlink()
            raise
        return recorder

    async def _begin(self) -> None:
        node = self.scope.node
        self._start_ts = await node.rpc("erlang", "monotonic_time", [Atom("nanosecond")])
        self._start_names = await named_processes(node)
        caps = self.scope.capabilities
        self._con.execute("INSERT INTO nodes VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                          [NODE_ID, node.name, caps.otp_release, caps.erts_version,
                           caps.elixir_version, self.scope.offset_ns, self._start_ts])
        put_meta(self._con, {
            "recorder_version": __version__, "created_wall_ns": time.time_ns(),
            "ring": {"capacity": self.ring.capacity, "overflow": self.ring.overflow},
            "limits": {key: value for key, value in vars(await self.scope.limits()).items()
                       if value is not None},
        })
        await self.scope.state_keyframes()
        self._thread.start()
        # No await from here on: the next batch to arrive is the recording's first.
        self.ingest.next_batch = self.scope.last_batch_seq + 1
        self.scope.add_sink(self)

    # --- the network side (the asyncio loop) ------------------------------------------

    async def on_batch(self, batch: Any) -> None:
        try:
            chunk = self.ingest.ingest(batch)
        except ProtocolError as exc:
            self.malformed_batches += 1
            self._note("malformed_batch", str(exc))
            return
        await self._put(chunk)

    async def _put(self, chunk: pa.RecordBatch) -> None:
        done = self.ring.write(chunk)
        if done == chunk.num_rows:
            return
        node = self.scope.node
        node.pause_reading()
        try:
            while done < chunk.num_rows and not self._closed:
                self._space.clear()
                if self.ring.free() == 0:
                    await self._space.wait()
                done += self.ring.write(chunk.slice(done))
        finally:
            node.resume_reading()
        # Stopped while waiting for room: what did not fit is lost, and counted.
        self.discarded_at_stop += chunk.num_rows - done

    def on_stopped(self, stopped: TraceStopped) -> None:
        self.breaker = stopped.reason
        self.stop_message = str(stopped)
        self._note("breaker_trip", json.dumps({"reason": stopped.reason,
                                               "counters": stopped.counters}, default=str))

    def _on_space(self) -> None:
        self._loop.call_soon_threadsafe(self._space.set)

    def _note(self, what: str, detail: str | None) -> None:
        with self._lock:
            self._session_events.append((NODE_ID, self.ingest.last_ts, time.time_ns(), what,
                                         detail))

    # --- stats --------------------------------------------------------------------------

    @property
    def stats(self) -> RecorderStats:
        end = self.stopped_at or time.monotonic()
        elapsed = max(end - self.started, 1e-9)
        agent = self.ingest.agent
        return RecorderStats(
            events=self.ingest.events, written=self._writer.flushed_events,
            rate=self.ingest.events / elapsed, elapsed=elapsed, ring=self.ring.stats,
            agent_received=agent.received, agent_dropped=agent.dropped,
            agent_sampled_out=agent.sampled_out, adaptive_rate=agent.adaptive_rate,
            lost_batches=self.ingest.lost_batches, malformed_batches=self.malformed_batches,
            breaker=self.breaker, stop_message=self.stop_message,
            discarded_at_stop=self.discarded_at_stop)

    def _progress_meta(self) -> dict[str, Any]:
        """Written with every flush, so a recording cut short still says how it went."""
        stats = self.stats
        with self._lock:
            notes, self._session_events = self._session_events, []
        if notes:
            self._con.executemany("INSERT INTO session_events VALUES (?, ?, ?, ?, ?)", notes)
        ring = stats.ring
        return {
            "agent_stats": {"received": stats.agent_received, "kept": self.ingest.agent.kept,
                            "dropped": stats.agent_dropped,
                            "sampled_out": stats.agent_sampled_out,
                            "adaptive_rate": stats.adaptive_rate},
            "drops": {"agent_dropped": stats.agent_dropped,
                      "agent_lost_batches": stats.lost_batches,
                      "drop_oldest": ring.dropped_oldest, "drop_newest": ring.dropped_newest,
                      "malformed_batches": stats.malformed_batches,
                      "discarded_at_stop": self.discarded_at_stop},
            "ring_stats": {"written": ring.written, "read": ring.read, "lag": ring.lag,
                           "high_water": ring.high_water, "blocked": ring.blocked,
                           "blocked_seconds": round(ring.blocked_seconds, 3)},
            "breaker": stats.breaker,
            "events_written": self._writer.flushed_events + self._writer.pending_events,
        }

    # --- stopping -----------------------------------------------------------------------

    async def detach(self) -> None:
        """Stops taking batches (after the agent's last flush) and notes, while the node
        is still there, what it can say about the recorded processes."""
        if self._closed:
            return
        scope = self.scope
        if not scope.node.closed.done():
            with contextlib.suppress(ElixirScopeError):
                await scope.flush()
                await scope.drain()
            with contextlib.suppress(ElixirScopeError):
                self._traces = [_trace_meta(info) for info in await scope.list_traces()]
        self._closed = True
        self._space.set()
        scope.remove_sink(self)
        self.stopped_at = time.monotonic()
        with contextlib.suppress(ElixirScopeError):
            await self._snapshot()
        if not scope.node.closed.done():
            with contextlib.suppress(ElixirScopeError):
                self._records = await record_definitions(
                    scope.node, {module for module, _, _ in self.dimensions.functions})

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The recording's own connection, for readers in this process: take a
        ``cursor()`` of it for each read. A cursor sees what the writer has committed
        (at most one flush interval behind) and may be used on another thread."""
        return self._con

    def start_names(self) -> dict[int, str]:
        """The registered names processes had when recording began, by pid id, for the
        processes the recording has seen so far."""
        known = self.dimensions.pids
        return {known[pid]: name for pid, name in self._start_names.items() if pid in known}

    async def _snapshot(self) -> None:
        node = self.scope.node
        end_ts = await node.rpc("erlang", "monotonic_time", [Atom("nanosecond")])
        known = self.dimensions.pids
        pids = [pid for pid in known if str(pid.node) == node.name][:_SNAPSHOT_PIDS]
        described = await describe_processes(node, pids)
        rows: list[tuple[int, int, str | None, str | None, bool]] = []
        for pid, name in self._start_names.items():
            if pid in known and self._start_ts is not None:
                rows.append((known[pid], self._start_ts, name, None, True))
        for pid, row in zip(pids, described, strict=True):
            if row is None:
                rows.append((known[pid], end_ts, None, None, False))
            else:
                rows.append((known[pid], end_ts, row.name or row.label or None,
                             row.initial_call or None, True))
        self._snapshot_rows = rows
        self._end_ts = end_ts

    def finish(self, progress: correlate.Progress | None = None) -> None:
        """Blocking part of stopping: drain the ring, flush, finalize (``progress``:
        see ``correlate.finalize``), close the file."""
        if self._finished:
            return
        self._finished = True
        self._thread.stop()
        if self._thread.error is not None:
            error = self._thread.error
            self._con.close()
            raise ElixirScopeError(f"writing {self.path} failed: {error}") from error
        meta = self._progress_meta()
        meta["ended_wall_ns"] = time.time_ns()
        meta["traces"] = self._traces
        meta["records"] = {self.scope.node.name: [
            [name, size, fields] for (name, size), fields in sorted(self._records.items())]}
        self._writer.flush(meta)
        con = self._con
        if self._snapshot_rows:
            con.executemany("INSERT INTO process_snapshots VALUES (?, ?, ?, ?, ?)",
                            self._snapshot_rows)
        end_ts = self._end_ts if self._end_ts is not None else self.ingest.last_ts
        con.execute("UPDATE nodes SET ended_ts = ? WHERE node_id = ?", [end_ts, NODE_ID])
        try:
            correlate.finalize(con, progress=progress)
        finally:
            con.close()

    async def aclose(self) -> None:
        await self.detach()
        await asyncio.to_thread(self.finish)

    def stop(self, progress: correlate.Progress | None = None) -> RecorderStats:
        """Flushes and closes the recording (from any thread but the network loop's);
        ``progress`` hears of finalize's phases (see ``correlate.finalize``)."""
        asyncio.run_coroutine_threadsafe(self.detach(), self._loop).result()
        self.finish(progress)
        return self.stats

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _trace_meta(info: TraceInfo) -> dict[str, Any]:
    return {"ref": info.ref, "kind": info.kind, "target": info.target,
            "status": info.status, "captured": info.captured, "dropped": info.dropped,
            "sampled_out": info.sampled_out,
            "options": {key: inspect(value) for key, value in info.options.items()}}
