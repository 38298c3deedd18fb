"""Analysis queries on recordings built from agent batches, where every answer is
known: repeated call trees (grouping, ranking, callees as a multiset, nested repeats),
call statistics of a recursion, value search across encodings, the literal parser."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from elixirscope.analysis.find import needles
from elixirscope.analysis.literal import LiteralError, parse_term
from elixirscope.etf import Atom, Pid, encode
from elixirscope.recording.batch_builder import BatchBuilder
from elixirscope.recording.offline import record_batches
from elixirscope.recordings import QueryError, Recording, open_recording

MS = 1_000_000
T0 = 5_000 * MS
HANDLER, LOOKUP, DB = ("Elixir.Shop", "handler", 1), ("Elixir.Shop", "lookup", 1), (
    "Elixir.Repo", "db", 1)
F, A, B = ("Elixir.Shop", "f", 0), ("Elixir.Shop", "a", 1), ("Elixir.Shop", "b", 1)
REC = ("Elixir.Math", "fact", 1)


def build_repeats(path: Path) -> int:
    """Process 100: handler(1) twice, each doing lookup(700) -> db(700) twice (lookups take
    11 ms, handlers 30 ms). Process 101: lookup(700) -> db(800) once (another subtree), then
    f() calling a(1) and b(2), and f() again calling them the other way round (10 ms
    each), then fact(3) -> fact(2) -> fact(1) (30, 20, 10 ms). Process 102 sends a
    message with an atom encoded as OTP 25 does (ATOM_EXT)."""
    b = BatchBuilder()
    p, q, r = b.pid(100), b.pid(101), b.pid(102)

    def call(pid: Pid, ms: int, mfa: tuple[str, str, int], *args: object) -> None:
        b.add("call", pid, T0 + ms * MS, mfa=mfa, value=list(args))

    def ret(pid: Pid, ms: int, mfa: tuple[str, str, int], value: object) -> None:
        b.add("return", pid, T0 + ms * MS, mfa=mfa, value=value)

    for start in (0, 40):
        call(p, start, HANDLER, 1)
        for at in (start + 1, start + 13):
            call(p, at, LOOKUP, 700)
            call(p, at + 1, DB, 700)
            ret(p, at + 2, DB, (Atom("row"), 700))
            ret(p, at + 11, LOOKUP, (Atom("ok"), 700))
        ret(p, start + 30, HANDLER, Atom("done"))
    call(q, 0, LOOKUP, 700)
    call(q, 1, DB, 800)
    ret(q, 2, DB, (Atom("row"), 800))
    ret(q, 3, LOOKUP, (Atom("ok"), 700))
    for start, order in ((10, (A, B)), (30, (B, A))):
        call(q, start, F)
        for i, mfa in enumerate(order):
            arg = 1 if mfa is A else 2
            call(q, start + 1 + 2 * i, mfa, arg)
            ret(q, start + 2 + 2 * i, mfa, arg * 10)
        ret(q, start + 10, F, Atom("ok"))
    for n, at in ((3, 100), (2, 105), (1, 110)):
        call(q, at, REC, n)
    for n, at in ((1, 120), (2, 125), (3, 130)):
        ret(q, at, REC, {1: 1, 2: 2, 3: 6}[n])
    # {ok, 300} with ok as ATOM_EXT (tag 100), as term_to_binary writes it on OTP 25.
    b.add("send", r, T0 + 200 * MS, other=p, payload=b"\x83h\x02d\x00\x02okb\x00\x00\x01\x2c")
    return record_batches(path, [b.batch()])


@pytest.fixture(scope="module")
def rec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("analysis") / "repeats.duckdb"
    build_repeats(path)
    return path


@pytest.fixture
def rec(rec_path: Path) -> Iterator[Recording]:
    with open_recording(rec_path) as recording:
        yield recording


def test_repeated_trees_ranked_by_wasted_time(rec: Recording) -> None:
    found = rec.repeated_call_trees()
    assert [(t.mfa, t.example.args, t.count, t.size, round(t.wasted * 1000, 3))
            for t in found] == [
        ("Shop.lookup/1", "[700]", 4, 2, 33.0),   # 3 repeats x 11 ms
        ("Shop.handler/1", "[1]", 2, 5, 30.0),
        ("Shop.f/0", "[]", 2, 3, 10.0),         # callees in another order: the same tree
    ]
    # db(700) and a(1), b(2) only ever run inside one copy of a bigger repeated tree each
    # (as often as it): left out. lookup(700) on process 101 calls db(800): another tree.
    lookups = rec.spans(module="Shop", function="lookup")
    assert sorted(found[0].span_ids) == [s.span_id for s in lookups if s.pid_id == 1]
    assert [t.mfa for t in rec.repeated_call_trees(min_size=3)] == [
        "Shop.handler/1", "Shop.f/0"]
    assert [t.mfa for t in rec.repeated_call_trees(min_count=3)] == ["Shop.lookup/1"]
    assert [t.mfa for t in rec.repeated_call_trees(module="Shop", function="f")] == [
        "Shop.f/0"]
    assert [t.mfa for t in rec.repeated_call_trees(limit=1)] == ["Shop.lookup/1"]
    with pytest.raises(QueryError, match="min_count must be at least 2"):
        rec.repeated_call_trees(min_count=1)


def test_call_stats_counts_a_recursion_once(rec: Recording) -> None:
    fact = rec.call_stats(module="Math")
    assert [(s.mfa, s.count, s.open) for s in fact] == [("Math.fact/1", 3, 0)]
    row = fact[0]
    assert row.acc_time == pytest.approx(0.030) and row.own_time == pytest.approx(0.030)
    assert (row.min, row.p50, row.max) == pytest.approx((0.010, 0.020, 0.030))
    assert row.mean == pytest.approx(0.020) and row.p99 == pytest.approx(0.0298)
    handler = rec.call_stats(module="Shop", function="handler")[0]
    assert handler.acc_time == pytest.approx(0.060)
    assert handler.own_time == pytest.approx(0.060 - 4 * 0.011)
    by_count = rec.call_stats(sort="count", limit=2)
    assert [(s.mfa, s.count) for s in by_count] == [("Shop.lookup/1", 5), ("Repo.db/1", 5)]


def test_call_stats_by_process_splits_each_function(rec: Recording) -> None:
    whole = {s.mfa: s for s in rec.call_stats()}
    split = rec.call_stats(by="process", limit=None)
    assert all(s.pid is not None for s in split) and len(split) >= len(whole)
    for mfa, total in whole.items():
        parts = [s for s in split if s.mfa == mfa]
        assert sum(s.count for s in parts) == total.count
        assert sum(s.own_time for s in parts) == pytest.approx(total.own_time)
        assert sum(s.acc_time for s in parts) == pytest.approx(total.acc_time)
    # lookup/1 runs in two processes: one row each.
    assert [(s.pid, s.count) for s in split if s.mfa == "Shop.lookup/1"] == [
        ("#PID<0.100.0>", 4), ("#PID<0.101.0>", 1)]
    with pytest.raises(QueryError, match="by is one of function, process, name"):
        rec.call_stats(by="module")


def test_find_matches_terms_exactly_and_across_atom_encodings(rec: Recording) -> None:
    sent = rec.find((Atom("ok"), 300))
    assert [(e.kind, e.pid) for e in sent] == [("send", "#PID<0.102.0>")]
    assert [e.kind for e in rec.find(Atom("ok"), module="Shop", function="f")] == [
        "return", "return"]
    assert len(rec.find((Atom("row"), 700))) == 4
    assert [e.span_id is not None for e in rec.find((Atom("row"), 800))] == [True]
    assert rec.find(700.0) == [] and rec.find(True) == []
    assert len(rec.find(lambda v: v == 300)) == 1
    assert needles((Atom("ok"), 300)) == [b"okb\x00\x00\x01,", b"h\x02"]
    assert needles({Atom("a"): 1, Atom("b"): 2}) == [
        b"t\x00\x00\x00\x02", b"aa\x01", b"ba\x02"]
    assert needles("text") == [b"text"]


def test_find_small_integers_inside_charlists(tmp_path: Path) -> None:
    b = BatchBuilder()
    p = b.pid(100)
    assert encode([104, 105])[1] == ord("k")  # the VM's STRING_EXT for a charlist
    b.add("send", p, T0, other=p, value=[104, 105])                   # 1: ~c"hi"
    b.add("send", p, T0 + MS, other=p, value=b"hi")                   # 2: a binary
    b.add("call", p, T0 + 2 * MS, mfa=A, value=[105])                 # 3: [105] is ~c"i"
    b.add("return", p, T0 + 3 * MS, mfa=A, value=(Atom("ok"), 105))  # 4
    b.add("send", p, T0 + 4 * MS, other=p, value=[1, 2, 3])           # 5
    record_batches(tmp_path / "charlists.duckdb", [b.batch()])
    with open_recording(tmp_path / "charlists.duckdb") as rec:
        assert [e.seq for e in rec.find(105)] == [1, 3, 4]
        assert [e.seq for e in rec.find(2)] == [5]
        assert [e.seq for e in rec.find([104, 105])] == [1]
        # Text is found in binaries and in Erlang strings (charlists) alike.
        assert [e.seq for e in rec.find("hi")] == [1, 2]


def test_literals_as_elixir_writes_them() -> None:
    assert parse_term('{:ok, "a", [1, 2.5], %{key: nil, "k" => true}}') == (
        Atom("ok"), b"a", [1, 2.5], {Atom("key"): Atom("nil"), b"k": True})
    assert parse_term('"top"') == "top"
    assert parse_term("Bank.Account") == Atom("Elixir.Bank.Account")
    assert parse_term(':"with space"') == Atom("with space")
    assert parse_term("~c\"hi\"") == [104, 105]
    assert parse_term("-1_000") == -1000
    with pytest.raises(LiteralError, match="double quotes"):
        parse_term("hello world!")
    with pytest.raises(LiteralError, match="pids cannot"):
        parse_term("#PID<0.1.0>")
    assert encode(parse_term("[]")) == encode([])
