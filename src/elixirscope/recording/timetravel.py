"""Time travel through the states of recorded processes.

Each process's state records are indexed in memory on first use (sequence number,
time, whether the record is whole): three arrays, 17 bytes a record. A state is
rebuilt from the last whole record at or before it plus the deltas in between (at
most the agent's ``state_keyframe_every`` of them), read by sequence range, which
DuckDB answers from one or two row groups. Rebuilt states are kept in a small
cache, so stepping through time reuses the last one.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from elixirscope.errors import ETFDecodeError, QueryError
from elixirscope.etf import decode
from elixirscope.recording.results import CauseStep, Event, mfa_text
from elixirscope.recording.state_delta import (
    StateChainError,
    StateRecord,
    apply_delta,
    parse_record,
)
from elixirscope.recording.state_diff import MISSING, StateDiff, delta_changes, diff_terms, lookup
from elixirscope.recording.state_results import FieldChange, Replay, StateTransition
from elixirscope.recording.timespec import TimeSpec, wall_ns
from elixirscope.tracing.events import KIND_CODES, STATE_WHOLE

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

_STATE = KIND_CODES["state"]
_EXIT = KIND_CODES["exit"]
_CACHED_STATES = 256
_WALK_CHUNK = 20_000


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()
"""A state the recording cannot rebuild (records lost, or too large to send)."""


@dataclass
class _Step:
    """One state record read in order, with the state before and after it."""

    index: int
    seq: int
    ts: int
    mfa_id: int | None
    record: StateRecord
    before: Any
    after: Any


class StateTimeline:
    """The state records of one process."""

    def __init__(self, recording: RecordingQueries, pid_id: int) -> None:
        self.recording = recording
        self.pid_id = pid_id
        con = recording.con
        columns = con.execute(
            "SELECT seq, ts, flags FROM events WHERE pid_id = ? AND kind = ? ORDER BY seq",
            [pid_id, _STATE]).fetchnumpy()
        self.seqs: np.ndarray = np.asarray(columns["seq"], dtype=np.int64)
        self.ts: np.ndarray = np.asarray(columns["ts"], dtype=np.int64)
        whole = (np.asarray(columns["flags"], dtype=np.int64) & STATE_WHOLE) != 0
        positions = np.arange(len(self.seqs))
        # The index of the last whole record at or before each record (-1: none).
        self.whole_at: np.ndarray = np.maximum.accumulate(np.where(whole, positions, -1)) \
            if len(positions) else positions
        self._cache: OrderedDict[int, tuple[Any, int]] = OrderedDict()
        self._spans: dict[int, tuple[int, int | None]] | None = None
        exit_rows = con.execute(
            "SELECT seq, ts, payload FROM events WHERE pid_id = ? AND kind = ? "
            "ORDER BY seq DESC LIMIT 1", [pid_id, _EXIT]).fetchall()
        self.exit: tuple[int, int, bytes] | None = (
            (exit_rows[0][0], exit_rows[0][1], bytes(exit_rows[0][2])) if exit_rows else None)

    def __len__(self) -> int:
        return len(self.seqs)

    def index_at(self, ts: int) -> int:
        """The last record at or before ``ts`` (-1: none yet)."""
        return int(np.searchsorted(self.ts, ts, side="right")) - 1

    def state(self, index: int) -> Any:
        """The state after record ``index``, or ``UNKNOWN``."""
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index][0]
        start = int(self.whole_at[index])
        if start < 0:
            return UNKNOWN
        # A cached state between the whole record and the target saves reading.
        cached = [i for i in self._cache if start <= i < index]
        if cached:
            start = max(cached)
            state, number = self._cache[start]
            steps = self._steps(start + 1, index, state, number)
        else:
            state, number = UNKNOWN, 0
            steps = self._steps(start, index, UNKNOWN, None)
        for step in steps:
            state, number = step.after, step.record.number
        self._remember(index, state, number)
        return state

    def step(self, index: int) -> _Step:
        """Record ``index`` with the states before and after it."""
        before = self.state(index - 1) if index > 0 else UNKNOWN
        after = self.state(index)
        seq, ts, mfa_id, record = self._records(index, index)[0]
        return _Step(index, seq, ts, mfa_id, record, before, after)

    def walk(self, first: int = 0) -> Iterator[_Step]:
        """Every record from ``first`` on, with the states before and after it."""
        start = int(self.whole_at[first]) if first < len(self) else first
        start = max(start, 0)
        state, number = UNKNOWN, None
        for low in range(start, len(self), _WALK_CHUNK):
            high = min(low + _WALK_CHUNK, len(self)) - 1
            for step in self._steps(low, high, state, number):
                state, number = step.after, step.record.number
                if step.index >= first:
                    yield step

    def span_of(self, seq: int) -> tuple[int, int | None] | None:
        """(span id, trigger message id) of the callback a record came from: the agent
        writes a record right after its callback's return (or, for terminate, right
        after its call)."""
        if self._spans is None:
            rows = self.recording.con.execute(
                "SELECT span_id, end_seq, trigger_message_id FROM spans WHERE pid_id = ?",
                [self.pid_id]).fetchall()
            self._spans = {}
            for span_id, end_seq, trigger in rows:
                self._spans[span_id] = (span_id, trigger)
                if end_seq is not None:
                    self._spans[end_seq] = (span_id, trigger)
        return self._spans.get(seq - 1)

    def _steps(self, low: int, high: int, state: Any, number: int | None) -> Iterator[_Step]:
        for offset, (seq, ts, mfa_id, record) in enumerate(self._records(low, high)):
            before = state
            if number is not None and record.number != number + 1:
                state = UNKNOWN  # records between were lost
            if record.whole:
                state = record.value
            elif record.kind == "delta":
                state = _applied(state, record.value)
            elif record.breaks_chain:
                state = UNKNOWN
            number = record.number
            yield _Step(low + offset, seq, ts, mfa_id, record, before, state)

    def _records(self, low: int, high: int) -> list[tuple[int, int, int | None, StateRecord]]:
        rows = self.recording.con.execute(
            "SELECT seq, ts, mfa_id, payload FROM events WHERE seq BETWEEN ? AND ? "
            "AND pid_id = ? AND kind = ? ORDER BY seq",
            [int(self.seqs[low]), int(self.seqs[high]), self.pid_id, _STATE]).fetchall()
        out = []
        for seq, ts, mfa_id, payload in rows:
            try:
                record = parse_record(bytes(payload))
            except (ETFDecodeError, StateChainError) as exc:
                raise QueryError(f"state record {seq} is damaged: {exc}") from None
            out.append((seq, ts, mfa_id, record))
        return out

    def _remember(self, index: int, state: Any, number: int) -> None:
        self._cache[index] = (state, number)
        if len(self._cache) > _CACHED_STATES:
            self._cache.popitem(last=False)


def _applied(state: Any, delta: Any) -> Any:
    if state is UNKNOWN:
        return UNKNOWN
    try:
        return apply_delta(state, delta)
    except StateChainError:
        return UNKNOWN


class TimeTravel:
    """The time-travel queries of one recording (``Recording.state_history`` and
    the others call these)."""

    def __init__(self, recording: RecordingQueries) -> None:
        self.recording = recording
        self._timelines: dict[int, StateTimeline] = {}
        self._pids: dict[str | int, list[int]] = {}

    def timeline(self, pid_id: int) -> StateTimeline:
        if pid_id not in self._timelines:
            self._timelines[pid_id] = StateTimeline(self.recording, pid_id)
        return self._timelines[pid_id]

    # --- which process --------------------------------------------------------------

    def pid_ids(self, spec: str | int) -> list[int]:
        """The processes ``spec`` names that have recorded states, oldest first."""
        if spec not in self._pids:
            self._pids[spec] = self._find_pid_ids(spec)
        return self._pids[spec]

    def _find_pid_ids(self, spec: str | int) -> list[int]:
        ids = self.recording.pid_ids(spec)
        marks = ",".join("?" * len(ids))
        rows = self.recording.con.execute(
            f"SELECT pid_id, min(seq) AS first FROM events WHERE kind = ? "
            f"AND pid_id IN ({marks}) GROUP BY pid_id ORDER BY first", [_STATE, *ids]).fetchall()
        if not rows:
            raise QueryError(f"no state of {self._named(spec)} was recorded in "
                             f"{self.recording.path} (trace it with state capture on)")
        return [pid_id for pid_id, _ in rows]

    def at(self, spec: str | int, t: TimeSpec) -> tuple[StateTimeline, int]:
        """The timeline of the process ``spec`` named at ``t``, and its record then."""
        best: tuple[StateTimeline, int] | None = None
        for pid_id in self.pid_ids(spec):
            timeline = self.timeline(pid_id)
            index = timeline.index_at(self._node_ts(pid_id, t))
            if index >= 0:
                best = (timeline, index)
        if best is None:
            raise QueryError(f"no state of {self._named(spec)} was recorded at or before "
                             f"{t!r}")
        return best

    def _named(self, spec: str | int) -> str:
        """A process as the user knows it: its pid and name, not an internal pid_id."""
        if isinstance(spec, int) and not isinstance(spec, bool):
            return self.recording.dims.label(spec)
        return str(spec)

    def _node_ts(self, pid_id: int, t: TimeSpec) -> int:
        dims = self.recording.dims
        node_id = dims.node_of(pid_id) or 0
        return wall_ns(t, dims.start_wall_ns) - dims.offsets.get(node_id, 0)

    # --- queries ----------------------------------------------------------------------

    def history(self, spec: str | int, limit: int | None = None) -> list[StateTransition]:
        out: list[StateTransition] = []
        for pid_id in self.pid_ids(spec):
            out.extend(self._transitions(self.timeline(pid_id)))
        out.sort(key=lambda item: (item.time, item.seq))
        out = [dataclasses.replace(item, index=index) for index, item in enumerate(out)]
        return out if limit is None else out[:limit]

    def state_at(self, spec: str | int, t: TimeSpec) -> Any:
        timeline, index = self.at(spec, t)
        return self._known(timeline, index, timeline.state(index))

    def transition_at(self, spec: str | int, t: TimeSpec) -> StateTransition:
        timeline, index = self.at(spec, t)
        return self._transition(timeline, timeline.step(index), index)

    def replay_to(self, spec: str | int, t: TimeSpec) -> Replay:
        transition = self.transition_at(spec, t)
        state = transition.state
        recording = self.recording
        causes: list[CauseStep] = []
        origin: Event
        if transition.span_id is not None:
            # The callback's return (or a terminate call) is the record before it.
            origin = recording.event(transition.seq - 1)
            causes.append(CauseStep(f"made by {origin.mfa} ({origin.kind})", origin))
        else:
            origin = recording.event(transition.seq)
        causes.extend(recording.causes(origin))
        return Replay(state, transition, tuple(causes))

    def diff(self, spec: str | int, t1: TimeSpec, t2: TimeSpec) -> StateDiff:
        return diff_terms(self.state_at(spec, t1), self.state_at(spec, t2))

    def field_history(self, spec: str | int, path: Sequence[Any]) -> list[FieldChange]:
        path = tuple(path)
        out: list[FieldChange] = []
        for pid_id in self.pid_ids(spec):
            timeline = self.timeline(pid_id)
            value: Any = UNKNOWN
            for step in timeline.walk():
                if step.after is UNKNOWN:
                    value = UNKNOWN
                    continue
                new = lookup(step.after, path)
                if value is UNKNOWN or not _same(value, new):
                    old = MISSING if value is UNKNOWN else value
                    if not (value is UNKNOWN and new is MISSING):
                        out.append(FieldChange(path, old, new,
                                               self._transition(timeline, step, len(out))))
                    value = new
        out.sort(key=lambda change: (change.time, change.transition.seq))
        return out

    # --- building results -------------------------------------------------------------

    def _transitions(self, timeline: StateTimeline) -> list[StateTransition]:
        out = [self._transition(timeline, step, step.index) for step in timeline.walk()]
        if timeline.exit is not None and len(timeline):
            out.append(self._exit(timeline, len(out)))
        return out

    def _transition(self, timeline: StateTimeline, step: _Step, index: int) -> StateTransition:
        recording, dims = self.recording, self.recording.dims
        pid_id = timeline.pid_id
        function = dims.functions.get(step.mfa_id) if step.mfa_id is not None else None
        record = step.record
        span = timeline.span_of(step.seq) if function is not None else None
        callback = function[1] if function else record.kind
        after, before = step.after, step.before

        def state() -> Any:
            return self._known(timeline, step.index, after)

        def delta() -> StateDiff:
            if record.kind == "delta":
                return delta_changes(MISSING if before is UNKNOWN else before, record.value)
            if record.whole and before is not UNKNOWN:
                return diff_terms(before, record.value)
            return StateDiff(())

        def trigger() -> Event | None:
            """The message the callback served, else its call (whose arguments hold
            the request) when the process's messages were not traced."""
            if span is None:
                return None
            message = None if span[1] is None else recording.message_by_id(span[1])
            seq = None if message is None else (
                message.receive_seq if message.receive_seq is not None else message.send_seq)
            return recording.event(span[0] if seq is None else seq)

        kind = "whole" if record.whole else record.kind
        return StateTransition(
            index=index, seq=step.seq, pid=dims.pids[pid_id][0], pid_id=pid_id,
            pid_name=dims.name(pid_id), time=dims.at(step.ts, dims.node_of(pid_id) or 0),
            ts=step.ts, callback="initial" if record.kind == "initial" else callback,
            mfa=mfa_text(*function) if function else None, kind=kind,
            known=after is not UNKNOWN, span_id=None if span is None else span[0],
            _state=state, _delta=delta, _trigger=trigger,
            _reason=record.value if record.kind == "terminate" else MISSING)

    def _exit(self, timeline: StateTimeline, index: int) -> StateTransition:
        assert timeline.exit is not None
        dims = self.recording.dims
        seq, ts, payload = timeline.exit
        last = len(timeline) - 1
        pid_id = timeline.pid_id
        try:
            reason = decode(payload)
        except ETFDecodeError:
            reason = payload
        return StateTransition(
            index=index, seq=seq, pid=dims.pids[pid_id][0], pid_id=pid_id,
            pid_name=dims.name(pid_id), time=dims.at(ts, dims.node_of(pid_id) or 0), ts=ts,
            callback="exit", mfa=None, kind="exit",
            known=timeline.state(last) is not UNKNOWN, span_id=None,
            _state=lambda: self._known(timeline, last, timeline.state(last)),
            _delta=lambda: StateDiff(()), _trigger=lambda: None, _reason=reason)

    def _known(self, timeline: StateTimeline, index: int, state: Any) -> Any:
        if state is UNKNOWN:
            label = self.recording.dims.label(timeline.pid_id)
            raise QueryError(f"the state of {label} after record {int(timeline.seqs[index])} "
                             "is not known: records were lost before it or the state was "
                             "too large to send")
        return state


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b
