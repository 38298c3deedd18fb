"""What every export of a recording shares: opening the file (finalizing it first if it
was not closed cleanly), writing the output safely, the Elixir text of payloads, and
the spans with the ends they are drawn with.

The formats live in ``export_perfetto``, ``export_otlp`` and ``export_parquet``; each
reads the recording with SQL in chunks and streams its output, so a recording of tens
of millions of events never sits in memory as Python objects.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from elixirscope.elixir_format import inspect
from elixirscope.errors import ElixirScopeError
from elixirscope.etf import Atom, decode
from elixirscope.recording import correlate
from elixirscope.recording.store import RecordingError, open_file, read_meta, reading
from elixirscope.tracing.events import TRUNCATED

FORMATS = ("perfetto", "otlp", "parquet")

CHUNK_ROWS = 50_000
"""Rows fetched from DuckDB at a time."""

_CACHED_PAYLOAD_BYTES = 256
_CACHE_ENTRIES = 1 << 16
_NORMAL = Atom("normal")
_SHUTDOWN = Atom("shutdown")


class ExportError(ElixirScopeError):
    """An export that cannot be written where it was asked to go."""


@dataclass(frozen=True)
class Source:
    """An open, finalized recording and what exports need to know about it."""

    path: Path
    con: duckdb.DuckDBPyConnection
    nodes: dict[int, str]
    meta: dict[str, Any]

    def rows(self, sql: str) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of ``sql`` in chunks of ``CHUNK_ROWS`` (read through Arrow, which
        turns columns into Python values faster than row-wise fetching)."""
        for batch in self.batches(sql):
            yield list(zip(*(column.to_pylist() for column in batch.columns), strict=True))

    def batches(self, sql: str) -> Iterator[pa.RecordBatch]:
        """The rows of ``sql`` as Arrow record batches of ``CHUNK_ROWS``."""
        with reading(self.path):
            cur = self.con.cursor()
            try:
                yield from cur.sql(sql).to_arrow_reader(CHUNK_ROWS)
            finally:
                cur.close()

    def one(self, sql: str) -> tuple[Any, ...]:
        """The single row of a summary query."""
        with reading(self.path):
            row = self.con.execute(sql).fetchone()
        if row is None:
            raise RecordingError(f"cannot read {self.path}: a summary query returned nothing")
        return row

    def execute(self, sql: str) -> None:
        with reading(self.path):
            self.con.execute(sql)


@contextmanager
def open_source(path: Path, *, notice: Callable[[str], None] | None = None
                ) -> Iterator[Source]:
    """The recording at ``path``, read-only. A recording that was not closed cleanly
    has its derived tables built first, which needs it writable for a moment."""
    con = open_file(path)
    try:
        with reading(path):
            meta = read_meta(con)
        if meta.get("finalized") is not True:
            con.close()
            if notice:
                notice(f"{path} was not closed cleanly; building its spans and messages "
                       "before exporting")
            _finalize(path)
            con = open_file(path)
            with reading(path):
                meta = read_meta(con)
        with reading(path):
            nodes = dict(con.execute("SELECT node_id, name FROM nodes").fetchall())
        yield Source(path, con, nodes, meta)
    finally:
        con.close()


def _finalize(path: Path) -> None:
    writable = open_file(path, read_only=False)
    try:
        with reading(path):
            correlate.finalize(writable)
    finally:
        writable.close()


# -- output ---------------------------------------------------------------------------

@contextmanager
def output_file(target: Path, recording: Path, *, force: bool) -> Iterator[Path]:
    """A temporary path next to ``target`` that replaces it once the body succeeds, so
    a failed export leaves nothing half-written behind."""
    _check_target(target, recording, force=force, directory=False)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        yield partial
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)


@contextmanager
def output_directory(target: Path, recording: Path, *, force: bool) -> Iterator[Path]:
    """A temporary directory whose files move into ``target`` once the body succeeds;
    other files already in ``target`` are left alone."""
    _check_target(target, recording, force=force, directory=True)
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    partial.mkdir()
    try:
        yield partial
        if target.exists():
            for item in partial.iterdir():
                os.replace(item, target / item.name)
        else:
            os.replace(partial, target)
    finally:
        if partial.exists():
            shutil.rmtree(partial)


def _check_target(target: Path, recording: Path, *, force: bool, directory: bool) -> None:
    if target.exists() and target.resolve() == recording.resolve():
        raise ExportError(f"{target} is the recording itself; choose another output path")
    if not target.parent.is_dir():
        raise ExportError(f"the directory {target.parent} does not exist")
    if not target.exists():
        return
    if not force:
        raise ExportError(f"{target} already exists; pass --force to replace it")
    if directory and not target.is_dir():
        raise ExportError(f"{target} is a file, but a parquet export writes a directory")
    if not directory and target.is_dir():
        raise ExportError(f"{target} is a directory; choose a file path")


