"""Correlation: builds the derived tables of a recording, and the derived columns of
its events, in one transaction of set-based SQL (``correlate_sql``).

Spans. Per process in ``seq`` order, a call marked RETURN_EXPECTED opens a level and
a return or exception closes one; a call pairs with the next span event at its own
level when that is a return/exception of the same function. Pairing is relative, so
returns of calls made before recording started (the depth goes below zero) and lost
events cost only the spans they touch. Calls that never return are closed by their
process's exit when it was recorded ('exit'), else left 'open'. depth counts from
the outermost recorded call (1). An event belongs to the innermost span open on its
process (a return or exception that pairs with no call belongs to none); a span's
root is its depth-1 ancestor, or its outermost recorded one when the process was
already inside calls when recording started.

Messages. A process's receives of some bytes take the sends of those bytes to it
first in, first out: each receive takes the oldest send before it (by wall clock)
that no earlier receive took, or none when its send came before the recording. Sends
to dead processes are never matched. Trade-off: a lost receive makes later receives
of the same bytes at that process pair with the copy sent one earlier; messages with
other bytes are never touched.

Handlers. A behaviour callback (handle_call/3, handle_cast/2, handle_info/2) at depth
1 serves the messages of its kind (call, cast, other) first in, first out, after those
already queued when its process's tracing began (the agent's mailbox record counts
them): a backlog's callbacks have no trigger instead of a later message's, and a
timer's message is never the trigger of a callback that served a call or a cast.
Other depth-1 spans serve the message received last before them, if it came after the
process's previous depth-1 span. Receive events fire when the message reaches the
mailbox, so queue_ns runs from arrival to the handler's start.

Correlation. A depth-1 span triggered by a message joins the causal tree of the span
that sent it (that span's root's correlation); other roots start a tree (their own
id), and every span takes its root's correlation. The chain is followed by pointer
doubling, so even a chain of 2^64 hops settles in 64 rounds; a link must point back
in (hlc, span_id) order, so no cycle can form (a cross-node link against a clock
skew larger than the latency is not followed).
Message events outside any span take the correlation of the span that sent them.

Activity bins. Events and error events per (time bin, process) at the finest width the
UI's timeline uses for a recording this long (``schema.bin_shift_for``), so the UI
opens a finished recording by reading them instead of grouping every event; the meta
says what they assume (origin, width, error kinds, the events counted).
"""

from __future__ import annotations

import os
from collections.abc import Callable

import duckdb

from elixirscope.elixir_format import inspect
from elixirscope.errors import ETFDecodeError
from elixirscope.etf import Atom, decode
from elixirscope.recording import correlate_sql as sql
from elixirscope.recording import schema
from elixirscope.recording.store import put_meta
from elixirscope.tracing.events import KIND_CODES

MAX_CHAIN_ROUNDS = 64
BACKLOG = Atom("backlog")
# What finalize does, in order (for progress reports).
PHASES = ("spans", "messages", "causal chains", "event columns", "processes",
          "activity bins")
Progress = Callable[[str, int, int], None]
# Events the timeline marks as errors in its activity bins.
ERROR_KINDS = (KIND_CODES["exception"], KIND_CODES["exit"])


def finalize(con: duckdb.DuckDBPyConnection, *, threads: int | None = None,
             progress: Progress | None = None) -> None:
    """Rebuilds the derived tables and the derived event columns, then marks the
    recording finalized; all or nothing. Runs with ``threads`` DuckDB threads (all
    cores by default), restoring the connection's setting afterwards. ``progress`` is
    called as each phase begins, with its name (one of ``PHASES``), its number from 1
    and how many there are."""
    cur = con.cursor()
    previous = cur.execute("SELECT current_setting('threads')").fetchone()
    try:
        cur.execute(f"SET threads = {int(threads or _cores())}")
        cur.execute("BEGIN")
        try:
            _build(cur, progress)
            put_meta(cur, {"finalized": True})
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
    finally:
        if previous is not None:
            cur.execute(f"SET threads = {int(previous[0])}")
        cur.close()


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0)) or 1
    return os.cpu_count() or 1


