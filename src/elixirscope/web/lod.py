"""Level of detail for the timeline, computed on the server.

``Pyramid``: activity per lane in time bins at every power-of-two resolution. The
finest level is built from the events once per opened recording (one GROUP BY over
``(bin, pid_id)`` keys), the coarser ones by merging pairs of bins, lazily, each once;
a window then costs two binary searches and a slice, whatever the recording's size.
A live recording extends the finest level with the events flushed since the last
refresh.

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

LANE_BITS = 24
LANE_MASK = (1 << LANE_BITS) - 1
# The finest level has at most this many bins over the whole recording.
MAX_BASE_BINS = 1 << 16
MIN_BASE_SHIFT = 10  # 1 µs

Int64s = npt.NDArray[np.int64]


def base_shift_for(duration_ns: int) -> int:
    """The log2 of the finest bin width (ns) for a recording this long."""
    shift = MIN_BASE_SHIFT
    while (max(duration_ns, 1) >> shift) >= MAX_BASE_BINS:
        shift += 1
    return shift


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
    """Sums rows with equal keys; the result sorted by key (shift left unset: 0)."""
    if keys.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return Level(0, empty, empty.copy(), empty.copy())
    unique, inverse = np.unique(keys, return_inverse=True)
    return Level(0, unique.astype(np.int64),
                 np.bincount(inverse, weights=counts, minlength=unique.size).astype(np.int64),
                 np.bincount(inverse, weights=errors, minlength=unique.size).astype(np.int64))


class Pyramid:
    """Activity bins at every resolution from ``2^base_shift`` ns up."""

    def __init__(self, base_shift: int, keys: Int64s, counts: Int64s,
                 errors: Int64s) -> None:
        self.base_shift = base_shift
        self._lock = threading.Lock()
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
        """Adds finest-level rows (a live recording's new events)."""
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
        with self._lock:
            found = self._levels.get(shift)
            if found is not None:
                return found
            finer = self._levels.get(shift - 1)
        if finer is None:
            finer = self.level(shift - 1)
        lanes = finer.keys & LANE_MASK
        coarse = ((finer.keys >> LANE_BITS) >> 1) << LANE_BITS | lanes
        merged = merge(coarse, finer.counts, finer.errors)
        made = Level(shift, merged.keys, merged.counts, merged.errors)
        with self._lock:
            self._levels.setdefault(shift, made)
        return made

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
        bins = level.keys >> LANE_BITS
        if bins.size == 0:
            return bins, bins.copy(), bins.copy()
        unique, inverse = np.unique(bins, return_inverse=True)
        return (unique, np.bincount(inverse, weights=level.counts).astype(np.int64),
                np.bincount(inverse, weights=level.errors).astype(np.int64))


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
