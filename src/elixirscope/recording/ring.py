"""The capture ring buffer between the network thread and the store writer.

It holds Arrow record batches (chunks of events) and counts in events: the capacity,
every write, read and drop is a number of events, so accounting stays exact while
the work is per chunk (a chunk split at the edge is a zero-copy slice).

Overflow strategies, chosen once:

* ``drop_oldest``: room is made by discarding the oldest events still unread.
* ``drop_newest``: what does not fit of the incoming chunk is discarded.
* ``block``: nothing is discarded; ``write`` takes what fits and reports the rest,
  and the producer waits for room (the recorder stops reading the node's socket
  meanwhile, so the agent sees a busy connection and sheds load inside the VM,
  where its own counters record it).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import pyarrow as pa

Overflow = Literal["drop_oldest", "drop_newest", "block"]
OVERFLOWS: tuple[Overflow, ...] = ("drop_oldest", "drop_newest", "block")


@dataclass(frozen=True)
class RingStats:
    capacity: int
    overflow: str
    written: int
    read: int
    dropped_oldest: int
    dropped_newest: int
    blocked: int
    blocked_seconds: float
    high_water: int

    @property
    def dropped(self) -> int:
        return self.dropped_oldest + self.dropped_newest

    @property
    def lag(self) -> int:
        """Events written and not yet read (nor dropped)."""
        return self.written - self.read - self.dropped_oldest


class RingBuffer:
    """A bounded FIFO of events, in chunks; one producer thread, one consumer thread."""

    def __init__(self, capacity: int = 1 << 20, overflow: Overflow = "drop_oldest") -> None:
        if capacity < 1 or capacity & (capacity - 1):
            raise ValueError(f"the ring buffer capacity must be a power of two, not {capacity}")
        if overflow not in OVERFLOWS:
            raise ValueError(f"overflow is one of {', '.join(OVERFLOWS)}, not {overflow!r}")
        self.capacity = capacity
        self.overflow = overflow
        self.on_space: Callable[[], None] | None = None
        self._chunks: deque[pa.RecordBatch] = deque()
        self._size = 0
        self._written = 0
        self._read = 0
        self._dropped_oldest = 0
        self._dropped_newest = 0
        self._blocked = 0
        self._blocked_since: float | None = None
        self._blocked_seconds = 0.0
        self._high_water = 0
        self._closed = False
        self._cond = threading.Condition()

    def write(self, chunk: pa.RecordBatch) -> int:
        """Adds ``chunk``; returns how many of its events are dealt with, kept or
        dropped: all of them, except with ``block`` when the ring is full, where the
        caller waits for room and writes the rest, ``chunk.slice(done)``."""
        count = chunk_count = int(chunk.num_rows)
        if not count:
            return 0
        with self._cond:
            free = self.capacity - self._size
            if self.overflow == "drop_oldest":
                if count > self.capacity:
                    self._dropped_oldest += count - self.capacity
                    self._written += count - self.capacity
                    chunk = chunk.slice(count - self.capacity)
                    count = self.capacity
                self._evict(count - free)
                taken = count
            elif self.overflow == "drop_newest":
                taken = min(count, free)
                self._dropped_newest += count - taken
                chunk = chunk.slice(0, taken)
            else:
                taken = min(count, free)
                chunk = chunk.slice(0, taken)
                if taken < count:
                    self._blocked += 1
                    if self._blocked_since is None:
                        self._blocked_since = time.monotonic()
            if taken:
                self._chunks.append(chunk)
                self._size += taken
                self._written += taken
                self._high_water = max(self._high_water, self._size)
                self._cond.notify()
            return taken if self.overflow == "block" else chunk_count

    def _evict(self, events: int) -> None:
        while events > 0 and self._chunks:
            oldest = self._chunks[0]
            if oldest.num_rows <= events:
                self._chunks.popleft()
                gone = oldest.num_rows
            else:
                self._chunks[0] = oldest.slice(events)
                gone = events
            self._size -= gone
            self._dropped_oldest += gone
            events -= gone

    def read(self, max_events: int, timeout: float | None = None) -> list[pa.RecordBatch]:
        """Up to ``max_events`` events, oldest first, waiting up to ``timeout`` seconds
        for the first; each event is read once."""
        with self._cond:
            if not self._size and not self._closed:
                self._cond.wait(timeout)
            taken: list[pa.RecordBatch] = []
            wanted = max_events
            while wanted > 0 and self._chunks:
                oldest = self._chunks[0]
                if oldest.num_rows <= wanted:
                    self._chunks.popleft()
                    taken.append(oldest)
                else:
                    taken.append(oldest.slice(0, wanted))
                    self._chunks[0] = oldest.slice(wanted)
                wanted -= taken[-1].num_rows
            got = max_events - wanted
            self._size -= got
            self._read += got
            if got and self._blocked_since is not None:
                self._blocked_seconds += time.monotonic() - self._blocked_since
                self._blocked_since = None
            on_space = self.on_space
        if got and on_space is not None:
            on_space()
        return taken

    def free(self) -> int:
        with self._cond:
            return self.capacity - self._size

    def close(self) -> None:
        """Wakes a waiting reader; what is buffered can still be read."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return self._size

    @property
    def stats(self) -> RingStats:
        with self._cond:
            blocked = self._blocked_seconds
            if self._blocked_since is not None:
                blocked += time.monotonic() - self._blocked_since
            return RingStats(self.capacity, self.overflow, self._written, self._read,
                             self._dropped_oldest, self._dropped_newest, self._blocked,
                             blocked, self._high_water)
