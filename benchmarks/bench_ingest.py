"""Recording throughput: agent batches into the store file, against the rate at which
the agent path delivers events to Python, and the bytes each event takes on disk.

The workload is what a recording of a busy service's function calls looks like: calls
and returns of a few functions (arguments ``[i, j]``, result ``:ok``) on 50 processes,
about 1.5 µs apart, in batches of 2000 events (the agent's ``batch_events``) built in
the agent's exact format before any clock starts.

(a) Ingest to the store: ``BatchIngest.ingest`` of every batch and ``StoreWriter``
add/flush into a new DuckDB file (one connection, ``threads=1``, as the recorder's),
flushing every 262 144 events as the recorder's writer thread does, then the final
flush and a ``CHECKPOINT``: events/s and µs per event, and the split between ingest
alone (batches into Arrow chunks) and writing alone (the same chunks into another new
file). Goal: at least 1 M events/s, on one core.

(b) The same rate against the rate at which the agent path delivers traced calls to
Python (``bench_agent_throughput``'s asyncio measurement, on a real node, in the same
run). Goal: at least 1.5x.

(c) File size over events once the recording is closed: as written (raw tables), and
after ``correlate.finalize`` as the recorder leaves it. Goal: at most 40 bytes/event.

Run alone with ``.venv/bin/python -m benchmarks.bench_ingest [--events N] [--quick]``
(``--quick``: fewer events and rounds, no node).
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa

from elixirscope.etf import Atom, Pid
from elixirscope.recording import correlate
from elixirscope.recording.batch_builder import BatchBuilder
from elixirscope.recording.ingest import HEADER, BatchIngest, Dimensions, SeqCounter
from elixirscope.recording.store import create
from elixirscope.recording.writer import StoreWriter
from elixirscope.tracing.batch import BATCH
from elixirscope.tracing.events import KIND_CODES, RETURN_EXPECTED

EVENTS = 4_000_000
QUICK_EVENTS = 1_000_000
ROUNDS = 3
QUICK_ROUNDS = 2
BATCH_EVENTS = 2000  # the agent's default batch_events
FLUSH_EVENTS = 1 << 18  # WriterThread's flush_events
PROCESSES = 50
FUNCTIONS = 4
SPACING_NS = 1500
RATE_GOAL = 1_000_000
RATIO_GOAL = 1.5
BYTES_GOAL = 40
NODE = "app@host"


# --- agent batches, built with numpy ---------------------------------------------------
#
# BatchBuilder.add costs ~12 µs an event in Python, too slow for millions; this writes
# the same bytes vectorised (checked against BatchBuilder by ``check_against_builder``).

SMALL_INTEGER_EXT, INTEGER_EXT = 0x61, 0x62


@dataclass
class Shape:
    """A payload: fixed byte strings and integer slots (``int`` k: the k-th value),
    encoded as ``etf.encode`` encodes them (SMALL_INTEGER_EXT for 0..255, else
    INTEGER_EXT; values must fit in 32 bits)."""

    parts: Sequence[bytes | int]


def shape_of(prefix: bytes, slots: int, suffix: bytes = b"") -> Shape:
    return Shape([prefix, *range(slots), suffix])


ARGS_2 = shape_of(b"\x83l\x00\x00\x00\x02", 2, b"j")  # [i, j]
OK = shape_of(b"\x83w\x02ok", 0)  # :ok


def atom_tuple_shape(name: str) -> Shape:
    """``{:name, n}``."""
    raw = name.encode()
    return shape_of(b"\x83h\x02w" + bytes([len(raw)]) + raw, 1)


@dataclass
class EventColumns:
    """Events in emission order. ``pid``/``other`` index ``pids`` (-1: none), ``mfa``
    indexes ``mfas`` (-1: none); ``shape`` indexes ``shapes``; ``values`` the integer
    slots of each payload (n x 2)."""

    kind: np.ndarray
    flags: np.ndarray
    pid: np.ndarray
    ts: np.ndarray
    mfa: np.ndarray
    other: np.ndarray
    shape: np.ndarray
    values: np.ndarray
    pids: list[Pid]
    mfas: list[tuple[Atom, Atom, int]]
    shapes: list[Shape]

    def __len__(self) -> int:
        return len(self.kind)


def _int_lengths(values: np.ndarray) -> np.ndarray:
    if (values < 0).any() or (values >= 1 << 31).any():
        raise ValueError("integer slots take 0 <= value < 2**31")
    return np.where(values < 256, 2, 5)


def payload_block(events: EventColumns) -> tuple[np.ndarray, np.ndarray]:
    """(lengths, the payloads concatenated) for every event."""
    n = len(events)
    lengths = np.zeros(n, dtype=np.int64)
    for code, shape in enumerate(events.shapes):
        rows = np.flatnonzero(events.shape == code)
        for part in shape.parts:
            if isinstance(part, bytes):
                lengths[rows] += len(part)
            else:
                lengths[rows] += _int_lengths(events.values[rows, part])
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    block = np.zeros(int(offsets[-1]), dtype=np.uint8)
    for code, shape in enumerate(events.shapes):
        rows = np.flatnonzero(events.shape == code)
        cursor = offsets[rows].copy()
        for part in shape.parts:
            if isinstance(part, bytes):
                if part:
                    block[cursor[:, None] + np.arange(len(part))] = np.frombuffer(part, np.uint8)
                    cursor += len(part)
                continue
            value = events.values[rows, part]
            small = value < 256
            block[cursor[small]] = SMALL_INTEGER_EXT
            block[cursor[small] + 1] = value[small]
            big = ~small
            at = cursor[big]
            block[at] = INTEGER_EXT
            raw = value[big].astype(">u4").view(np.uint8).reshape(-1, 4)
            block[at[:, None] + np.arange(1, 5)] = raw
            cursor += np.where(small, 2, 5)
    return lengths, block


def agent_batches(events: EventColumns, batch_events: int = BATCH_EVENTS) -> list[tuple[Any, ...]]:
    """``es_batch`` tuples byte for byte as BatchBuilder (and the agent) cuts them: one
    index space for pids and functions, numbered by first mention (other, pid, mfa in
    each event), each entry sent in the batch that first mentions it."""
    n = len(events)
    npids = len(events.pids)
    keys = np.stack([events.other, events.pid,
                     np.where(events.mfa >= 0, events.mfa + npids, -1)], axis=1).ravel()
    valid = np.flatnonzero(keys >= 0)
    unique, first = np.unique(keys[valid], return_index=True)
    order = np.argsort(first, kind="stable")
    index_of = np.zeros(npids + len(events.mfas), dtype=np.int64)
    index_of[unique[order]] = np.arange(1, len(unique) + 1)
    first_event = valid[first[order]] // 3
    first_batch = first_event // batch_events

    header = np.zeros(n, dtype=HEADER)
    lengths, block = payload_block(events)
    header["kind"] = events.kind
    header["flags"] = events.flags
    header["pid"] = index_of[events.pid]
    header["ts"] = events.ts
    header["mfa"] = np.where(events.mfa >= 0, index_of[np.maximum(events.mfa, 0) + npids], 0)
    header["other"] = np.where(events.other >= 0, index_of[np.maximum(events.other, 0)], 0)
    header["original"] = lengths
    header["len"] = lengths
    header_bytes = header.tobytes()
    block_bytes = block.tobytes()
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])

    new_entries: dict[int, tuple[list[Any], list[Any]]] = {}
    for key, batch_no in zip(unique[order].tolist(), first_batch.tolist(), strict=True):
        pids, mfas = new_entries.setdefault(batch_no, ([], []))
        if key < npids:
            pids.append((int(index_of[key]), events.pids[key]))
        else:
            mfas.append((int(index_of[key]), events.mfas[key - npids]))
    batches = []
    size = HEADER.itemsize
    for number, start in enumerate(range(0, n, batch_events)):
        end = min(start + batch_events, n)
        pids, mfas = new_entries.get(number, ([], []))
        batches.append((BATCH, number + 1, pids, mfas, (end, end, 0, 0, 1.0),
                        header_bytes[start * size:end * size],
                        block_bytes[int(offsets[start]):int(offsets[end])]))
    return batches


def builder_batches(events: EventColumns, batch_events: int = BATCH_EVENTS
                    ) -> list[tuple[Any, ...]]:
    """The same events through ``BatchBuilder.add`` (slow; for checking)."""
    lengths, block = payload_block(events)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    builder = BatchBuilder(NODE)
    batches = []
    kinds = {code: name for name, code in KIND_CODES.items()}
    for i in range(len(events)):
        kind = kinds[int(events.kind[i])]
        mfa = events.mfas[events.mfa[i]] if events.mfa[i] >= 0 else None
        builder.add(kind, events.pids[events.pid[i]], int(events.ts[i]),
                    mfa=(str(mfa[0]), str(mfa[1]), mfa[2]) if mfa else None,
                    other=events.pids[events.other[i]] if events.other[i] >= 0 else None,
                    payload=block[offsets[i]:offsets[i + 1]].tobytes(),
                    flags=int(events.flags[i]) & ~RETURN_EXPECTED,
                    returns=bool(events.flags[i] & RETURN_EXPECTED))
        if len(builder) == batch_events:
            batches.append(builder.batch())
    if len(builder):
        batches.append(builder.batch())
    return batches


def check_against_builder(make: Any, events: int = 5000) -> None:
    """The vectorised batches of the first ``events`` equal BatchBuilder's."""
    sample = make(events)
    ours, theirs = agent_batches(sample), builder_batches(sample)
    if ours != theirs:
        bad = next(i for i, (a, b) in enumerate(zip(ours, theirs, strict=True)) if a != b)
        raise RuntimeError(f"vectorised batch {bad + 1} differs from BatchBuilder's")


