"""Agent batches into columnar chunks: the same events the per-event decoder sees."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elixirscope.errors import ProtocolError
from elixirscope.etf import Atom, decode, encode
from elixirscope.recording.batch_builder import BatchBuilder
from elixirscope.recording.ingest import BatchIngest, Dimensions, SeqCounter
from elixirscope.tracing.batch import BatchDecoder
from elixirscope.tracing.events import KIND_CODES

NODE = "app@host"
MFA = ("Elixir.Bank.Account", "deposit", 2)


def ingest_for(dimensions: Dimensions | None = None, **options: Any) -> BatchIngest:
    return BatchIngest(NODE, 1, 1_000, dimensions or Dimensions(), SeqCounter(), **options)


def sample_builder() -> BatchBuilder:
    builder = BatchBuilder(NODE)
    a, b = builder.pid(80), builder.pid(81)
    builder.add("call", a, 10, mfa=MFA, value=[1, 2])
    builder.add("call", a, 11, mfa=("lists", "seq", 2), caller=MFA, value=[1, 3])
    builder.add("return", a, 12, mfa=MFA, value=Atom("ok"))
    builder.add("send", a, 13, other=b, value=(Atom("hello"), 1))
    builder.add("receive", b, 15, value=(Atom("hello"), 1))
    builder.add("send", a, 16, value=(Atom("Elixir.Bank.Auditor"), Atom("check")), flags=2)
    builder.add("exit", b, 20, value=Atom("normal"))
    return builder


def test_columns_match_the_per_event_decoder() -> None:
    builder = sample_builder()
    batch = builder.batch()
    events = BatchDecoder(NODE, 1_000).decode(batch)
    dimensions = Dimensions()
    chunk = ingest_for(dimensions).ingest(batch).to_pydict()
    pid_of = {pid_id: pid for pid, pid_id in dimensions.pids.items()}
    assert chunk["seq"] == list(range(1, len(events) + 1))
    for row, event in enumerate(events):
        assert chunk["kind"][row] == KIND_CODES[event.kind]
        assert pid_of[chunk["pid_id"][row]] == event.pid
        assert chunk["ts"][row] == event.timestamp
        assert chunk["wall_offset"][row] == 1_000
        assert chunk["original_size"][row] == event.original_size
    assert chunk["caller_mfa_id"][1] == chunk["mfa_id"][0]
    assert chunk["other_pid_id"][1] is None
    assert pid_of[chunk["other_pid_id"][3]] == events[4].pid
    # A send by name keeps the message alone, so it matches the receive's bytes.
    assert chunk["target"][5] == "Bank.Auditor"
    assert decode(chunk["payload"][5]) == Atom("check")
    assert chunk["payload"][3] == chunk["payload"][4]
    assert [t for t in chunk["target"] if t is not None] == ["Bank.Auditor"]


def test_hlc_is_strictly_increasing_even_when_clocks_repeat() -> None:
    builder = BatchBuilder(NODE)
    pid = builder.pid(5)
    for ts in (100, 100, 100, 90, 200, 200):
        builder.add("receive", pid, ts, value=1)
    ingest = ingest_for()
    first = ingest.ingest(builder.batch()).column("hlc").to_pylist()
    builder.add("receive", pid, 50, value=1)
    second = ingest.ingest(builder.batch()).column("hlc").to_pylist()
    hlc = first + second
    assert all(later > earlier for earlier, later in itertools.pairwise(hlc))
    assert hlc[0] == 100 + 1_000 and hlc[4] == 200 + 1_000


def test_sequence_gaps_and_agent_drops_are_recorded_as_loss() -> None:
    builder = BatchBuilder(NODE)
    pid = builder.pid(5)
    dimensions = Dimensions()
    ingest = ingest_for(dimensions)
    builder.add("receive", pid, 1, value=1)
    ingest.ingest(builder.batch())
    builder.add("receive", pid, 2, value=1)
    builder.dropped = 40
    ingest.ingest(builder.batch(skip_seq=2))
    _, _, losses = dimensions.take()
    assert [(x.source, x.events, x.batches, x.before_seq) for x in losses] == [
        ("agent_gap", None, 2, 2), ("agent_dropped", 40, None, 2)]
    assert ingest.lost_batches == 2


def test_a_mid_session_ingest_learns_earlier_indexes_through_lookup() -> None:
    builder = sample_builder()
    earlier = builder.batch()
    decoder = BatchDecoder(NODE)
    decoder.learn(earlier[2], earlier[3])
    builder.add("call", builder.pid(80), 30, mfa=MFA, value=[])
    later = builder.batch()
    assert later[2] == [] and later[3] == []
    with pytest.raises(ProtocolError, match="never sent"):
        ingest_for().ingest(later)
    chunk = ingest_for(lookup=decoder.lookup).ingest(later)
    assert chunk.num_rows == 1 and chunk.column("mfa_id")[0].as_py() == 1


@pytest.mark.parametrize("batch", [
    None, (Atom("es_batch"),), (Atom("other"), 1, [], [], (0, 0, 0, 0, 1.0), b"", b""),
    (Atom("es_batch"), 1, [], [], (0, 0, 0, 0, 1.0), b"\x00" * 29, b""),
    (Atom("es_batch"), 1, [(1, Atom("x"))], [], (0, 0, 0, 0, 1.0), b"", b""),
    (Atom("es_batch"), 1, [], [], (0, 0), b"", b""),
])
def test_malformed_batches_raise_protocol_error(batch: Any) -> None:
    with pytest.raises(ProtocolError):
        ingest_for().ingest(batch)


def test_payload_lengths_must_add_up() -> None:
    batch = list(sample_builder().batch())
    batch[6] = batch[6][:-1]
    with pytest.raises(ProtocolError, match="add up"):
        ingest_for().ingest(tuple(batch))


def test_unknown_pid_index_is_a_protocol_error() -> None:
    builder = BatchBuilder(NODE)
    builder.add("receive", builder.pid(1), 1, value=1)
    batch = list(builder.batch())
    batch[2] = []
    with pytest.raises(ProtocolError):
        ingest_for().ingest(tuple(batch))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["call", "return", "send", "receive", "exit"]),
                          st.integers(0, 5), st.integers(-10**12, 10**12),
                          st.one_of(st.integers(), st.binary(max_size=40),
                                    st.lists(st.integers(-5, 300), max_size=5))),
                min_size=1, max_size=60))
def test_any_batch_round_trips_through_the_columns(
        rows: list[tuple[str, int, int, Any]]) -> None:
    builder = BatchBuilder(NODE)
    for kind, pid_number, ts, value in rows:
        builder.add(kind, builder.pid(pid_number), ts,
                    mfa=MFA if kind in ("call", "return") else None, value=value)
    chunk = ingest_for().ingest(builder.batch()).to_pydict()
    assert [decode(raw) for raw in chunk["payload"]] == [row[3] for row in rows]
    assert chunk["ts"] == [row[2] for row in rows]
    assert chunk["payload"] == [encode(row[3]) for row in rows]


def test_unknown_function_index_is_a_protocol_error_not_a_null() -> None:
    builder = BatchBuilder(NODE)
    builder.add("call", builder.pid(1), 1, mfa=MFA, value=[])
    batch = list(builder.batch())
    batch[3] = []
    with pytest.raises(ProtocolError, match="never sent"):
        ingest_for().ingest(tuple(batch))
