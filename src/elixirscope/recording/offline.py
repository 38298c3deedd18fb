"""Recordings made from agent batches already in hand (tests, benchmarks, replays)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from elixirscope.recording import correlate
from elixirscope.recording.ingest import BatchIngest, Dimensions, SeqCounter
from elixirscope.recording.store import create, put_meta
from elixirscope.recording.writer import StoreWriter


def record_batches(path: str | Path, batches: Iterable[Any], *, node: str = "app@host",
                   offset_ns: int = 0, finalize: bool = True) -> int:
    """Writes ``batches`` (agent format) to a new recording at ``path``; returns the
    number of events. With ``finalize`` the derived tables are built too."""
    con = create(path)
    try:
        dimensions = Dimensions()
        ingest = BatchIngest(node, 1, offset_ns, dimensions, SeqCounter())
        writer = StoreWriter(con, dimensions)
        first_ts: int | None = None
        for batch in batches:
            chunk = ingest.ingest(batch)
            if first_ts is None and chunk.num_rows:
                first_ts = int(chunk.column("ts")[0].as_py())
            writer.add([chunk])
            if writer.pending_events >= 1 << 18:
                writer.flush()
        con.execute("INSERT INTO nodes VALUES (1, ?, NULL, NULL, NULL, ?, ?, ?)",
                    [node, offset_ns, first_ts, ingest.last_ts])
        writer.flush({"agent_stats": asdict(ingest.agent)})
        if finalize:
            correlate.finalize(con)
        else:
            put_meta(con, {"finalized": False})
        return ingest.events
    finally:
        con.close()