# --- the workload --------------------------------------------------------------------


def calls_and_returns(events: int, *, processes: int = PROCESSES, functions: int = FUNCTIONS,
                      spacing_ns: int = SPACING_NS, seed: int = 1) -> EventColumns:
    """Call/return pairs of ``functions`` functions on ``processes`` processes, round
    robin; args ``[i, j]`` (i: the process's call count, j < 100), result ``:ok``;
    events ``spacing_ns`` apart on average."""
    rng = np.random.default_rng(seed)
    pairs = (events + 1) // 2
    pair_pid = np.arange(pairs) % processes
    pair_mfa = rng.integers(0, functions, pairs)
    kind = np.tile(np.array([KIND_CODES["call"], KIND_CODES["return"]], np.uint8), pairs)
    flags = np.tile(np.array([RETURN_EXPECTED, 0], np.uint8), pairs)
    gaps = rng.integers(spacing_ns // 2, spacing_ns * 3 // 2 + 1, 2 * pairs)
    values = np.zeros((2 * pairs, 2), dtype=np.int64)
    values[0::2, 0] = np.arange(pairs) // processes
    values[0::2, 1] = rng.integers(0, 100, pairs)
    builder = BatchBuilder(NODE)
    return EventColumns(
        kind=kind[:events], flags=flags[:events], pid=np.repeat(pair_pid, 2)[:events],
        ts=(10**12 + np.cumsum(gaps))[:events].astype(np.int64),
        mfa=np.repeat(pair_mfa, 2)[:events], other=np.full(events, -1, np.int64),
        shape=np.tile(np.array([0, 1]), pairs)[:events], values=values[:events],
        pids=[builder.pid(100 + p) for p in range(processes)],
        mfas=[(Atom("Elixir.Shop.Cart"), Atom(f"handle_{f}"), 2) for f in range(functions)],
        shapes=[ARGS_2, OK])


# --- measurement -----------------------------------------------------------------------


@dataclass
class Timing:
    """Wall-clock and CPU seconds (the process's: DuckDB runs with threads=1)."""

    wall: float
    cpu: float
    ingest: float = 0.0  # wall, within the round
    flush: float = 0.0
    checkpoint: float = 0.0


class _Clock:
    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def done(self) -> Timing:
        return Timing(time.perf_counter() - self.wall, time.process_time() - self.cpu)


def ingest_to_store(batches: list[tuple[Any, ...]], path: Path) -> Timing:
    """The recorder's path, timed: ingest, add, flush every FLUSH_EVENTS, last flush
    with the node row and meta, CHECKPOINT."""
    con = create(path)  # threads=1, as the recorder's
    try:
        now = time.perf_counter
        clock = _Clock()
        dimensions = Dimensions()
        ingest = BatchIngest(NODE, 1, 0, dimensions, SeqCounter())
        writer = StoreWriter(con, dimensions)
        spent_ingest = spent_flush = 0.0
        for batch in batches:
            t0 = now()
            chunk = ingest.ingest(batch)
            t1 = now()
            spent_ingest += t1 - t0
            writer.add([chunk])
            if writer.pending_events >= FLUSH_EVENTS:
                writer.flush()
                spent_flush += now() - t1
        t1 = now()
        con.execute("INSERT INTO nodes VALUES (1, ?, NULL, NULL, NULL, 0, NULL, ?)",
                    [NODE, ingest.last_ts])
        writer.flush({"agent_stats": asdict(ingest.agent)})
        t2 = now()
        con.execute("CHECKPOINT")
        t3 = now()
        timing = clock.done()
        timing.ingest, timing.checkpoint = spent_ingest, t3 - t2
        timing.flush = spent_flush + t2 - t1
    finally:
        con.close()
    return timing


def ingest_only(batches: list[tuple[Any, ...]]
                ) -> tuple[Timing, list[pa.RecordBatch], Dimensions]:
    dimensions = Dimensions()
    ingest = BatchIngest(NODE, 1, 0, dimensions, SeqCounter())
    clock = _Clock()
    chunks = [ingest.ingest(batch) for batch in batches]
    return clock.done(), chunks, dimensions


def write_only(chunks: list[pa.RecordBatch], dimensions: Dimensions, path: Path) -> Timing:
    """The chunks ingest made, into a new file as the recorder writes them."""
    con = create(path)
    try:
        clock = _Clock()
        writer = StoreWriter(con, dimensions)
        for chunk in chunks:
            writer.add([chunk])
            if writer.pending_events >= FLUSH_EVENTS:
                writer.flush()
        writer.flush()
        con.execute("CHECKPOINT")
        return clock.done()
    finally:
        con.close()


def file_blocks(path: Path) -> tuple[int, float]:
    """(file size, share of its blocks that are free)."""
    con = duckdb.connect(str(path), read_only=True)
    try:
        row = con.execute("SELECT total_blocks, free_blocks FROM pragma_database_size()"
                          ).fetchone()
    finally:
        con.close()
    total, free = (row or (0, 0))
    return path.stat().st_size, (free / total if total else 0.0)


def agent_rate() -> tuple[float, float, list[float]]:
    """bench_agent_throughput's asyncio measurement on a fresh node: (median events/s
    delivered to Python, median counting-tracer events/s, the rounds)."""
    import elixirscope
    from benchmarks import bench_agent_throughput as throughput
    from benchmarks._beam_workload import load_workload, require_clean, trace_state
    from elixirscope.sample_nodes import start_bare

    with start_bare("erl", name_prefix="bench_ingest") as target, \
            elixirscope.connect(target.name, target.cookie) as node:
        load_workload(node)
        with elixirscope.attach(node, None, **throughput.LIMITS) as scope:
            run = node.run(throughput._async_rounds(node.anode, scope.ascope))
        require_clean(trace_state(node), "after the scope closed")
    return statistics.median(run.agent), statistics.median(run.bare), run.agent


def _per_event(events: int, timings: list[Timing]) -> str:
    wall = min(t.wall for t in timings)
    cpu = min(t.cpu for t in timings)
    return (f"{events / cpu / 1e6:5.2f} M events/s = {cpu / events * 1e6:.3f} µs/event CPU; "
            f"wall {events / wall / 1e6:5.2f} M events/s = {wall / events * 1e6:.3f} µs/event")


def _verdict(met: bool) -> str:
    return "goal met" if met else "goal missed"


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(prog="bench_ingest")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_EVENTS:,} events, {QUICK_ROUNDS} rounds, no node")
    parser.add_argument("--no-node", action="store_true", help="skip (b)")
    args = parser.parse_args(list(argv))
    events = args.events or (QUICK_EVENTS if args.quick else EVENTS)
    rounds = args.rounds or (QUICK_ROUNDS if args.quick else ROUNDS)

    check_against_builder(calls_and_returns)
    started = time.perf_counter()
    batches = agent_batches(calls_and_returns(events))
    built = time.perf_counter() - started
    header_bytes = sum(len(b[5]) for b in batches)
    payload_bytes = sum(len(b[6]) for b in batches)
    print(f"{events:,} call/return events (args [i, j], result :ok; {PROCESSES} processes, "
          f"{FUNCTIONS} functions, ~{SPACING_NS / 1000:.1f} µs apart) in {len(batches):,} "
          f"batches of {BATCH_EVENTS}, built in {built:.1f} s (vectorised; the same bytes "
          f"as BatchBuilder's, checked); payloads {payload_bytes / events:.1f} B/event, "
          f"headers {header_bytes / events:.0f} B/event; load average before: "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")

    with tempfile.TemporaryDirectory(prefix="es-bench-ingest-") as tmp:
        full: list[Timing] = []
        ingests: list[Timing] = []
        writes: list[Timing] = []
        kept = Path(tmp) / "recording.duckdb"
        for round_number in range(rounds):
            path = Path(tmp) / f"full-{round_number}.duckdb"
            gc.collect()
            full.append(ingest_to_store(batches, path))
            if round_number == 0:
                path.rename(kept)
            else:
                path.unlink()
            gc.collect()
            seconds, chunks, dimensions = ingest_only(batches)
            ingests.append(seconds)
            gc.collect()
            scratch = Path(tmp) / "write-only.duckdb"
            writes.append(write_only(chunks, dimensions, scratch))
            del chunks
            scratch.unlink()
        raw_size, raw_free = file_blocks(kept)
        con = duckdb.connect(str(kept))
        try:
            clock = _Clock()
            correlate.finalize(con)  # all cores, as the recorder runs it
            finalized = clock.done()
        finally:
            con.close()  # checkpoints
        final_size, final_free = file_blocks(kept)

    best = min(full, key=lambda t: t.cpu)
    cpu_rate = events / best.cpu
    print(f"(a) agent batches to the store file, best of {rounds} rounds (each a new file; "
          f"threads=1; flush every {FLUSH_EVENTS:,} events; CHECKPOINT at the end):")
    print(f"    ingest + write  {_per_event(events, full)}")
    print(f"      fastest round's wall split: ingest {best.ingest:.2f} s, flushes "
          f"{best.flush:.2f} s, final CHECKPOINT {best.checkpoint:.2f} s; rounds (CPU): "
          f"{', '.join(f'{events / t.cpu / 1e6:.2f}M' for t in full)} events/s")
    print(f"    ingest only     {_per_event(events, ingests)}")
    print(f"    write only      {_per_event(events, writes)}")
    print(f"    goal: at least {RATE_GOAL / 1e6:.0f} M events/s on one core (CPU time): "
          f"{cpu_rate / 1e6:.2f} M events/s, {_verdict(cpu_rate >= RATE_GOAL)}")

    if args.quick or args.no_node:
        print("(b) skipped (no node with --quick / --no-node)")
    else:
        delivered, bare, agent_rounds = agent_rate()
        wall_rate = events / statistics.median(t.wall for t in full)
        ratio = wall_rate / delivered
        print(f"(b) agent path to Python (bench_agent_throughput's AsyncScope rounds, same "
              f"run): {delivered:,.0f} events/s median ({min(agent_rounds):,.0f}.."
              f"{max(agent_rounds):,.0f}; the counting tracer: {bare:,.0f})")
        print(f"    goal: ingest to the store (median wall rate, {wall_rate:,.0f} events/s) "
              f"at least {RATIO_GOAL}x the agent path: {ratio:.2f}x, "
              f"{_verdict(ratio >= RATIO_GOAL)}")

    raw, final = raw_size / events, final_size / events
    print(f"(c) file size once closed, over events: as written {raw:.1f} B/event "
          f"({raw_size / 1e6:.1f} MB, {raw_free:.0%} of it free blocks); after "
          f"correlate.finalize ({finalized.wall:.1f} s wall, {finalized.cpu:.1f} s CPU, all "
          f"cores) {final:.1f} B/event ({final_size / 1e6:.1f} MB, {final_free:.0%} free "
          f"blocks)")
    print(f"    goal: at most {BYTES_GOAL} B/event: as written {raw:.1f}, "
          f"{_verdict(raw <= BYTES_GOAL)}; finalized (as the recorder leaves it) "
          f"{final:.1f}, {_verdict(final <= BYTES_GOAL)}")


if __name__ == "__main__":
    main(sys.argv[1:])
