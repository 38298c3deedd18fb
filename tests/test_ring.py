"""The capture ring buffer: capacity rules, overflow strategies, exact accounting."""

from __future__ import annotations

import threading

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elixirscope.recording.ring import RingBuffer


def chunk(start: int, count: int) -> pa.RecordBatch:
    return pa.RecordBatch.from_arrays([pa.array(range(start, start + count))], names=["seq"])


def values(chunks: list[pa.RecordBatch]) -> list[int]:
    return [v for c in chunks for v in c.column(0).to_pylist()]


@pytest.mark.parametrize("capacity", [0, 3, 6, 1000, -4])
def test_capacity_must_be_a_power_of_two(capacity: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        RingBuffer(capacity)


def test_unknown_overflow_strategy_is_refused() -> None:
    with pytest.raises(ValueError, match="drop_oldest, drop_newest, block"):
        RingBuffer(8, "spill")  # type: ignore[arg-type]


def test_drop_oldest_keeps_the_newest_events() -> None:
    ring = RingBuffer(8, "drop_oldest")
    assert ring.write(chunk(0, 5)) == 5
    assert ring.write(chunk(5, 6)) == 6
    assert values(ring.read(100)) == list(range(3, 11))
    stats = ring.stats
    assert (stats.written, stats.read, stats.dropped_oldest, stats.dropped_newest) == (11, 8, 3, 0)
    assert stats.lag == 0


def test_drop_oldest_with_a_chunk_larger_than_the_ring() -> None:
    ring = RingBuffer(4, "drop_oldest")
    ring.write(chunk(0, 2))
    ring.write(chunk(2, 10))
    assert values(ring.read(100)) == [8, 9, 10, 11]
    assert ring.stats.dropped_oldest == 8


def test_drop_newest_keeps_the_oldest_events() -> None:
    ring = RingBuffer(8, "drop_newest")
    assert ring.write(chunk(0, 5)) == 5
    assert ring.write(chunk(5, 6)) == 6
    assert values(ring.read(100)) == list(range(0, 8))
    stats = ring.stats
    assert (stats.written, stats.dropped_newest, stats.dropped_oldest) == (8, 3, 0)


def test_block_takes_what_fits_and_drops_nothing() -> None:
    ring = RingBuffer(8, "block")
    assert ring.write(chunk(0, 5)) == 5
    rest = chunk(5, 6)
    done = ring.write(rest)
    assert done == 3
    assert ring.stats.blocked == 1
    assert values(ring.read(4)) == [0, 1, 2, 3]
    assert ring.write(rest.slice(done)) == 3
    assert values(ring.read(100)) == list(range(4, 11))
    stats = ring.stats
    assert stats.dropped == 0 and stats.written == stats.read == 11


def test_reads_split_chunks_and_return_each_event_once() -> None:
    ring = RingBuffer(16)
    ring.write(chunk(0, 10))
    assert values(ring.read(3)) == [0, 1, 2]
    assert values(ring.read(3)) == [3, 4, 5]
    assert values(ring.read(100)) == [6, 7, 8, 9]
    assert ring.read(10, timeout=0) == []


def test_a_reader_waits_for_a_writer_on_another_thread() -> None:
    ring = RingBuffer(1024, "block")
    got: list[int] = []

    def consume() -> None:
        while len(got) < 5000:
            got.extend(values(ring.read(100, timeout=5)))

    reader = threading.Thread(target=consume)
    reader.start()
    sent = 0
    while sent < 5000:
        piece = chunk(sent, 50)
        done = 0
        while done < 50:
            done += ring.write(piece.slice(done))
        sent += 50
    reader.join(10)
    assert got == list(range(5000))


def test_space_callback_runs_after_a_read() -> None:
    ring = RingBuffer(4, "block")
    calls: list[int] = []
    ring.on_space = lambda: calls.append(ring.free())
    ring.write(chunk(0, 4))
    ring.read(2)
    assert calls == [2]


@settings(max_examples=300, deadline=None)
@given(strategy=st.sampled_from(["drop_oldest", "drop_newest", "block"]),
       capacity_log=st.integers(0, 6),
       ops=st.lists(st.tuples(st.booleans(), st.integers(0, 70)), max_size=40))
def test_the_ring_behaves_like_a_plain_list_model(strategy: str, capacity_log: int,
                                                  ops: list[tuple[bool, int]]) -> None:
    """Every read, every drop by strategy and every counter equals what a list that
    applies the strategy one event at a time gives."""
    capacity = 1 << capacity_log
    ring = RingBuffer(capacity, strategy)  # type: ignore[arg-type]
    model: list[int] = []
    written = dropped_oldest = dropped_newest = read = 0
    offered = 0
    for is_write, size in ops:
        if is_write:
            done = ring.write(chunk(offered, size))
            expected_done = size
            for value in range(offered, offered + size):
                if len(model) < capacity:
                    model.append(value)
                    written += 1
                elif strategy == "drop_oldest":
                    model.pop(0)
                    model.append(value)
                    written += 1
                    dropped_oldest += 1
                elif strategy == "drop_newest":
                    dropped_newest += 1
                else:
                    expected_done = value - offered
                    break
            assert done == expected_done
            offered += done
        else:
            expected, model = model[:size], model[size:]
            read += len(expected)
            assert values(ring.read(size, timeout=0)) == expected
        assert len(ring) == len(model) <= capacity
    stats = ring.stats
    assert (stats.written, stats.read, stats.dropped_oldest, stats.dropped_newest) == (
        written, read, dropped_oldest, dropped_newest)
    assert stats.lag == len(model)
