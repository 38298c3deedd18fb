"""What the UI reads from a recording, finished or still being written.

A finished recording is read through ``open_recording`` (its ``Recording`` answers
the inspector, search, causes and time travel) plus SQL of our own over cursors of
its connection for the timeline. A live one is read through cursors of the
recorder's own connection: a cursor is a separate DuckDB connection to the same
database instance, so it sees every transaction the writer thread has committed
(each flush) and never blocks it. While recording only the raw event columns exist;
spans and message arrows are then paired inside the window asked for, and the
derived tables take over when the recording is finished.

Times in the API are seconds from the recording's start; inside, integer ns from it.
"""

from __future__ import annotations

import bisect
import contextlib
import functools
import re
import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import numpy.typing as npt

from elixirscope.analysis import metrics
from elixirscope.analysis.waits_graph import Edge, graph_of, resolved_waits
from elixirscope.diagnosis.finding import Finding
from elixirscope.errors import ElixirScopeError
from elixirscope.recording.query import clean_exit
from elixirscope.recording.results import (
    Event,
    event_from_row,
    mfa_text,
    payload_text,
)
from elixirscope.recording.schema import ACTIVITY_BINS_META
from elixirscope.recording.state_results import StateTransition
from elixirscope.recording.store import RecordingError, read_meta
from elixirscope.recordings import QueryError, Recording, open_recording
from elixirscope.tracing.events import KIND_CODES, KINDS
from elixirscope.web.lod import (
    LANE_BITS,
    OUTCOMES,
    Pyramid,
    SpanIndex,
    SpanRows,
    base_shift_for,
)

if TYPE_CHECKING:
    from elixirscope.recording.recorder import Recorder

# A window with at most this many events (on the lanes asked for) is shown event by
# event; a larger one as bins of activity.
DETAIL_EVENTS = 3000
TEXT_LIMIT = 20_000
LIVE_REFRESH_S = 0.5
STACK_FRAMES = 50  # an exception's recorded stack, innermost first, in its detail
ERROR_KINDS = (KIND_CODES["exception"], KIND_CODES["exit"])
MARK_KINDS = (KIND_CODES["spawn"], KIND_CODES["spawned"], KIND_CODES["exit"])
MESSAGE_KINDS = (KIND_CODES["send"], KIND_CODES["send_to_dead"], KIND_CODES["receive"])
_FUNCTION = re.compile(r"^(?P<module>(?::[a-z_][\w@]*|[A-Z][\w.]*))\.(?P<function>[a-z_][\w?!]*)"
                       r"(?:/(?P<arity>\d+))?$")
_PID = re.compile(r"^(?:#PID)?<\d+\.\d+\.\d+>$")


