"""Level of detail for the timeline, computed on the server.

``Pyramid``: activity per lane in time bins at every power-of-two resolution. The
finest level is loaded once per opened recording: a finished recording's stored
``activity_bins`` (built by finalize), else one GROUP BY of the events over
``(bin, pid_id)`` keys. The coarser ones are made lazily, each once, from the finest
level built below them (one request builds while others wanting levels wait): by
merging pairs of bins, or at once by summing into a grid of bins by lanes when that
grid is small (a finished recording's levels so jumped over are then built in the
background); a window then costs two binary searches and a slice, whatever the
recording's size. A live recording extends the finest level with the events flushed
since the last refresh.

``SpanIndex``: the spans of a finished recording in memory, bucketed by duration
class (powers of two of ns) and sorted by start inside each class, so the spans
overlapping a window are, per class, one contiguous run of starts in
``[lo - 2^(class+1), hi)``: no scan of the spans table (which is stored by function).

Times here are integer nanoseconds from the recording's start.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from elixirscope.recording import schema

# The key layout and the finest width are the stored activity bins' (schema).
LANE_BITS = schema.BIN_LANE_BITS
LANE_MASK = (1 << LANE_BITS) - 1
# The finest level has at most this many bins over the whole recording.
MAX_BASE_BINS = schema.BIN_MAX_BINS
MIN_BASE_SHIFT = schema.BIN_MIN_SHIFT

Int64s = npt.NDArray[np.int64]

base_shift_for = schema.bin_shift_for


@dataclass(frozen=True)
class Level:
    """Bins of one width: ``keys`` = bin << LANE_BITS | pid_id, sorted; counts of all
    events and of error events (exceptions, crashes) per key."""

    shift: int
    keys: Int64s
    counts: Int64s
    errors: Int64s

    @property
    def bins(self) -> Int64s:
        return self.keys >> LANE_BITS

    def window(self, lo_ns: int, hi_ns: int) -> slice:
        """The rows whose bins overlap ``[lo_ns, hi_ns)``."""
        first = max(lo_ns, 0) >> self.shift
        last = max(hi_ns - 1, 0) >> self.shift
        a = int(np.searchsorted(self.keys, first << LANE_BITS, side="left"))
        b = int(np.searchsorted(self.keys, (last + 1) << LANE_BITS, side="left"))
        return slice(a, b)


def merge(keys: Int64s, counts: Int64s, errors: Int64s) -> Level:
    """Sums rows with equal keys; the result sorted by key (shift left unset: 0).
    Rows already sorted by unique keys are taken as they are; concatenated sorted runs
    (a coarser level's pairs, a live extension) sort in about one pass (timsort)."""
    keys = np.asarray(keys, dtype=np.int64)
    counts = np.asarray(counts, dtype=np.int64)
    errors = np.asarray(errors, dtype=np.int64)
    if keys.size > 1 and not bool(np.all(keys[1:] > keys[:-1])):
        order = np.argsort(keys, kind="stable")
        keys, counts, errors = keys[order], counts[order], errors[order]
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
        if starts.size < keys.size:
            keys = keys[starts]
            counts = np.add.reduceat(counts, starts)
            errors = np.add.reduceat(errors, starts)
    return Level(0, keys, counts, errors)


def coarser(level: Level, shift: int) -> Level:
    """The next level from ``level`` towards bins ``2^shift`` ns wide: that one at once
    when its grid of bins by lanes has no more cells than ``level`` has rows (summed
    into the grid in one pass), else the level one step coarser (pairs of bins merged:
    the even bins' rows and the odd bins' stay sorted, two runs to merge)."""
    lanes = level.keys & LANE_MASK
    rows = int(lanes.size)
    if rows == 0:
        return Level(shift, level.keys, level.counts, level.errors)
    if shift > level.shift + 1 and int(lanes.max()) <= 4 * rows:
        bins = (level.keys >> LANE_BITS) >> (shift - level.shift)
        present = np.flatnonzero(np.bincount(lanes))
        first = int(bins[0])  # keys are sorted, bin first
        cells = (int(bins[-1]) - first + 1) * present.size
        if cells <= rows:
            rank = np.zeros(int(present[-1]) + 1, dtype=np.int64)
            rank[present] = np.arange(present.size)
            cell = (bins - first) * present.size + rank[lanes]
            used = np.flatnonzero(np.bincount(cell, minlength=cells))
            keys = ((used // present.size + first) << LANE_BITS) | present[used % present.size]
            # Summed as floats by bincount: exact up to 2^53 events.
            counts = np.bincount(cell, weights=level.counts, minlength=cells)[used]
            errors = np.bincount(cell, weights=level.errors, minlength=cells)[used]
            return Level(shift, keys.astype(np.int64), counts.astype(np.int64),
                          errors.astype(np.int64))
    pairs = merge(((level.keys >> LANE_BITS) >> 1) << LANE_BITS | lanes, level.counts,
                  level.errors)
    return Level(level.shift + 1, pairs.keys, pairs.counts, pairs.errors)


class Pyramid:
    """Activity bins at every resolution from ``2^base_shift`` ns up."""

    def __init__(self, base_shift: int, keys: Int64s, counts: Int64s,
                 errors: Int64s, *, fill: bool = False) -> None:
        self.base_shift = base_shift
        # Held while a level is built or the finest one extended: a request wanting
        # levels another is building waits for them instead of building them again,
        # and no level made from an older finest level outlives an extension.
        self._lock = threading.Lock()
        # fill (a finished recording, never extended): once a level is asked for, the
        # levels below it that were jumped over are built in the background, so that
        # zooming in later finds them.
        self._fill = fill
        self._filler: threading.Thread | None = None
        base = merge(keys, counts, errors)
        self._levels: dict[int, Level] = {base_shift: Level(base_shift, base.keys,
                                                             base.counts, base.errors)}

    @property
    def base(self) -> Level:
        return self._levels[self.base_shift]

    @property
    def events(self) -> int:
        return int(self.base.counts.sum())

    def extend(self, keys: Int64s, counts: Int64s, errors: Int64s) -> None:
        """Adds finest-level rows (a live recording's new events, or a finished
        recording's all at once)."""
        if keys.size == 0:
            return
        with self._lock:
            base = self.base
            merged = merge(np.concatenate([base.keys, keys]),
                           np.concatenate([base.counts, counts]),
                           np.concatenate([base.errors, errors]))
            self._levels = {self.base_shift: Level(self.base_shift, merged.keys,
                                                   merged.counts, merged.errors)}

    def level(self, shift: int) -> Level:
        """The level whose bins are ``2^shift`` ns wide (at least the finest)."""
        shift = max(shift, self.base_shift)
        found = self._levels.get(shift)
        if found is not None:
            return found
        with self._lock:
            levels = self._levels
            level = levels[max(s for s in levels if s <= shift)]  # built while we waited?
            while level.shift < shift:
                made = coarser(level, shift)
                level = levels.setdefault(made.shift, made)
            if self._fill and self._filler is None:
                self._filler = threading.Thread(target=self._fill_skipped, daemon=True,
                                                name="elixirscope-levels")
                self._filler.start()
            return level

    def _fill_skipped(self) -> None:
        """Builds the levels missing below the coarsest one built, finest first, by
        merging pairs, without holding the lock while it works (a request needing one
        of them first builds it itself)."""
        while True:
            with self._lock:
                levels = self._levels
                missing = [s for s in range(self.base_shift + 1, max(levels))
                           if s not in levels]
                if not missing:
                    return
                finer = levels[missing[0] - 1]
            made = coarser(finer, finer.shift + 1)
            with self._lock:
                if self._levels is not levels:
                    return
                levels.setdefault(made.shift, made)

    def shift_for(self, lo_ns: int, hi_ns: int, bins: int) -> int:
        """The finest shift whose bins cut the window into at most ``bins`` pieces."""
        width = max(hi_ns - lo_ns, 1)
        shift = self.base_shift
        while (width >> shift) > bins:
            shift += 1
        return shift

    def count(self, lo_ns: int, hi_ns: int, lanes: npt.NDArray[np.int64] | None) -> int:
        """Events in the window (the bins it touches, so a little over), on ``lanes``."""
        level = self.level(self.shift_for(lo_ns, hi_ns, 256))
        part = level.window(lo_ns, hi_ns)
        counts = level.counts[part]
        if lanes is not None:
            counts = counts[np.isin(level.keys[part] & LANE_MASK, lanes)]
        return int(counts.sum())

    def lane_totals(self) -> dict[int, int]:
        base = self.base
        lanes = base.keys & LANE_MASK
        if lanes.size == 0:
            return {}
        totals = np.bincount(lanes, weights=base.counts)
        present = np.flatnonzero(totals)
        return {int(lane): int(totals[lane]) for lane in present}

    def totals(self, shift: int) -> tuple[Int64s, Int64s, Int64s]:
        """Bins, counts and errors at one level summed over lanes."""
        level = self.level(shift)
        bins = level.keys >> LANE_BITS  # sorted: the keys are, bin first
        if bins.size == 0:
            return bins, bins.copy(), bins.copy()
        starts = np.flatnonzero(np.concatenate(([True], bins[1:] != bins[:-1])))
        return (bins[starts], np.add.reduceat(level.counts, starts),
                np.add.reduceat(level.errors, starts))


@dataclass(frozen=True)
class SpanRows:
    """Columns of spans (times in ns from the start; an open span ends at the end)."""

    span_id: Int64s
    pid_id: Int64s
    mfa_id: Int64s
    depth: Int64s
    start: Int64s
    end: Int64s
    outcome: npt.NDArray[np.int8]


OUTCOMES = ("return", "exception", "exit", "open")


class SpanIndex:
    """Spans overlapping a window without scanning them all (see the module doc)."""

    def __init__(self, rows: SpanRows) -> None:
        duration = np.maximum(rows.end - rows.start, 1)
        classes = np.floor(np.log2(duration.astype(np.float64))).astype(np.int64)
        order = np.lexsort((rows.start, classes))
        self.rows = SpanRows(*(getattr(rows, name)[order] for name in (
            "span_id", "pid_id", "mfa_id", "depth", "start", "end", "outcome")))
        self.classes = classes[order]
        self.size = int(order.size)
        present = np.unique(self.classes)
        self._ranges = {int(c): (int(np.searchsorted(self.classes, c, side="left")),
                                 int(np.searchsorted(self.classes, c, side="right")))
                        for c in present}

    def query(self, lo_ns: int, hi_ns: int, *, min_duration: int = 0,
              lanes: npt.NDArray[np.int64] | None = None, limit: int = 20_000) -> Int64s:
        """Row numbers of spans with ``start < hi`` and ``end >= lo`` lasting at least
        ``min_duration`` ns, longest classes first, at most ``limit``."""
        found: list[Int64s] = []
        total = 0
        rows = self.rows
        for cls in sorted(self._ranges, reverse=True):
            if (1 << (cls + 1)) <= min_duration:
                break
            a, b = self._ranges[cls]
            starts = rows.start[a:b]
            first = a + int(np.searchsorted(starts, lo_ns - (1 << (cls + 1)), side="left"))
            last = a + int(np.searchsorted(starts, hi_ns, side="left"))
            if last <= first:
                continue
            pick = np.arange(first, last, dtype=np.int64)
            keep = rows.end[first:last] >= lo_ns
            if min_duration:
                keep &= (rows.end[first:last] - rows.start[first:last]) >= min_duration
            if lanes is not None:
                keep &= np.isin(rows.pid_id[first:last], lanes)
            pick = pick[keep]
            if pick.size:
                found.append(pick[: limit - total])
                total += min(pick.size, limit - total)
            if total >= limit:
                break
        return np.concatenate(found) if found else np.zeros(0, dtype=np.int64)
