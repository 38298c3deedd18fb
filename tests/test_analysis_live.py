"""Analysis queries on one recording of the sample bank app, made against a real node:
an N+1 statement, a retry loop, a transfer between two account processes, balances.

The workload (driven over rpc, in this order):

* ``Bank.Account.balance(1)`` -> 1000;
* ``Bank.Statement.build(1, [1000, 2000, ..., 8000])``: per amount one
  ``Bank.Statement.line(1, amount)``, each doing the same ``Bank.Directory.lookup(1)``
  (5 ms, calling ``Bank.Directory.branch(1)``);
* ``Bank.Rates.fetch_with_retry(:eur, 3)``: ``retry(:eur, 10..7)`` nested, with
  ``fetch(:eur)`` answering ``{:error, :busy}`` three times, then ``{:ok, 1.08}``;
* ``Bank.Transfer.transfer(1, 2, 10)``: the coordinator calls account 1 (withdraw)
  and account 2 (deposit), each a ``GenServer.call`` into the account's process.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import elixirscope
from elixirscope.etf import Atom
from elixirscope.recording.results import Span
from elixirscope.recordings import QueryError, Recording, open_recording
from elixirscope.sample_nodes import BeamNode, start_sample

pytestmark = pytest.mark.node

AMOUNTS = [1000 * n for n in range(1, 9)]
MODULES = ("Bank.Statement", "Bank.Directory", "Bank.Rates", "Bank.Transfer", "Bank.Account")


@pytest.fixture(scope="module")
def bank() -> Iterator[BeamNode]:
    with start_sample("bank", name_prefix="t_analysis") as node:
        yield node


@pytest.fixture(scope="module")
def rec_path(bank: BeamNode, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("analysis") / "bank.duckdb"
    with elixirscope.attach(bank.name, bank.cookie) as scope:
        for module in MODULES:
            scope.trace(module, "detailed")
        node = scope.node
        scope.trace_process("Bank.Transfer", include=["messages"])
        for account in (1, 2):
            scope.trace_process(node.rpc("Elixir.Bank.Account", "whereis", [account]),
                                include=["messages"])
        recorder = scope.record(path)
        assert node.rpc("Elixir.Bank.Account", "balance", [1]) == 1000
        statement = node.rpc("Elixir.Bank.Statement", "build", [1, AMOUNTS])
        assert statement[Atom("total")] == sum(AMOUNTS)
        assert node.rpc("Elixir.Bank.Rates", "fetch_with_retry", [Atom("eur"), 3]) == (
            Atom("ok"), 1.08)
        assert node.rpc("Elixir.Bank.Transfer", "transfer", [1, 2, 10])[0] == Atom("ok")
        stats = recorder.stop()
    assert stats.agent_dropped == 0 and stats.ring.dropped == 0
    return path


@pytest.fixture
def rec(rec_path: Path) -> Iterator[Recording]:
    with open_recording(rec_path) as recording:
        yield recording


def only(spans: list[Span], args: str | None = None) -> Span:
    chosen = [span for span in spans if args is None or span.args == args]
    assert len(chosen) == 1, [span.args for span in spans]
    return chosen[0]


# --- repeated call trees ----------------------------------------------------------------


def test_the_n_plus_one_lookup_comes_first_then_the_retry_storm(rec: Recording) -> None:
    trees = rec.repeated_call_trees(module="Bank.Directory") + rec.repeated_call_trees(
        module="Bank.Rates")
    found = rec.repeated_call_trees(pid=trees[0].example.pid)
    assert [(tree.mfa, tree.example.args, tree.example.result, tree.count, tree.size)
            for tree in found] == [
        ("Bank.Directory.lookup/1", "[1]", '%{branch: :south, holder: "alice", id: 1}', 8, 2),
    ]
    first = found[0]
    lookups = rec.spans(module="Bank.Directory", function="lookup")
    assert sorted(first.span_ids) == [span.span_id for span in lookups]
    # Each lookup sleeps 5 ms: the seven repeats wasted at least 35 ms.
    assert first.wasted == pytest.approx(7 * first.mean) and first.wasted >= 0.035
    # branch(1) only ever runs inside a lookup(1), once each: not reported on its own.
    assert "Bank.Directory.branch/1" not in [tree.mfa for tree in found]
    retry = rec.repeated_call_trees(module="Bank.Rates")
    assert [(tree.mfa, tree.example.args, tree.example.result, tree.count)
            for tree in retry] == [("Bank.Rates.fetch/1", "[:eur]", "{:error, :busy}", 3)]
    everything = rec.repeated_call_trees()
    assert everything[0].mfa == "Bank.Directory.lookup/1"
    assert rec.repeated_call_trees(module="Bank.Directory", min_size=3) == []
    assert rec.repeated_call_trees(module="Bank.Directory", min_count=9) == []


# --- call statistics ----------------------------------------------------------------------


def test_call_stats_counts_and_own_time(rec: Recording) -> None:
    stats = {row.mfa: row for row in rec.call_stats(module="Bank.Directory")
             + rec.call_stats(module="Bank.Statement") + rec.call_stats(module="Bank.Rates")}
    assert {mfa: row.count for mfa, row in stats.items()} == {
        "Bank.Directory.lookup/1": 8, "Bank.Directory.branch/1": 8,
        "Bank.Statement.build/2": 1, "Bank.Statement.line/2": 8,
        "Bank.Rates.fetch_with_retry/2": 1, "Bank.Rates.retry/2": 4, "Bank.Rates.fetch/1": 4}
    lookup = stats["Bank.Directory.lookup/1"]
    spans = rec.spans(module="Bank.Directory", function="lookup")
    durations = sorted(span.duration or 0 for span in spans)
    assert lookup.acc_time == pytest.approx(sum(durations))
    assert lookup.min == pytest.approx(durations[0]) and lookup.max == pytest.approx(
        durations[-1])
    assert lookup.min >= 0.005
    branches = sum(span.duration or 0 for span in rec.spans(module="Bank.Directory",
                                                           function="branch"))
    assert lookup.own_time == pytest.approx(lookup.acc_time - branches)
    build = stats["Bank.Statement.build/2"]
    line_total = stats["Bank.Statement.line/2"].acc_time
    assert build.own_time == pytest.approx(build.acc_time - line_total)
    # retry/2 recurses four deep: accumulated time counts only the outermost call.
    retries = rec.spans(module="Bank.Rates", function="retry")
    outer = min(retries, key=lambda span: span.span_id)
    assert stats["Bank.Rates.retry/2"].acc_time == pytest.approx(outer.duration)
    ranked = rec.call_stats(module="Bank.Directory", sort="count")
    assert [row.count for row in ranked] == [8, 8]
    with pytest.raises(QueryError, match="sort must be one of"):
        rec.call_stats(sort="fastest")


# --- find ---------------------------------------------------------------------------------


def test_find_a_value_in_arguments_results_and_messages(rec: Recording) -> None:
    hits = rec.find(3000)
    # build's arguments, line(1, 3000)'s call and return, build's return.
    assert [(event.kind, event.mfa) for event in hits] == [
        ("call", "Bank.Statement.build/2"), ("call", "Bank.Statement.line/2"),
        ("return", "Bank.Statement.line/2"), ("return", "Bank.Statement.build/2")]
    line = only(rec.spans(module="Bank.Statement", function="line"), "[1, 3000]")
    assert hits[1].span_id == line.span_id and hits[2].span_id == line.span_id
    # The holder's name in lookup's and line's returns and in build's. The accounts'
    # state (owner: "alice") does not travel with their handle_call/3 calls: a
    # callback's state argument is never shipped (it prints as #state).
    assert [e.kind for e in rec.find("alice", module="Bank.Directory")] == ["return"] * 8
    assert len(rec.find("alice", module="Bank.Statement")) == 8 + 1
    assert "Bank.Account.handle_call/3" not in {
        e.mfa for e in rec.find("alic", module="Bank.Account", kind="call")}
    busy = rec.find((Atom("error"), Atom("busy")))
    assert [(event.kind, event.mfa) for event in busy] == [
        ("return", "Bank.Rates.fetch/1")] * 3
    assert rec.find(3000.0) == [] and rec.find(1.08)[0].mfa == "Bank.Rates.fetch/1"
    transfer = rec.find((Atom("transfer"), 1, 2, 10))
    assert {event.kind for event in transfer} == {"receive", "call"}
    assert [e.seq for e in rec.find(lambda v: v == 3000)] == [e.seq for e in hits]
    assert rec.find(AMOUNTS[-1], kind="return", limit=1)[0].mfa == "Bank.Statement.line/2"


# --- traceback and stepping across processes ----------------------------------------------


def deposit_handler(rec: Recording) -> Span:
    calls = rec.spans(module="Bank.Account", function="handle_call")
    return only([span for span in calls if span.args.startswith("[{:deposit, 10, 1}")])


def test_traceback_follows_the_message_to_the_coordinator(rec: Recording) -> None:
    handler = deposit_handler(rec)
    returned = rec.event(rec.range(handler).span.span_id)
    end = rec.next(returned, by="span")
    assert end is not None and end.kind == "return" and end.span_id == handler.span_id
    found = rec.traceback(end.seq)
    # The coordinator's send happened inside its call to the account: the wait on it
    # (:gen.call/4) is on its stack.
    assert [[span.mfa for span in link.stack] for link in found.links] == [
        ["Bank.Account.handle_call/3"],
        [":gen.call/4", "Bank.Account.deposit/3", "Bank.Transfer.handle_call/3"]]
    first, second = found.links
    assert first.event.seq == end.seq and first.message is not None
    assert "{:deposit, 10, 1}" in first.message.text
    assert second.event.kind == "send" and second.event.pid_name == "Bank.Transfer"
    assert second.event.seq == first.message.send_seq
    assert second.message is not None and "{:transfer, 1, 2, 10}" in second.message.text
    assert "sends were not recorded" in found.origin
    causes = rec.causes(end.seq)
    assert second.event.seq in [step.event.seq for step in causes]


def test_stepping_by_process_span_and_message(rec: Recording) -> None:
    coordinator = only(rec.spans(module="Bank.Transfer", function="handle_call"))
    call = rec.event(coordinator.span_id)
    inside = rec.next(call)
    assert inside is not None and inside.mfa == "Bank.Account.withdraw/3"
    over = rec.next(call, by="span")
    assert over is not None and over.kind == "return" and over.span_id == call.seq
    assert rec.prev(over, by="span") == call
    # From the withdraw call, stepping over lands on its return, then on deposit.
    withdraw_return = rec.next(inside, by="span")
    assert withdraw_return is not None and withdraw_return.mfa == "Bank.Account.withdraw/3"
    send = rec.next(inside, by="message")
    assert send is not None and send.kind == "send" and "withdraw" in send.text
    receive = rec.next(send, by="message")
    assert receive is not None and receive.kind == "receive" and receive.pid != send.pid
    handler = rec.next(receive, by="message")
    assert handler is not None and handler.kind == "call"
    assert handler.mfa == "Bank.Account.handle_call/3" and handler.pid == receive.pid
    assert rec.prev(handler, by="message") == receive
    assert rec.prev(receive, by="message") == send
    with pytest.raises(QueryError, match="by must be one of"):
        rec.next(call, by="time")


# --- range ----------------------------------------------------------------------------------


def test_range_is_the_tree_under_a_call(rec: Recording) -> None:
    build = only(rec.spans(module="Bank.Statement", function="build"))
    tree = rec.range(build.span_id)
    assert [child.span.args for child in tree.children] == [f"[1, {a}]" for a in AMOUNTS]
    assert [node.span.mfa for node in tree.children[0].walk()] == [
        "Bank.Statement.line/2", "Bank.Directory.lookup/1", "Bank.Directory.branch/1"]
    assert len(tree.walk()) == 1 + 8 * 3 and not any(node.cut for node in tree.walk())
    shallow = rec.range(build, max_depth=1)
    assert len(shallow.children) == 8 and all(child.cut and not child.children
                                              for child in shallow.children)
    assert rec.range(build, max_depth=0).cut
    limited = rec.range(build, limit=5)
    assert len(limited.walk()) == 6 and limited.cut
    coordinator = only(rec.spans(module="Bank.Transfer", function="handle_call"))
    with_messages = rec.range(coordinator, messages=True)
    withdraw = with_messages.children[0]
    assert withdraw.span.mfa == "Bank.Account.withdraw/3"
    # Its request and the reply travel inside the wait it made on the account.
    wait = next(child for child in withdraw.children if child.span.mfa == ":gen.call/4")
    assert [event.kind for event in wait.events] == ["send", "receive"]
    assert rec.range(coordinator).children[0].events == ()


# --- rerun ------------------------------------------------------------------------------------


def test_rerun_compares_with_the_recorded_result(rec: Recording, bank: BeamNode) -> None:
    lookup = rec.spans(module="Bank.Directory", function="lookup")[0]
    balance = rec.spans(module="Bank.Account", function="balance")[0]
    assert balance.args == "[1]" and balance.result == "1000"
    with elixirscope.connect(bank.name, bank.cookie) as node:
        same = rec.rerun(lookup, node)
        assert same.status == "equal" and same.differences == ()
        changed = rec.rerun(balance.span_id, node)
        assert changed.status == "differs"
        assert changed.differences == ("the result: 1000 -> 990",)
        node.rpc("Elixir.Bank.Directory", "set_offline", [True])
        try:
            raised = rec.rerun(lookup, node)
        finally:
            node.rpc("Elixir.Bank.Directory", "set_offline", [False])
        assert raised.status == "raised" and "directory offline" in (raised.error or "")
        with pytest.raises(QueryError, match="there is no span 1000000000"):
            rec.rerun(10**9, node)