class UIError(ElixirScopeError):
    """A request the UI cannot answer: ``status`` is the HTTP status to send."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def _short(text: str, width: int = 120) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _cut(text: str | None) -> str | None:
    if text is None or len(text) <= TEXT_LIMIT:
        return text
    return text[:TEXT_LIMIT] + f"… ({len(text) - TEXT_LIMIT:,} more characters)"


@dataclass
class Dims:
    """The small tables: nodes, pids, functions, names; and where time starts."""

    nodes: dict[int, dict[str, Any]]
    pids: dict[int, tuple[str, int]]
    functions: dict[int, tuple[str, str, int]]
    names: dict[int, tuple[str, ...]]
    start_wall_ns: int

    def label(self, pid_id: int | None) -> str | None:
        if pid_id is None or pid_id not in self.pids:
            return None
        names = self.names.get(pid_id)
        return names[0] if names else self.pids[pid_id][0]

    def mfa(self, mfa_id: int | None) -> str | None:
        found = self.functions.get(mfa_id) if mfa_id is not None else None
        return mfa_text(*found) if found else None


class View:
    """One recording as the UI sees it (see the module doc)."""

    def __init__(self, path: Path, con: duckdb.DuckDBPyConnection, *,
                 recording: Recording | None = None,
                 live_names: Callable[[], dict[int, str]] | None = None) -> None:
        self.path = path
        self._con = con
        self.recording = recording
        self.live = recording is None
        self._live_names = live_names or dict
        self._lock = threading.RLock()  # the Recording's connection is not shared
        self._refresh_lock = threading.Lock()
        self._refreshed = 0.0
        self._last_seq = -1
        self._spans: SpanIndex | None = None
        self._spans_ready = threading.Event()
        self._histories: dict[int, list[Any]] = {}
        self._findings: list[dict[str, Any]] | None = None
        self._requests: list[dict[str, Any]] | None = None
        self._wait_edges: list[Edge] | None = None
        self.closed = False
        self.built: dict[str, float] = {}
        started = time.perf_counter()
        self.dims = self._load_dims()
        self.duration_ns = self._duration_ns()
        shift = base_shift_for(self.duration_ns) if not self.live else 20
        empty = np.zeros(0, dtype=np.int64)
        self.pyramid = Pyramid(shift, empty, empty, empty, fill=not self.live)
        self.pyramid_source = "events"  # or "activity_bins": stored by finalize
        self._marks: list[tuple[int, int, int, int, bool]] = []
        self._load_new_events()
        self.built["pyramid_s"] = time.perf_counter() - started
        if not self.live:
            threading.Thread(target=self._build_spans, name="elixirscope-span-index",
                             daemon=True).start()

    # --- opening ------------------------------------------------------------------------

    @classmethod
    def finished(cls, path: str | Path) -> View:
        recording = open_recording(path)
        try:
            return cls(Path(path), recording.con, recording=recording)
        except BaseException:
            recording.close()
            raise

    @classmethod
    def of_recorder(cls, recorder: Recorder) -> View:
        """The recording ``recorder`` is writing, read through its own connection."""
        return cls(recorder.path, recorder.connection, live_names=recorder.start_names)

    def close(self) -> None:
        if not self.live:
            self._spans_ready.wait(60)  # the span index's cursor must end first
        self.closed = True
        if self.recording is not None:
            with self._lock:
                self.recording.close()

    @contextlib.contextmanager
    def cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        if self.closed:
            raise UIError("the recording is being finished; try again in a moment", 503)
        try:
            # The connection serves one call at a time: a cursor is made while no
            # Recording query runs on it (those hold the lock too).
            with self._lock:
                cur = self._con.cursor()
        except duckdb.Error as exc:
            raise UIError("the recording is being finished; try again in a moment",
                          503) from exc
        try:
            yield cur
        except duckdb.Error as exc:
            raise UIError(f"cannot read {self.path}: {str(exc).splitlines()[0]}", 500) \
                from exc
        finally:
            cur.close()

    def _load_dims(self) -> Dims:
        with self.cursor() as cur:
            nodes = {}
            for (node_id, name, otp, erts, elixir, offset, started, ended) in cur.execute(
                    "SELECT node_id, name, otp_release, erts_version, elixir_version, "
                    "time_offset_ns, started_ts, ended_ts FROM nodes").fetchall():
                nodes[node_id] = {"node_id": node_id, "name": name, "otp_release": otp,
                                  "erts_version": erts, "elixir_version": elixir,
                                  "offset": offset, "started_ts": started,
                                  "ended_ts": ended}
            starts = [n["started_ts"] + n["offset"] for n in nodes.values()
                      if n["started_ts"] is not None]
            if not starts:
                first = cur.execute("SELECT min(ts + wall_offset) FROM events").fetchone()
                starts = [first[0]] if first and first[0] is not None else [0]
            pids = {pid_id: (pid, node_id) for pid_id, node_id, pid in
                    cur.execute("SELECT pid_id, node_id, pid FROM pids").fetchall()}
            functions = {row[0]: (row[1], row[2], row[3]) for row in cur.execute(
                "SELECT mfa_id, module, function, arity FROM functions").fetchall()}
            names: dict[int, tuple[str, ...]]
            if self.live:
                names = {pid_id: (name,) for pid_id, name in self._live_names().items()}
            else:
                names = {pid_id: tuple(found) for pid_id, found in cur.execute(
                    "SELECT pid_id, names FROM processes").fetchall() if found}
        return Dims(nodes, pids, functions, names, min(starts))

    def _duration_ns(self) -> int:
        with self.cursor() as cur:
            row = cur.execute("SELECT max(ts + wall_offset) FROM events").fetchone()
        last = row[0] if row and row[0] is not None else self.dims.start_wall_ns
        ends = [n["ended_ts"] + n["offset"] for n in self.dims.nodes.values()
                if n["ended_ts"] is not None]
        end = max([last, *ends])
        if self.live:
            end = max(end, time.time_ns())
        return max(int(end - self.dims.start_wall_ns), 1)

    def _load_new_events(self) -> None:
        """Adds the events after the last one seen to the pyramid and the marks."""
        start = self.dims.start_wall_ns
        with self.cursor() as cur:
            row = cur.execute("SELECT max(seq) FROM events").fetchone()
            top = -1 if not row or row[0] is None else int(row[0])
            if top <= self._last_seq:
                return
            window = "seq > ? AND seq <= ?"
            params = [self._last_seq, top]
            found = self._stored_bins(cur, top)
            self.pyramid_source = "activity_bins" if found is not None else "events"
            if found is None:
                found = self._grouped_bins(cur, self._last_seq, top)
            marks = cur.execute(
                f"SELECT seq, pid_id, kind, ts + wall_offset - {int(start)}, payload "
                f"FROM events WHERE {window} AND kind IN {MARK_KINDS} ORDER BY seq",
                params).fetchall()
        self.pyramid.extend(np.asarray(found["key"], dtype=np.int64),
                            np.asarray(found["n"], dtype=np.int64),
                            np.asarray(found["e"], dtype=np.int64))
        self._marks.extend((seq, pid_id, kind, int(t), kind == KIND_CODES["exit"]
                            and not clean_exit(bytes(payload)))
                           for seq, pid_id, kind, t, payload in marks)
        self._last_seq = top

    def _grouped_bins(self, cur: duckdb.DuckDBPyConnection, after_seq: int,
                      top: int) -> dict[str, Any]:
        """Finest-level rows (``key``, ``n``, ``e``) of the events with ``seq`` in
        ``(after_seq, top]``, grouped from the events themselves."""
        start = int(self.dims.start_wall_ns)
        return cur.execute(
            f"SELECT ((greatest(ts + wall_offset - {start}, 0) >> "
            f"{self.pyramid.base_shift}) << {LANE_BITS}) | pid_id AS key, "
            f"count(*)::BIGINT AS n, "
            f"(count(*) FILTER (WHERE kind IN {ERROR_KINDS}))::BIGINT AS e "
            f"FROM events WHERE seq > ? AND seq <= ? GROUP BY key",
            [after_seq, top]).fetchnumpy()

    def _stored_bins(self, cur: duckdb.DuckDBPyConnection,
                     top: int) -> dict[str, Any] | None:
        """A finished recording's finest bins as finalize stored them (``key``, ``n``,
        ``e``), when they were made of these events (``seq`` up to ``top``, none seen
        yet) with the origin, width, key layout and error kinds used here; else None
        (an older file, a live one, or anything that disagrees: grouped afresh)."""
        if self.live or self._last_seq != -1:
            return None
        stored = read_meta(cur).get(ACTIVITY_BINS_META)
        if not isinstance(stored, dict) or stored != {
                "origin_wall_ns": int(self.dims.start_wall_ns),
                "shift": self.pyramid.base_shift, "lane_bits": LANE_BITS,
                "error_kinds": list(ERROR_KINDS), "last_seq": top,
                "events": stored.get("events")}:
            return None
        try:
            (events,) = cur.execute("SELECT count(*) FROM events").fetchall()[0]
            # (a relation's fetchnumpy: a third of the time execute's takes here)
            found = cur.sql("SELECT key, events AS n, errors AS e FROM activity_bins"
                            ).fetchnumpy()
        except duckdb.CatalogException:  # the table was dropped since
            return None
        counts = np.asarray(found["n"], dtype=np.int64)
        if not int(events) == stored["events"] == int(counts.sum()):
            return None
        return found

    def refresh(self) -> bool:
        """A live recording: takes in what the writer has flushed since the last call
        (at most every ``LIVE_REFRESH_S``). True when something new arrived."""
        if not self.live:
            return False
        with self._refresh_lock:
            if time.monotonic() - self._refreshed < LIVE_REFRESH_S:
                return False
            self._refreshed = time.monotonic()
            before = self._last_seq
            dims = self._load_dims()
            self.dims = dims
            self.duration_ns = self._duration_ns()
            self._load_new_events()
            return self._last_seq != before

    def _build_spans(self) -> None:
        started = time.perf_counter()
        try:
            start = self.dims.start_wall_ns
            end = self.duration_ns
            with self.cursor() as cur:
                cols = cur.execute(
                    f"SELECT s.span_id, s.pid_id, s.mfa_id, s.depth, "
                    f"s.start_ts + n.time_offset_ns - {int(start)} AS st, "
                    f"coalesce(s.end_ts + n.time_offset_ns - {int(start)}, {end}) AS en, "
                    f"(CASE s.outcome WHEN 'return' THEN 0 WHEN 'exception' THEN 1 "
                    f"WHEN 'exit' THEN 2 ELSE 3 END)::TINYINT AS oc "
                    f"FROM spans s JOIN nodes n USING (node_id)").fetchnumpy()
            def column(name: str) -> npt.NDArray[np.int64]:
                return np.asarray(cols[name], dtype=np.int64)

            self._spans = SpanIndex(SpanRows(
                span_id=column("span_id"), pid_id=column("pid_id"), mfa_id=column("mfa_id"),
                depth=column("depth"), start=column("st"), end=column("en"),
                outcome=np.asarray(cols["oc"], dtype=np.int8)))
        except (UIError, duckdb.Error):
            self._spans = None
        finally:
            self.built["span_index_s"] = time.perf_counter() - started
            self._spans_ready.set()

    def span_index(self, timeout: float = 30.0) -> SpanIndex | None:
        self._spans_ready.wait(timeout)
        return self._spans

    # --- conversions --------------------------------------------------------------------

    def ns(self, seconds: float) -> int:
        return round(seconds * 1e9)

    def sec(self, ns: int | float) -> float:
        return round(float(ns) / 1e9, 9)

    def _raw_window(self, lo_ns: int, hi_ns: int) -> tuple[str, list[int]]:
        """A WHERE part on the bare ``ts`` (row groups skipped by min/max) and on the
        exact wall-clock time."""
        offsets = [n["offset"] for n in self.dims.nodes.values()] or [0]
        start = self.dims.start_wall_ns
        return ("ts >= ? AND ts < ? AND ts + wall_offset >= ? AND ts + wall_offset < ?",
                [start + lo_ns - max(offsets), start + hi_ns - min(offsets),
                 start + lo_ns, start + hi_ns])

    # --- facts --------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        self.refresh()
        dims = self.dims
        with self.cursor() as cur:
            meta = read_meta(cur)
            losses = cur.execute(
                f"SELECT before_seq, ts + coalesce(n.time_offset_ns, 0) - "
                f"{int(dims.start_wall_ns)}, source, events, batches FROM losses l "
                f"LEFT JOIN nodes n USING (node_id) ORDER BY before_seq").fetchall()
            trips = cur.execute("SELECT wall_ns, what, detail FROM session_events "
                                "ORDER BY wall_ns").fetchall()
            counts = {"events": self.pyramid.events}
            if not self.live:
                for table in ("spans", "messages", "processes"):
                    row = cur.execute(f"SELECT count(*) FROM {table}").fetchone()
                    counts[table] = int(row[0]) if row else 0
        return {
            "path": str(self.path), "name": self.path.name, "live": self.live,
            "duration": self.sec(self.duration_ns), "counts": counts,
            "start_wall_ns": dims.start_wall_ns,
            "nodes": [{key: node[key] for key in ("node_id", "name", "otp_release",
                                                  "erts_version", "elixir_version")}
                      for node in dims.nodes.values()],
            "kinds": KINDS,
            "losses": [{"before_seq": seq, "time": None if t is None else self.sec(t),
                        "source": source, "events": events, "batches": batches}
                       for seq, t, source, events, batches in losses],
            "session_events": [{"time": self.sec(wall - dims.start_wall_ns), "what": what,
                                "detail": detail} for wall, what, detail in trips],
            "meta": {key: meta.get(key) for key in (
                "traces", "limits", "ring", "drops", "agent_stats", "ring_stats", "breaker",
                "recorder_version", "finalized")},
            "recovered": bool(self.recording.recovered) if self.recording else False,
            "time_travel": self.recording is not None
            and hasattr(self.recording, "state_history"),
            "built": {key: round(value, 4) for key, value in self.built.items()},
        }

    def rate(self, bins: int) -> dict[str, Any]:
        """Events over the whole recording in at most ``bins`` bins (the minimap)."""
        bins = max(1, min(bins, 4000))
        shift = self.pyramid.shift_for(0, self.duration_ns, bins)
        index, counts, errors = self.pyramid.totals(shift)
        return {"bin": self.sec(1 << shift), "duration": self.sec(self.duration_ns),
                "b": index.tolist(), "n": counts.tolist(), "e": errors.tolist(),
                "marks": self._mark_rows(0, self.duration_ns, None, crashes_only=True)}

    # --- lanes --------------------------------------------------------------------------

    def lanes(self) -> list[dict[str, Any]]:
        """Every process, in the order the timeline shows them: by node, then as a
        tree of who spawned whom, busiest roots first."""
        dims = self.dims
        start = dims.start_wall_ns
        totals = self.pyramid.lane_totals()
        rows: dict[int, dict[str, Any]] = {}
        with self.cursor() as cur:
            if self.live:
                for pid_id, (pid, node_id) in dims.pids.items():
                    rows[pid_id] = {"pid_id": pid_id, "pid": pid, "node_id": node_id,
                                    "parent": None, "initial_call": None,
                                    "first": None, "last": None, "spawned": None,
                                    "exited": None, "exit_reason": None}
                for seq, pid_id, kind, t, crash in self._marks:
                    del seq, crash
                    row = rows.get(pid_id)
                    if row is None:
                        continue
                    if kind == KIND_CODES["exit"]:
                        row["exited"] = self.sec(t)
                found = cur.execute(
                    "SELECT pid_id, other_pid_id, kind, mfa_id, payload FROM events "
                    f"WHERE kind IN {MARK_KINDS}").fetchall()
                for pid_id, other, kind, mfa_id, payload in found:
                    if kind == KIND_CODES["spawn"] and other in rows:
                        rows[other]["parent"] = pid_id
                        rows[other]["initial_call"] = dims.mfa(mfa_id)
                    elif kind == KIND_CODES["exit"] and pid_id in rows:
                        rows[pid_id]["exit_reason"] = _short(
                            payload_text(bytes(payload), None), 300)
            else:
                for (pid_id, node_id, pid, parent, initial_call, first, last, spawned,
                     exit_ts, reason) in cur.execute(
                        "SELECT p.pid_id, p.node_id, p.pid, p.parent_pid_id, p.initial_call, "
                        "p.first_ts + n.time_offset_ns, p.last_ts + n.time_offset_ns, "
                        "p.spawned_ts + n.time_offset_ns, p.exit_ts + n.time_offset_ns, "
                        "p.exit_reason FROM processes p "
                        "LEFT JOIN nodes n USING (node_id)").fetchall():
                    rows[pid_id] = {
                        "pid_id": pid_id, "pid": pid, "node_id": node_id, "parent": parent,
                        "initial_call": initial_call,
                        "first": None if first is None else self.sec(first - start),
                        "last": None if last is None else self.sec(last - start),
                        "spawned": None if spawned is None else self.sec(spawned - start),
                        "exited": None if exit_ts is None else self.sec(exit_ts - start),
                        "exit_reason": None if reason is None else _short(
                            payload_text(bytes(reason), None), 300)}
        crashed = {pid_id for _, pid_id, _, _, crash in self._marks if crash}
        for pid_id, row in rows.items():
            row["name"] = (dims.names.get(pid_id) or (None,))[0]
            row["node"] = dims.nodes.get(row["node_id"], {}).get("name", "")
            row["events"] = totals.get(pid_id, 0)
            row["crashed"] = pid_id in crashed
        return _tree_order(rows)

    # --- the timeline -------------------------------------------------------------------

    def timeline(self, t0: float, t1: float, px: int,
                 lanes: list[int] | None) -> dict[str, Any]:
        """The window ``[t0, t1)`` for a canvas ``px`` wide: bins of activity per lane
        when it holds more than ``DETAIL_EVENTS`` events, else every event, span and
        message in it."""
        started = time.perf_counter()
        self.refresh()
        if not t1 > t0:
            raise UIError("t1 must be after t0")
        px = max(50, min(int(px), 8000))
        lo, hi = self.ns(t0), self.ns(t1)
        lane_array = None if lanes is None else np.asarray(lanes, dtype=np.int64)
        estimate = self.pyramid.count(lo, hi, lane_array)
        out: dict[str, Any] = {"t0": t0, "t1": t1, "px": px, "estimate": estimate,
                               "duration": self.sec(self.duration_ns), "live": self.live}
        if estimate <= DETAIL_EVENTS:
            out.update(self._detail(lo, hi, lane_array))
        else:
            out.update(self._bins(lo, hi, px, lane_array))
        out["marks"] = self._mark_rows(lo, hi, lane_array, crashes_only=out["mode"] == "bins")
        mfa_ids = {row[6] for row in out.get("spans", [])} | {
            row[4] for row in out.get("events", []) if row[4] is not None}
        out["functions"] = {str(m): self.dims.mfa(m) for m in mfa_ids if m is not None}
        out["server_ms"] = round((time.perf_counter() - started) * 1000, 2)
        return out

    def _bins(self, lo: int, hi: int, px: int,
              lanes: npt.NDArray[np.int64] | None) -> dict[str, Any]:
        pyramid = self.pyramid
        shift = pyramid.shift_for(lo, hi, max(px // 2, 1))
        level = pyramid.level(shift)
        part = level.window(lo, hi)
        keys = level.keys[part]
        counts = level.counts[part]
        errors = level.errors[part]
        pids = keys & ((1 << LANE_BITS) - 1)
        if lanes is not None:
            keep = np.isin(pids, lanes)
            keys, counts, errors, pids = keys[keep], counts[keep], errors[keep], pids[keep]
        bins = keys >> LANE_BITS
        order = np.lexsort((bins, pids))
        pids, bins, counts, errors = pids[order], bins[order], counts[order], errors[order]
        by_lane: dict[str, Any] = {}
        if pids.size:
            cuts = np.flatnonzero(np.diff(pids)) + 1
            for chunk in np.split(np.arange(pids.size), cuts):
                lane = str(int(pids[chunk[0]]))
                by_lane[lane] = {"b": bins[chunk].tolist(), "n": counts[chunk].tolist(),
                                 "e": errors[chunk].tolist()}
        spans: list[list[Any]] = []
        index = None if self.live else self.span_index(timeout=0)
        if index is not None:
            width_ns = max((hi - lo) / px, 1)
            rows = index.query(lo, hi, min_duration=int(width_ns * 4), lanes=lanes,
                               limit=4000)
            spans = self._span_rows(index, rows)
        return {"mode": "bins", "bin": self.sec(1 << shift), "bins": by_lane,
                "spans": spans, "events": [], "messages": []}

    def _span_rows(self, index: SpanIndex, rows: npt.NDArray[np.int64]) -> list[list[Any]]:
        r = index.rows
        return [[int(r.span_id[i]), int(r.pid_id[i]), int(r.depth[i]), self.sec(r.start[i]),
                 self.sec(r.end[i]), OUTCOMES[int(r.outcome[i])], int(r.mfa_id[i])]
                for i in rows.tolist()]

    def _detail(self, lo: int, hi: int,
                lanes: npt.NDArray[np.int64] | None) -> dict[str, Any]:
        where, params = self._raw_window(lo, hi)
        lane_sql = ""
        if lanes is not None:
            lane_sql = " AND pid_id IN (SELECT unnest(?::INTEGER[]))"
            params = [*params, lanes.tolist()]
        start = int(self.dims.start_wall_ns)
        extra = "NULL, NULL" if self.live else "span_id, message_id"
        with self.cursor() as cur:
            rows = cur.execute(
                f"SELECT seq, pid_id, kind, ts + wall_offset - {start}, mfa_id, other_pid_id, "
                f"flags, hash(payload), {extra} FROM events WHERE {where}{lane_sql} "
                f"ORDER BY hlc, seq LIMIT {DETAIL_EVENTS * 2}", params).fetchall()
            events = [[seq, pid, kind, self.sec(t), mfa] for seq, pid, kind, t, mfa, *_ in rows]
            if self.live:
                spans, messages = _pair_in_window(rows, lo, hi, self.sec)
            else:
                index = self.span_index()
                spans = [] if index is None else self._span_rows(
                    index, index.query(lo, hi, lanes=lanes, limit=DETAIL_EVENTS * 2))
                messages = self._window_messages(cur, rows, lo, hi, lanes)
        return {"mode": "detail", "events": events, "spans": spans, "messages": messages}

    def _window_messages(self, cur: duckdb.DuckDBPyConnection, rows: list[tuple[Any, ...]],
                         lo: int, hi: int,
                         lanes: npt.NDArray[np.int64] | None) -> list[list[Any]]:
        """Messages sent or received in the window (by the ids its events carry)."""
        del lo, hi, lanes
        ids = sorted({row[9] for row in rows if row[9] is not None and row[2] in MESSAGE_KINDS})
        if not ids:
            return []
        start = int(self.dims.start_wall_ns)
        found = []
        for at in range(0, len(ids), 2000):
            chunk = ids[at: at + 2000]
            marks = ", ".join("?" * len(chunk))
            found += cur.execute(
                f"SELECT m.message_id, m.sender_pid_id, m.receiver_pid_id, "
                f"m.sent_ts + n.time_offset_ns - {start}, "
                f"m.received_ts + n.time_offset_ns - {start}, m.send_seq, m.receive_seq, "
                f"m.to_dead FROM messages m LEFT JOIN nodes n USING (node_id) "
                f"WHERE m.message_id IN ({marks})", chunk).fetchall()
        return [[mid, sender, receiver, None if sent is None else self.sec(sent),
                 None if received is None else self.sec(received), send_seq, receive_seq,
                 bool(dead)]
                for mid, sender, receiver, sent, received, send_seq, receive_seq, dead in found]

    def _mark_rows(self, lo: int, hi: int, lanes: npt.NDArray[np.int64] | None, *,
                   crashes_only: bool) -> list[list[Any]]:
        """Spawns, exits and crashes in the window: [seq, pid_id, kind, time, crash]."""
        times = [m[3] for m in self._marks]
        a, b = bisect.bisect_left(times, lo), bisect.bisect_left(times, hi)
        wanted = None if lanes is None else set(lanes.tolist())
        out = []
        for seq, pid_id, kind, t, crash in self._marks[a:b]:
            if (crashes_only and not crash) or (wanted is not None and pid_id not in wanted):
                continue
            out.append([seq, pid_id, KINDS.get(kind, str(kind)), self.sec(t), crash])
            if len(out) >= 5000:
                break
        return out

    # --- items --------------------------------------------------------------------------

    @functools.cached_property
    def _event_columns(self) -> str:
        extra = ("NULL, NULL, NULL, NULL" if self.live
                 else "span_id, parent_span_id, message_id, correlation_id")
        return ("seq, node_id, pid_id, kind, flags, ts, wall_offset, hlc, mfa_id, "
                f"other_pid_id, caller_mfa_id, target, payload, original_size, {extra}")

    def _event_from_row(self, row: tuple[Any, ...]) -> Event:
        dims = self.dims
        return event_from_row(row, node=dims.nodes.get(row[1], {}).get("name", ""),
                              pids=dims.pids, names=dims.names, functions=dims.functions,
                              start_wall_ns=dims.start_wall_ns)

    def _raw_event(self, seq: int) -> tuple[Event, int | None]:
        with self.cursor() as cur:
            rows = cur.execute(f"SELECT {self._event_columns}, other_pid_id FROM events "
                               "WHERE seq = ?", [seq]).fetchall()
        if not rows:
            raise UIError(f"there is no event {seq} in this recording", 404)
        return self._event_from_row(rows[0][:18]), rows[0][18]

    def event(self, seq: int) -> dict[str, Any]:
        """One event, printed, with what it links to and (finished) its causal chain."""
        event, other_pid_id = self._raw_event(seq)
        out = event.as_dict()
        out["text"] = _cut(out["text"])
        out["other_pid_id"] = other_pid_id
        out["pid_label"] = self.dims.label(event.pid_id)
        out["other_label"] = self.dims.label(other_pid_id)
        out["message"] = None
        out["causes"] = []
        out["stack"] = []
        if self.recording is not None:
            if event.kind == "exception":
                with self._lock:
                    out["stack"] = [{"span_id": span.span_id, "call": _cut(span.call),
                                     "time": span.start}
                                    for span in self.recording.stack(event, STACK_FRAMES)]
            if event.message_id is not None:
                out["message"] = self._message_row(event.message_id)
            with self._lock:
                try:
                    steps = self.recording.causes(event.seq, max_steps=20)
                except (QueryError, RecordingError):
                    steps = []
            out["causes"] = [{"relation": step.relation, "seq": step.event.seq,
                              "time": step.event.time, "pid_id": step.event.pid_id,
                              "kind": step.event.kind, "mfa": step.event.mfa,
                              "text": _short(step.event.text)} for step in steps]
        return out

    def span(self, span_id: int) -> dict[str, Any]:
        if self.recording is None:
            raise UIError("spans are built when the recording stops; select its call "
                          "event meanwhile", 409)
        with self._lock:
            try:
                span = self.recording.span(span_id)
            except QueryError:
                raise UIError(f"there is no span {span_id} in this recording", 404) \
                    from None
            out = span.as_dict()
        with self.cursor() as cur:
            row = cur.execute("SELECT end_seq FROM spans WHERE span_id = ?",
                              [span_id]).fetchone()
            children = cur.execute("SELECT count(*) FROM spans WHERE parent_span_id = ?",
                                   [span_id]).fetchone()
        out["args"] = _cut(out["args"])
        out["result"] = _cut(out["result"])
        out["call_seq"] = span_id
        out["end_seq"] = row[0] if row else None
        out["children"] = children[0] if children else 0
        out["pid_label"] = self.dims.label(span.pid_id)
        out["trigger"] = (self._message_row(span.trigger_message_id)
                          if span.trigger_message_id is not None else None)
        return out

    def _message_row(self, message_id: int) -> dict[str, Any] | None:
        start = int(self.dims.start_wall_ns)
        with self.cursor() as cur:
            row = cur.execute(
                f"SELECT m.message_id, m.sender_pid_id, m.receiver_pid_id, m.target, "
                f"m.sent_ts + n.time_offset_ns - {start}, "
                f"m.received_ts + n.time_offset_ns - {start}, "
                f"m.handled_ts + n.time_offset_ns - {start}, m.queue_ns, m.to_dead, "
                f"m.send_seq, m.receive_seq, m.send_span_id, m.handler_span_id, "
                f"e.payload FROM messages m LEFT JOIN nodes n USING (node_id) "
                f"LEFT JOIN events e ON e.seq = coalesce(m.send_seq, m.receive_seq) "
                f"WHERE m.message_id = ?", [message_id]).fetchone()
        if row is None:
            return None
        (mid, sender, receiver, target, sent, received, handled, queue_ns, dead, send_seq,
         receive_seq, send_span, handler_span, payload) = row
        dims = self.dims

        def at(value: int | None) -> float | None:
            return None if value is None else self.sec(value)

        return {"message_id": mid, "sender_pid_id": sender, "sender": dims.label(sender),
                "receiver_pid_id": receiver, "receiver": dims.label(receiver),
                "target": target, "sent": at(sent), "received": at(received),
                "handled": at(handled),
                "queue_time": None if queue_ns is None else queue_ns / 1e9,
                "to_dead": bool(dead), "send_seq": send_seq, "receive_seq": receive_seq,
                "send_span_id": send_span, "handler_span_id": handler_span,
                "text": _cut(payload_text(bytes(payload), None) if payload else "")}

    def message(self, message_id: int) -> dict[str, Any]:
        if self.recording is None:
            raise UIError("messages are matched when the recording stops; select the "
                          "send or receive event meanwhile", 409)
        found = self._message_row(message_id)
        if found is None:
            raise UIError(f"there is no message {message_id} in this recording", 404)
        return found

    # --- search and stepping ------------------------------------------------------------

    def search(self, query: str, *, limit: int = 500) -> dict[str, Any]:
        """Events matching ``query``: words ``module:M function:F pid:P kind:K text:T``,
        or bare: ``Mod.fun/2`` (a function), ``#PID<0.1.0>`` (a process), a kind, a
        process name, or else text in the payloads."""
        started = time.perf_counter()
        filters = parse_search(query, self.dims)
        limit = max(1, min(limit, 5000))
        if self.recording is not None:
            with self._lock:
                try:
                    found = self.recording.events(limit=limit + 1, **filters)
                except QueryError as exc:
                    raise UIError(str(exc)) from None
        else:
            found = self._live_search(filters, limit + 1)
        more = len(found) > limit
        matches = [{"seq": e.seq, "time": e.time, "pid_id": e.pid_id, "kind": e.kind,
                    "mfa": e.mfa, "label": self.dims.label(e.pid_id),
                    "text": _short(e.text, 100)} for e in found[:limit]]
        return {"query": query, "filters": filters, "matches": matches, "more": more,
                "server_ms": round((time.perf_counter() - started) * 1000, 2)}

    def _live_search(self, filters: dict[str, Any], limit: int) -> list[Event]:
        clauses: list[str] = []
        params: list[Any] = []
        if "pid" in filters:
            ids = _pids_named(filters["pid"], self.dims)
            clauses.append("pid_id IN (SELECT unnest(?::INTEGER[]))")
            params.append(ids)
        if "module" in filters or "function" in filters:
            module = filters.get("module")
            function = filters.get("function")
            name, _, arity = (function or "").partition("/")
            ids = [m for m, (mod, fun, ar) in self.dims.functions.items()
                   if (module is None or mod in (module, f":{module}"))
                   and (not name or fun == name) and (not arity or str(ar) == arity)]
            if not ids:
                raise UIError(f"{module or ''} {function or ''} does not appear in this "
                              "recording yet".replace("  ", " ").strip())
            clauses.append("mfa_id IN (SELECT unnest(?::INTEGER[]))")
            params.append(ids)
        if "kind" in filters:
            if filters["kind"] not in KIND_CODES:
                raise UIError(f"{filters['kind']!r} is not an event kind")
            clauses.append("kind = ?")
            params.append(KIND_CODES[filters["kind"]])
        where = " AND ".join(clauses) or "true"
        text = filters.get("text")
        found: list[Event] = []
        with self.cursor() as cur:
            cur.execute(f"SELECT {self._event_columns} FROM events WHERE {where} "
                        f"ORDER BY seq LIMIT 200000", params)
            while rows := cur.fetchmany(2000):
                for row in rows:
                    event = self._event_from_row(row)
                    if text is None or text in event.text:
                        found.append(event)
                        if len(found) >= limit:
                            return found
        return found

    def step(self, t: float, pid_id: int | None, what: str, direction: str) -> dict[str, Any]:
        """The next (or previous) event after ``t``: any, a message (send/receive) or a
        state change (a transition of the process's state history)."""
        if direction not in ("next", "prev"):
            raise UIError("dir must be next or prev")
        if what == "state":
            if pid_id is None:
                raise UIError("stepping to a state change needs a process (pid)")
            history = self.state_history(pid_id)["transitions"]
            times = [(h["time"], h["seq"]) for h in history]
            pick = ([x for x in times if x[0] > t + 1e-9][:1] if direction == "next"
                    else [x for x in times if x[0] < t - 1e-9][-1:])
            if not pick:
                return {"found": False}
            return {"found": True, "time": pick[0][0], "seq": pick[0][1]}
        if what not in ("event", "message", "call"):
            raise UIError("what must be event, message, call or state")
        clauses = []
        params: list[Any] = []
        wall = self.dims.start_wall_ns + self.ns(t)
        if direction == "next":
            clauses.append("ts + wall_offset > ?")
        else:
            clauses.append("ts + wall_offset < ?")
        params.append(wall)
        if pid_id is not None:
            clauses.append("pid_id = ?")
            params.append(pid_id)
        if what == "message":
            clauses.append(f"kind IN {MESSAGE_KINDS}")
        elif what == "call":
            clauses.append(f"kind = {KIND_CODES['call']}")
        order = "ASC" if direction == "next" else "DESC"
        with self.cursor() as cur:
            row = cur.execute(
                f"SELECT seq, ts + wall_offset - {int(self.dims.start_wall_ns)}, pid_id "
                f"FROM events WHERE {' AND '.join(clauses)} "
                f"ORDER BY ts + wall_offset {order}, seq {order} LIMIT 1", params).fetchone()
        if row is None:
            return {"found": False}
        return {"found": True, "seq": row[0], "time": self.sec(row[1]), "pid_id": row[2]}

    # --- state (time travel) ------------------------------------------------------------

    def _time_travel(self) -> Recording:
        if self.recording is None:
            raise UIError("state history is available once the recording stops", 409)
        return self.recording

    def _history(self, pid_id: int) -> list[StateTransition]:
        recording = self._time_travel()
        if pid_id not in self.dims.pids:
            raise UIError(f"there is no process with pid_id {pid_id}", 404)
        cached = self._histories.get(pid_id)
        if cached is None:
            with self._lock:
                try:
                    cached = list(recording.state_history(pid_id))
                except QueryError as exc:
                    raise UIError(str(exc), 404) from None
            self._histories[pid_id] = cached
        return cached

    def state_history(self, pid_id: int) -> dict[str, Any]:
        """The process's state transitions, light: what changed, when and why."""
        history = self._history(pid_id)
        # A transition reads its trigger and diff lazily, on the Recording's connection.
        with self._lock:
            rows = [_transition_row(t) for t in history]
        return {"pid_id": pid_id, "label": self.dims.label(pid_id), "transitions": rows}

    def state_at(self, pid_id: int, t: float) -> dict[str, Any]:
        """The state at ``t`` (the last transition at or before it), its diff against
        the transition before, and what triggered it."""
        history = self._history(pid_id)
        times = [float(x.time) for x in history]
        at = bisect.bisect_right(times, t + 1e-12) - 1
        if at < 0:
            return {"pid_id": pid_id, "time": t, "index": None, "state": None,
                    "transition": None, "count": len(history)}
        current = history[at]
        with self._lock:
            try:
                text = str(current.state_text)
            except QueryError as exc:
                text = f"(not known here: {exc})"
            row, delta = _transition_row(current), current.delta.as_dict()
        return {"pid_id": pid_id, "time": t, "index": at, "count": len(history),
                "state": _cut(text), "transition": row, "delta": delta}

    # --- diagnosis ------------------------------------------------------------------

    def findings(self) -> dict[str, Any]:
        """The recording's findings, worst first, each with the processes (pid_ids) of
        its evidence and the window that shows it."""
        if self.recording is None:
            return {"live": True, "findings": []}
        if self._findings is None:
            # Finding them may take a while: on a connection of their own, so the
            # timeline and the inspector are not kept waiting.
            with open_recording(self.path) as recording:
                found = recording.findings()
            self._findings = [self._finding_row(finding) for finding in found]
        return {"live": False, "findings": self._findings}

    def requests(self) -> dict[str, Any]:
        """The HTTP requests of a framework trace, in time order (at most 5,000)."""
        if self.recording is None:
            return {"live": True, "requests": []}
        if self._requests is None:
            with open_recording(self.path) as recording:
                found = recording.requests()
            self._requests = [
                {"span_id": r.span_id, "pid_id": r.pid_id, "start": r.start,
                 "duration_ms": r.duration_ms, "method": r.method, "path": r.path,
                 "route": r.route, "status": r.status, "action": r.action,
                 "queries": len(r.queries), "query_ms": r.query_ms,
                 "exception": r.exception, "raised_in": r.raised_in}
                for r in found[:5000]]
        return {"live": False, "requests": self._requests}

    def waterfall(self, span_id: int) -> dict[str, Any]:
        """A request and the traced calls inside it, as waterfall rows."""
        if self.recording is None:
            raise UIError("the waterfall comes when the recording is finished", 409)
        with open_recording(self.path) as recording:
            try:
                rows = recording.waterfall(span_id)
            except QueryError as exc:
                raise UIError(str(exc), 404) from exc
        return {"span_id": span_id, "rows": rows}

    def _finding_row(self, finding: Finding) -> dict[str, Any]:
        evidence = finding.evidence
        seqs = [*evidence.events, *evidence.spans, *evidence.waits]
        pids: list[int] = []
        with self.cursor() as cur:
            if seqs:
                pids += [row[0] for row in cur.execute(
                    "SELECT pid_id FROM events WHERE seq IN (SELECT unnest(?::BIGINT[])) "
                    "ORDER BY seq", [seqs]).fetchall()]
            if evidence.messages:
                for sender, receiver in cur.execute(
                        "SELECT sender_pid_id, receiver_pid_id FROM messages WHERE "
                        "message_id IN (SELECT unnest(?::BIGINT[]))",
                        [list(evidence.messages)]).fetchall():
                    pids += [pid for pid in (receiver, sender) if pid is not None]
        for label in finding.processes:
            pids += [pid_id for pid_id, names in self.dims.names.items() if label in names]
        start = finding.start if finding.start is not None else 0.0
        end = finding.end if finding.end is not None else start
        pad = max((end - start) * 0.15, 0.005)
        return finding.as_dict() | {
            "pid_ids": list(dict.fromkeys(pids)),
            "focus": {"t0": start - pad, "t1": end + pad, "t": start}}

    def metrics(self, pid_id: int) -> dict[str, Any]:
        """A process's sampled mailbox length and memory over time (at most 2,000
        points, every n-th kept)."""
        recording = self._time_travel()
        with self._lock:
            if not metrics.recorded(recording):
                return {"pid_id": pid_id, "t": [], "queue": [], "memory": []}
            samples = metrics.series(recording, pid_id)
        step = max(1, len(samples) // 2000)
        kept = samples[::step]
        return {"pid_id": pid_id, "t": [s.time for s in kept],
                "queue": [s.queue for s in kept], "memory": [s.memory for s in kept]}

    def waits_at(self, t: float) -> dict[str, Any]:
        """The waits-for graph at ``t``: who waits on whom, and the cycles."""
        recording = self._time_travel()
        with self._lock:
            if self._wait_edges is None:
                self._wait_edges = resolved_waits(recording)
            graph = graph_of(self._wait_edges, t)
        cycle = {edge.wait.span.span_id for loop in graph.cycles for edge in loop}
        return {"t": t, "edges": [
            {"from": edge.wait.span.pid_id, "to": edge.callee_pid_id,
             "request": _cut(edge.wait.request), "since": edge.wait.since,
             "span_id": edge.wait.span.span_id,
             "in_cycle": edge.wait.span.span_id in cycle} for edge in graph.edges]}

    def state_diff(self, pid_id: int, t1: float, t2: float) -> dict[str, Any]:
        recording = self._time_travel()
        with self._lock:
            try:
                delta = recording.diff(pid_id, t1, t2)
            except QueryError as exc:
                raise UIError(str(exc), 404) from None
        return {"pid_id": pid_id, "t1": t1, "t2": t2, "text": str(delta),
                "delta": delta.as_dict()}


def _transition_row(transition: StateTransition) -> dict[str, Any]:
    trigger = transition.trigger
    return {"index": transition.index, "seq": transition.seq,
            "time": float(transition.time), "callback": transition.callback,
            "delta": _short(str(transition.delta), 400),
            "trigger": None if trigger is None else {
                "seq": trigger.seq, "kind": trigger.kind, "mfa": trigger.mfa,
                "text": _short(trigger.text, 160)}}


def _tree_order(rows: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    children: dict[int | None, list[int]] = defaultdict(list)
    for pid_id, row in rows.items():
        parent = row["parent"] if row["parent"] in rows and row["parent"] != pid_id else None
        children[parent].append(pid_id)

    def weight(pid_id: int) -> tuple[int, int, int, int]:
        row = rows[pid_id]
        return (0 if row["events"] or row["crashed"] else 1, 0 if row["name"] else 1,
                -row["events"], pid_id)

    ordered: list[dict[str, Any]] = []
    seen: set[int] = set()

    def visit(pid_id: int, depth: int) -> None:
        stack = [(pid_id, depth)]
        while stack:
            current, level = stack.pop()
            if current in seen:
                continue
            seen.add(current)
            rows[current]["depth"] = level
            ordered.append(rows[current])
            for child in sorted(children.get(current, []), key=weight, reverse=True):
                stack.append((child, level + 1))

    by_node: dict[int, list[int]] = defaultdict(list)
    for root in children.get(None, []):
        by_node[rows[root]["node_id"]].append(root)
    for node_id in sorted(by_node):
        for root in sorted(by_node[node_id], key=weight):
            visit(root, 0)
    for pid_id in sorted(rows):  # cycles of parentage, should any exist
        if pid_id not in seen:
            visit(pid_id, 0)
    return ordered


def _pair_in_window(rows: list[tuple[Any, ...]], lo: int, hi: int,
                    sec: Any) -> tuple[list[list[Any]], list[list[Any]]]:
    """Spans and messages of a live recording, paired inside the window: calls with
    the returns that follow on their process (a call left open runs to the window's
    end, a return without its call starts at its beginning), sends with receives of
    the same bytes at their receiver, in order."""
    call, ret, exc = KIND_CODES["call"], KIND_CODES["return"], KIND_CODES["exception"]
    send, receive = KIND_CODES["send"], KIND_CODES["receive"]
    stacks: dict[int, list[tuple[int, int, int | None]]] = defaultdict(list)
    spans: list[list[Any]] = []
    sends: dict[tuple[int, int], deque[tuple[int, int, int]]] = defaultdict(deque)
    messages: list[list[Any]] = []
    for seq, pid_id, kind, t, mfa_id, other, flags, digest, *_ in rows:
        if kind == call and flags & 8:
            stacks[pid_id].append((seq, t, mfa_id))
        elif kind in (ret, exc):
            stack = stacks[pid_id]
            if stack:
                call_seq, start, call_mfa = stack.pop()
                spans.append([call_seq, pid_id, len(stack) + 1, sec(start), sec(t),
                              "return" if kind == ret else "exception", call_mfa])
            else:
                spans.append([-seq, pid_id, 1, sec(lo), sec(t),
                              "return" if kind == ret else "exception", mfa_id])
        elif kind == send and other is not None:
            sends[(other, digest)].append((seq, pid_id, t))
        elif kind == receive:
            queue = sends.get((pid_id, digest))
            if queue:
                send_seq, sender, sent = queue.popleft()
                messages.append([send_seq, sender, pid_id, sec(sent), sec(t), send_seq, seq,
                                 False])
    for pid_id, stack in stacks.items():
        for depth, (call_seq, start, call_mfa) in enumerate(stack, start=1):
            spans.append([call_seq, pid_id, depth, sec(start), sec(hi), "open", call_mfa])
    return spans, messages


def _pids_named(spec: str, dims: Dims) -> list[int]:
    text = spec.strip()
    if _PID.match(text):
        wanted = text if text.startswith("#PID") else f"#PID{text}"
        ids = [p for p, (shown, _) in dims.pids.items() if shown == wanted]
    elif text.isdigit():
        ids = [int(text)] if int(text) in dims.pids else []
    else:
        ids = [p for p, names in dims.names.items() if text in names or f":{text}" in names]
    if not ids:
        raise UIError(f"there is no process {text} in this recording")
    return ids


def parse_search(query: str, dims: Dims) -> dict[str, Any]:
    """The filters a search box's text names (see ``View.search``)."""
    filters: dict[str, Any] = {}
    rest: list[str] = []
    for word in query.split():
        key, sep, value = word.partition(":")
        if sep and key in ("module", "function", "pid", "kind", "text") and value:
            filters[key] = value
        else:
            rest.append(word)
    bare = " ".join(rest).strip()
    if bare:
        match = _FUNCTION.match(bare)
        named = {name for names in dims.names.values() for name in names}
        if match and " " not in bare:
            filters.setdefault("module", match.group("module"))
            function = match.group("function")
            if match.group("arity"):
                function += "/" + match.group("arity")
            filters.setdefault("function", function)
        elif _PID.match(bare) or bare in named:
            filters.setdefault("pid", bare)
        elif bare in KIND_CODES:
            filters.setdefault("kind", bare)
        else:
            filters.setdefault("text", bare)
    if not filters:
        raise UIError("the search is empty; type a function, a process, a kind or text")
    if isinstance(filters.get("pid"), str) and filters["pid"].isdigit():
        filters["pid"] = int(filters["pid"])
    return filters