# -- text -----------------------------------------------------------------------------

class Texts:
    """Payloads as Elixir prints them, with small payloads cached (the same messages
    and arguments come back again and again). ``enabled=False`` gives ``None`` for
    every text, for exports that skip the cost."""

    def __init__(self, nodes: dict[int, str], *, enabled: bool = True) -> None:
        self.nodes = nodes
        self.enabled = enabled
        self._cache: dict[tuple[bytes, int], str] = {}

    def term(self, payload: bytes | None, node_id: int, flags: int = 0) -> str | None:
        """The term's text; `` (truncated)`` follows a payload the agent cut short."""
        if not self.enabled or payload is None:
            return None
        text = self._text(payload, node_id, args=False)
        return f"{text} (truncated)" if flags & TRUNCATED else text

    def args(self, payload: bytes | None, node_id: int, flags: int = 0) -> str | None:
        """A call's argument list as ``1, :a, "x"`` (no brackets)."""
        if not self.enabled or payload is None:
            return None
        text = self._text(payload, node_id, args=True)
        return f"{text} (truncated)" if flags & TRUNCATED else text

    def _text(self, payload: bytes, node_id: int, *, args: bool) -> str:
        key = (payload, node_id if not args else -1 - node_id)
        found = self._cache.get(key)
        if found is not None:
            return found
        text = term_text(payload, self.nodes.get(node_id), args=args)
        if len(payload) <= _CACHED_PAYLOAD_BYTES:
            if len(self._cache) >= _CACHE_ENTRIES:
                self._cache.clear()
            self._cache[key] = text
        return text


def term_text(payload: bytes, node: str | None, *, args: bool = False) -> str:
    """One payload as Elixir prints it; pids of ``node`` print as ``#PID<0.…>``."""
    try:
        term = decode(payload)
    except ElixirScopeError:
        return f"#ElixirScope.Undecodable<{len(payload)} bytes>"
    if args and isinstance(term, list):
        return ", ".join(inspect(arg, local_node=node) for arg in term)
    return inspect(term, local_node=node)


def cut(text: str, length: int) -> str:
    return text if len(text) <= length else text[: length - 1] + "…"


# -- spans ----------------------------------------------------------------------------

SPAN_ENDS = """
WITH RECURSIVE up(span_id, ancestor, ancestor_end) AS (
    SELECT span_id, parent_span_id, NULL::BIGINT FROM spans WHERE end_ts IS NULL
    UNION ALL
    SELECT up.span_id, a.parent_span_id, a.end_ts
    FROM up JOIN spans a ON a.span_id = up.ancestor
    WHERE up.ancestor_end IS NULL
),
span_ends AS (SELECT span_id, MIN(ancestor_end) AS ancestor_end FROM up GROUP BY span_id)
"""
"""Where spans that never ended are drawn to end: their process's last event, or the
end of their nearest ancestor that did end, whichever comes first (so a span whose
return was lost still nests inside its caller). Starts a query that uses ``SPAN_JOINS``."""

SPAN_COLUMNS = """
    s.span_id, s.node_id, s.pid_id, f.module, f.function, f.arity, s.depth,
    s.parent_span_id, s.start_ts,
    CASE WHEN s.end_ts IS NOT NULL THEN s.end_ts
         ELSE GREATEST(s.start_ts, LEAST(COALESCE(p.last_ts, s.start_ts),
                                         COALESCE(o.ancestor_end, p.last_ts, s.start_ts)))
    END AS end_ts,
    s.outcome, c.wall_offset, c.payload AS call_payload, c.flags AS call_flags,
    x.kind AS end_kind, x.payload AS end_payload, x.flags AS end_flags,
    s.trigger_message_id, s.correlation_id
"""
"""Spans with what drawing them needs; ``end_kind`` is the event that closed them
(return, exception or exit) and ``end_payload`` its value, exception or exit reason."""

SPAN_JOINS = """
FROM spans s
JOIN functions f ON f.mfa_id = s.mfa_id
JOIN events c ON c.seq = s.span_id
LEFT JOIN events x ON x.seq = s.end_seq
LEFT JOIN processes p ON p.pid_id = s.pid_id
LEFT JOIN span_ends o ON o.span_id = s.span_id
"""


def mfa_text(module: str, function: str, arity: int) -> str:
    """``Bank.Account.deposit/2``; ``module`` is already as Elixir writes it."""
    return f"{module}.{function}/{arity}"


def is_crash(payload: bytes | None) -> bool:
    """Whether an exit reason is abnormal: anything but ``:normal``, ``:shutdown`` and
    ``{:shutdown, _}``."""
    if payload is None:
        return False
    try:
        reason = decode(payload)
    except ElixirScopeError:
        return True
    if reason in (_NORMAL, _SHUTDOWN):
        return False
    return not (isinstance(reason, tuple) and len(reason) == 2 and reason[0] == _SHUTDOWN)
