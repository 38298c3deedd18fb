"""A recording as Parquet files for pandas, Polars, DuckDB or Spark: a directory with
``events.parquet``, ``spans.parquet``, ``messages.parquet`` and ``processes.parquet``.

Ids are kept so the files join like the recording's tables do; the names of
processes, functions, nodes and event kinds are joined in next to them, and wall-clock
times (Unix ns) sit next to the node's monotonic ones. The Elixir text of payloads
(``payload_text``, ``message_text``, ``exit_reason_text``) is computed in Python a
chunk at a time; without text every file is written by DuckDB's own ``COPY``.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from elixirscope.recording.export import Source, Texts


class TextColumn(NamedTuple):
    """``text`` is added with the Elixir text of the binary column ``source``, which
    stays in the file when ``keep``."""

    source: str
    text: str
    keep: bool


def _mfa(alias: str) -> str:
    return f"{alias}.module || '.' || {alias}.function || '/' || {alias}.arity"


EVENTS = f"""
SELECT e.seq, e.node_id, n.name AS node, e.pid_id, p.pid, k.name AS kind, e.flags,
       (e.flags & 1) <> 0 AS truncated, e.ts, e.ts + e.wall_offset AS wall_ns, e.hlc,
       e.mfa_id, f.module, f.function, f.arity, {_mfa("f")} AS mfa,
       e.other_pid_id, o.pid AS other_pid, e.caller_mfa_id, {_mfa("cf")} AS caller,
       e.target, e.payload, e.original_size,
       e.span_id, e.parent_span_id, e.message_id, e.correlation_id
FROM events e
LEFT JOIN nodes n ON n.node_id = e.node_id
LEFT JOIN pids p ON p.pid_id = e.pid_id
LEFT JOIN kinds k ON k.kind = e.kind
LEFT JOIN functions f ON f.mfa_id = e.mfa_id
LEFT JOIN pids o ON o.pid_id = e.other_pid_id
LEFT JOIN functions cf ON cf.mfa_id = e.caller_mfa_id
ORDER BY e.seq"""

SPANS = f"""
SELECT s.span_id, s.node_id, n.name AS node, s.pid_id, p.pid, s.mfa_id, f.module,
       f.function, f.arity, {_mfa("f")} AS mfa, s.depth, s.parent_span_id,
       s.start_ts, s.end_ts, s.duration_ns, s.start_ts + c.wall_offset AS start_wall_ns,
       s.end_ts + c.wall_offset AS end_wall_ns, s.end_seq, s.outcome,
       s.trigger_message_id, s.correlation_id
FROM spans s
JOIN events c ON c.seq = s.span_id
LEFT JOIN nodes n ON n.node_id = s.node_id
LEFT JOIN pids p ON p.pid_id = s.pid_id
LEFT JOIN functions f ON f.mfa_id = s.mfa_id
ORDER BY s.span_id"""

MESSAGES = """
SELECT m.message_id, m.node_id, n.name AS node, m.send_seq, m.receive_seq,
       m.sender_pid_id, sp.pid AS sender_pid, m.receiver_pid_id, rp.pid AS receiver_pid,
       m.target, m.sent_ts, m.received_ts, m.handled_ts, m.queue_ns,
       se.ts + se.wall_offset AS sent_wall_ns, re.ts + re.wall_offset AS received_wall_ns,
       m.to_dead, m.send_span_id, m.handler_span_id, me.payload
FROM messages m
LEFT JOIN nodes n ON n.node_id = m.node_id
LEFT JOIN pids sp ON sp.pid_id = m.sender_pid_id
LEFT JOIN pids rp ON rp.pid_id = m.receiver_pid_id
LEFT JOIN events se ON se.seq = m.send_seq
LEFT JOIN events re ON re.seq = m.receive_seq
LEFT JOIN events me ON me.seq = COALESCE(m.send_seq, m.receive_seq)
ORDER BY m.message_id"""

PROCESSES = """
SELECT p.pid_id, p.node_id, n.name AS node, p.pid, p.parent_pid_id, pp.pid AS parent_pid,
       p.initial_call, p.names, p.first_ts, p.last_ts, p.spawned_ts, p.exit_ts,
       p.exit_reason, p.events
FROM processes p
LEFT JOIN nodes n ON n.node_id = p.node_id
LEFT JOIN pids pp ON pp.pid_id = p.parent_pid_id
ORDER BY p.pid_id"""

FILES = {
    "events.parquet": (EVENTS, TextColumn("payload", "payload_text", keep=True)),
    "spans.parquet": (SPANS, None),
    "messages.parquet": (MESSAGES, TextColumn("payload", "message_text", keep=False)),
    "processes.parquet": (PROCESSES, TextColumn("exit_reason", "exit_reason_text", keep=True)),
}


def write_parquet(source: Source, directory: Path, *, text: bool = True) -> dict[str, int]:
    """Writes the four files into ``directory``; returns the rows of each."""
    texts = Texts(source.nodes, enabled=text)
    rows = {}
    for name, (sql, column) in FILES.items():
        target = directory / name
        if column is not None and texts.enabled:
            rows[name] = _write_with_text(source, sql, target, column, texts)
        elif column is not None and not column.keep:
            rows[name] = _copy(source, f"SELECT * EXCLUDE ({column.source}) FROM ({sql})",
                               target)
        else:
            rows[name] = _copy(source, sql, target)
    return rows


def _copy(source: Source, sql: str, target: Path) -> int:
    quoted = str(target).replace("'", "''")
    source.execute(f"COPY ({sql}) TO '{quoted}' (FORMAT PARQUET)")
    return int(pq.ParquetFile(target).metadata.num_rows)


def _write_with_text(source: Source, sql: str, target: Path, column: TextColumn,
                     texts: Texts) -> int:
    rows = 0
    writer: pq.ParquetWriter | None = None
    try:
        for batch in source.batches(sql):
            payloads = batch.column(column.source).to_pylist()
            nodes = batch.column("node_id").to_pylist()
            text = pa.array([texts.term(payload, node) for payload, node in
                             zip(payloads, nodes, strict=True)], pa.string())
            table = pa.Table.from_batches([batch]).append_column(column.text, text)
            if not column.keep:
                table = table.drop_columns([column.source])
            if writer is None:
                writer = pq.ParquetWriter(target, table.schema)
            writer.write_table(table)
            rows += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        _copy(source, f"SELECT *, NULL::VARCHAR AS {column.text} FROM ({sql})"
              if column.keep else
              f"SELECT * EXCLUDE ({column.source}), NULL::VARCHAR AS {column.text} "
              f"FROM ({sql})", target)
    return rows