def _build(cur: duckdb.DuckDBPyConnection, progress: Progress | None) -> None:
    def begin(phase: str) -> None:
        if progress is not None:
            progress(phase, PHASES.index(phase) + 1, len(PHASES))

    begin("spans")
    for name, ddl in schema.DERIVED_TABLES.items():
        cur.execute(f"DROP TABLE IF EXISTS {name}")
        cur.execute(ddl)
    for step in (sql.EVENT_DEPTH, sql.LOOKUPS, "DROP TABLE fz_ev", sql.FIRST_CLOSES,
                 sql.SPANS):
        cur.execute(step)
    begin("messages")
    _load_backlog(cur)
    for step in (sql.MATCHES, sql.MESSAGES, sql.TRIGGERS):
        cur.execute(step)
    begin("causal chains")
    cur.execute(sql.CHAIN)
    for _ in range(MAX_CHAIN_ROUNDS):
        changed = cur.execute(sql.CHAIN_STEP).fetchone()
        if not changed or not changed[0]:
            break
    for step in (sql.INSERT_SPANS, sql.INSERT_MESSAGES):
        cur.execute(step)
    begin("event columns")
    _rewrite_events(cur)
    begin("processes")
    _load_names(cur)
    for step in (sql.INSERT_PROCESS_NAMES, sql.INSERT_SNAPSHOT_NAMES, sql.INSERT_PROCESSES,
                 sql.INSERT_LINKS):
        cur.execute(step)
    for table in sql.WORK_TABLES:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
    begin("activity bins")
    _activity_bins(cur)


def _activity_bins(cur: duckdb.DuckDBPyConnection) -> None:
    """The UI's finest activity bins (schema: activity_bins), with what they assume in
    the meta: the UI reads them instead of grouping every event when it agrees."""
    row = cur.execute(sql.ACTIVITY_EXTENT).fetchone()
    node_start, node_end, first, last, last_seq, events = row if row else (None,) * 6
    origin = node_start if node_start is not None else first if first is not None else 0
    end = max(x for x in (last if last is not None else origin, node_end) if x is not None)
    shift = schema.bin_shift_for(max(int(end - origin), 1))
    cur.execute(sql.ACTIVITY_BINS.format(origin=int(origin), shift=shift,
                                         lane_bits=schema.BIN_LANE_BITS,
                                         errors=ERROR_KINDS))
    put_meta(cur, {schema.ACTIVITY_BINS_META: {
        "origin_wall_ns": int(origin), "shift": shift, "lane_bits": schema.BIN_LANE_BITS,
        "error_kinds": list(ERROR_KINDS), "events": int(events or 0),
        "last_seq": -1 if last_seq is None else int(last_seq)}})


def _rewrite_events(cur: duckdb.DuckDBPyConnection) -> None:
    """A new events table with the derived columns filled in (cheaper than UPDATE)."""
    ddl = schema.EVENTS.replace("EXISTS events (", "EXISTS events_new (", 1)
    if ddl == schema.EVENTS:
        raise RuntimeError("schema.EVENTS no longer reads CREATE TABLE IF NOT EXISTS events (")
    cur.execute("DROP TABLE IF EXISTS events_new")
    cur.execute(ddl)
    cur.execute(sql.REWRITE_EVENTS)
    cur.execute("DROP TABLE events")
    cur.execute("ALTER TABLE events_new RENAME TO events")


def _load_backlog(cur: duckdb.DuckDBPyConnection) -> None:
    """fz_backlog: per process and kind of message (call, cast, info), how many were
    queued when its tracing began, from the agent's mailbox records; n is NULL where
    the agent could not count them (a very long queue)."""
    cur.execute("CREATE OR REPLACE TEMP TABLE fz_backlog "
                "(pid_id INTEGER, category VARCHAR, n BIGINT)")
    rows: list[tuple[int, str, int | None]] = []
    for pid_id, payload in cur.execute(sql.MAILBOX_PAYLOADS).fetchall():
        try:
            mailbox = decode(payload)
        except ETFDecodeError:
            continue
        backlog = mailbox.get(BACKLOG) if isinstance(mailbox, dict) else None
        for category in ("call", "cast", "info"):
            count = backlog.get(Atom(category)) if isinstance(backlog, dict) else None
            rows.append((pid_id, category, count if isinstance(count, int) else None))
    if rows:
        cur.executemany("INSERT INTO fz_backlog VALUES (?, ?, ?)", rows)


def _load_names(cur: duckdb.DuckDBPyConnection) -> None:
    """Registered names, decoded from the few distinct register/unregister payloads."""
    cur.execute("CREATE OR REPLACE TEMP TABLE fz_names (payload BLOB, name VARCHAR)")
    rows = []
    for (payload,) in cur.execute(sql.NAME_PAYLOADS).fetchall():
        name = name_text(payload)
        if name is not None:
            rows.append((payload, name))
    if rows:
        cur.executemany("INSERT INTO fz_names VALUES (?, ?)", rows)


def name_text(payload: bytes) -> str | None:
    """A registered name as Elixir writes it (``:bank``, ``Bank.Registry``)."""
    try:
        return inspect(decode(payload))
    except ETFDecodeError:
        return None
