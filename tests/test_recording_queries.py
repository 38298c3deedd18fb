"""Queries over recordings built from agent batches: every filter, the result objects,
causal chains, the summary, and files that are damaged, foreign, busy or unfinished."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import elixirscope
from elixirscope.elixir_format import inspect
from elixirscope.etf import Atom, Pid, Reference, encode
from elixirscope.recording import query as query_module
from elixirscope.recording import sql as sql_module
from elixirscope.recording.batch_builder import BatchBuilder
from elixirscope.recording.offline import record_batches
from elixirscope.recording.query import search_tokens
from elixirscope.recording.store import RecordingError, put_meta
from elixirscope.recording.timespec import TimeSpecError
from elixirscope.recordings import QueryError, Recording, open_recording
from elixirscope.tracing.events import TARGET_NOT_PID, TRUNCATED

MS = 1_000_000
T0 = 5_000 * MS
START = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
OFFSET = int(START.timestamp()) * 1_000_000_000 - T0

SUP, CLIENT, ACCOUNT, AUDITOR, WORKER = (
    "#PID<0.50.0>", "#PID<0.100.0>", "#PID<0.101.0>", "#PID<0.102.0>", "#PID<0.104.0>")
AUDIT = (Atom("audit"), "deposit of 12345\nok")
# Over 65535 elements: the VM encodes it element by element, not as one string.
CHARLIST = [ord(c) for c in "hello world " * 6000]
MAPSET = {Atom("__struct__"): Atom("Elixir.MapSet"), Atom("map"): {7: []}}


def build_bank(path: Path) -> int:
    """A bank in 31 events (seq = line order below), times in ms from the start:
    a client deposits into an account, whose handler tells the auditor (by name),
    whose handler writes to ETS; a worker spawned by the account crashes."""
    b = BatchBuilder()
    sup, client, account, auditor, worker = (b.pid(n) for n in (50, 100, 101, 102, 104))
    ok = Atom("ok")
    deposit, handle_call = ("Elixir.Bank.Client", "deposit", 2), (
        "Elixir.Bank.Account", "handle_call", 3)
    apply, risky = ("Elixir.Bank.Account", "apply", 2), ("Elixir.Bank.Account", "risky", 1)
    cast, record = ("Elixir.Bank.Auditor", "handle_cast", 2), (
        "Elixir.Bank.Auditor", "record", 1)
    insert, start = ("ets", "insert", 2), ("Elixir.Bank.Client", "start", 1)

    def at(ms: int) -> int:
        return T0 + ms * MS

    b.add("register", sup, at(0), value=Atom("bank_sup"))                       # 1
    b.add("spawn", sup, at(0), mfa=start, other=client, value=[1])             # 2
    b.add("spawned", client, at(0), mfa=start, other=sup, value=[1])           # 3
    b.add("register", auditor, at(1), value=Atom("Elixir.Bank.Auditor"))        # 4
    b.add("call", client, at(10), mfa=deposit, value=[account, 12345])         # 5
    b.add("send", client, at(11), other=account, value=(Atom("deposit"), 12345))
    b.add("receive", account, at(12), value=(Atom("deposit"), 12345))          # 7
    b.add("call", account, at(13), mfa=handle_call,
          value=[(Atom("deposit"), 12345), client, {Atom("balance"): 0}])      # 8
    b.add("call", account, at(14), mfa=apply, value=[0, 12345])                # 9
    b.add("send", account, at(15), other=auditor, flags=TARGET_NOT_PID,
          value=(Atom("Elixir.Bank.Auditor"), AUDIT))                           # 10
    b.add("receive", auditor, at(16), value=AUDIT)                             # 11
    b.add("return", account, at(20), mfa=apply, value=12345)                   # 12
    b.add("return", account, at(25), mfa=handle_call,
          value=(Atom("reply"), ok, {Atom("balance"): 12345}))                 # 13
    b.add("send", account, at(26), other=client, value=ok)                     # 14
    b.add("receive", client, at(27), value=ok)                                 # 15
    b.add("return", client, at(28), mfa=deposit, value=ok)                     # 16
    first = b.batch()
    b.add("call", auditor, at(30), mfa=cast, value=[AUDIT, []])                # 17
    b.add("call", auditor, at(31), mfa=record, value=[AUDIT[1]])               # 18
    b.add("call", auditor, at(32), mfa=insert, value=[Atom("audit_log"), (1, AUDIT[1])])
    b.add("return", auditor, at(33), mfa=insert, value=True)                   # 20
    b.add("return", auditor, at(40), mfa=record, value=ok)                     # 21
    b.add("return", auditor, at(45), mfa=cast, value=(Atom("noreply"), []))    # 22
    b.add("spawn", account, at(50), mfa=risky, other=worker, value=[0])        # 23
    b.add("call", worker, at(51), mfa=risky, value=[0])                        # 24
    b.add("exception", worker, at(52), mfa=risky,
          value=(Atom("error"), Atom("badarith")))                             # 25
    b.add("exit", worker, at(53), value=(Atom("badarith"), []))                # 26
    b.add("exit", client, at(60), value=Atom("normal"))                        # 27
    b.add("exit", auditor, at(61), value=(Atom("shutdown"), Atom("tired")))    # 28
    b.add("send_to_dead", account, at(62), other=worker, value=Atom("ping"))   # 29
    b.add("receive", account, at(65), value=CHARLIST)                          # 30
    b.add("receive", account, at(66), value=MAPSET, flags=TRUNCATED)           # 31
    return record_batches(path, [first, b.batch(skip_seq=2)], offset_ns=OFFSET)


@pytest.fixture(scope="module")
def bank_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("rec") / "bank.duckdb"
    assert build_bank(path) == 31
    return path


@pytest.fixture
def bank(bank_path: Path) -> Any:
    with open_recording(bank_path) as rec:
        yield rec


def seqs(results: list[Any]) -> list[int]:
    return [result.seq for result in results]


# --- events ---------------------------------------------------------------------------


def test_open_recording_is_exported_and_a_context_manager(bank_path: Path) -> None:
    with elixirscope.open_recording(bank_path) as rec:
        assert isinstance(rec, elixirscope.Recording)
        assert rec.recovered is False
        assert len(rec.events()) == 31
    with pytest.raises(duckdb.Error):
        rec.con.execute("SELECT 1")


def test_events_come_in_time_order_with_limit_and_order(bank: Recording) -> None:
    assert seqs(bank.events()) == list(range(1, 32))
    assert seqs(bank.events(order="desc")) == list(range(31, 0, -1))
    assert seqs(bank.events(limit=3)) == [1, 2, 3]
    assert seqs(bank.events(limit=3, order="desc")) == [31, 30, 29]
    assert bank.events(limit=0) == []
    assert seqs(bank.events(limit=None)) == list(range(1, 32))
    with pytest.raises(QueryError, match="asc or desc"):
        bank.events(order="up")


@pytest.mark.parametrize("pid", ["#PID<0.102.0>", "<0.102.0>", " <0.102.0> ", "Bank.Auditor",
                                 "Elixir.Bank.Auditor"])
def test_events_of_a_process_by_pid_or_name(bank: Recording, pid: str) -> None:
    assert seqs(bank.events(pid=pid)) == [4, 11, 17, 18, 19, 20, 21, 22, 28]


def test_events_of_a_process_by_erlang_name_or_pid_id(bank: Recording) -> None:
    assert seqs(bank.events(pid=":bank_sup")) == [1, 2]
    assert seqs(bank.events(pid="bank_sup")) == [1, 2]
    worker = bank.events(pid=WORKER)[0]
    assert seqs(bank.events(pid=worker.pid_id)) == [24, 25, 26]


def test_unknown_processes_are_a_query_error(bank: Recording) -> None:
    with pytest.raises(QueryError, match=r"no #PID<0\.999\.0> in .*bank\.duckdb"):
        bank.events(pid="<0.999.0>")
    with pytest.raises(QueryError, match=r"no process named Bank\.Nobody"):
        bank.events(pid="Bank.Nobody")
    with pytest.raises(QueryError, match="pid_id 999"):
        bank.events(pid=999)


@pytest.mark.parametrize(("module", "function", "expected"), [
    ("Bank.Account", None, [8, 9, 12, 13, 23, 24, 25]),
    ("Elixir.Bank.Account", None, [8, 9, 12, 13, 23, 24, 25]),
    (":ets", None, [19, 20]),
    ("ets", None, [19, 20]),
    (None, "handle_call", [8, 13]),
    (None, "handle_call/3", [8, 13]),
    ("Bank.Account", "risky", [23, 24, 25]),
    ("Bank.Auditor", ":record/1", [18, 21]),
])
def test_events_of_functions(bank: Recording, module: str | None, function: str | None,
                             expected: list[int]) -> None:
    assert seqs(bank.events(module=module, function=function)) == expected


def test_functions_that_never_ran_are_a_query_error(bank: Recording) -> None:
    with pytest.raises(QueryError, match=r"Bank\.Vault does not appear"):
        bank.events(module="Bank.Vault")
    with pytest.raises(QueryError, match=r"Bank\.Account handle_call/2 does not appear"):
        bank.events(module="Bank.Account", function="handle_call/2")


def test_events_of_kinds(bank: Recording) -> None:
    assert seqs(bank.events(kind="send")) == [6, 10, 14]
    assert seqs(bank.events(kind=["exit", "send_to_dead"])) == [26, 27, 28, 29]
    assert seqs(bank.events(kind="receive", pid=ACCOUNT)) == [7, 30, 31]
    with pytest.raises(QueryError, match="'sned' is not an event kind"):
        bank.events(kind="sned")


def test_filters_combine(bank: Recording) -> None:
    assert seqs(bank.events(pid=ACCOUNT, kind="call", module="Bank.Account",
                            since=0.0135)) == [9]


@pytest.mark.parametrize(("since", "until"), [
    (0.02, 0.03),
    ("0.02", "0.03s"),
    ("20ms", "30ms"),
    ("20000us", "30000000ns"),
    ("2024-05-01T12:00:00.020Z", "2024-05-01T12:00:00.030+00:00"),
    ("2024-05-01T14:00:00.020+02:00", "2024-05-01 12:00:00.030Z"),
    (START + timedelta(milliseconds=20), START + timedelta(milliseconds=30)),
])
def test_time_windows_relative_or_wall_clock(bank: Recording, since: Any, until: Any) -> None:
    # since is inclusive, until exclusive: 12 is at 20 ms, 17 at 30 ms.
    assert seqs(bank.events(since=since, until=until)) == [12, 13, 14, 15, 16]


def test_time_windows_open_on_one_side(bank: Recording) -> None:
    assert seqs(bank.events(since=0.061)) == [28, 29, 30, 31]
    assert seqs(bank.events(until=0.001)) == [1, 2, 3]
    assert bank.events(since=1) == []
    assert bank.events(since=0.03, until=0.02) == []
    with pytest.raises(TimeSpecError, match="'yesterday' is not a time"):
        bank.events(since="yesterday")


# --- text search ----------------------------------------------------------------------


def test_text_search_matches_what_elixir_prints(bank: Recording) -> None:
    # The prefilter finds "deposit" in the bytes of 8 events; only these print it so.
    assert seqs(bank.events(text="{:deposit, 12345}")) == [6, 7, 8]
    assert bank.events(text="{:deposit, 99}") == []
    # Only visible once decoded: the integer is four raw bytes in the payload.
    assert seqs(bank.events(text="12345")) == [5, 6, 7, 8, 9, 10, 11, 12, 13, 17, 18, 19]
    assert seqs(bank.events(text="%{balance: 12345}")) == [13]


def test_text_search_through_escapes_and_decorations(bank: Recording) -> None:
    assert seqs(bank.events(text='"deposit of 12345\\nok"')) == [10, 11, 17, 18, 19]
    assert seqs(bank.events(text="#PID<0.100.0>")) == [8]
    assert seqs(bank.events(text="MapSet.new([7])")) == [31]
    assert seqs(bank.events(text=":audit_log")) == [19]
    assert bank.events(text="nothing like this") == []


def test_text_search_finds_charlists_the_vm_encodes_element_by_element(
        bank: Recording) -> None:
    assert seqs(bank.events(text="'hello world hello")) == [30]
    assert seqs(bank.events(text="world")) == [30]
    assert bank.events(text="hello world!") == []


def test_text_search_with_filters_limit_order_and_small_chunks(
        bank: Recording, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql_module, "SEARCH_CHUNK", 2)
    assert seqs(bank.events(text="12345")) == [5, 6, 7, 8, 9, 10, 11, 12, 13, 17, 18, 19]
    assert seqs(bank.events(text="12345", limit=4)) == [5, 6, 7, 8]
    assert seqs(bank.events(text="12345", limit=4, order="desc")) == [19, 18, 17, 13]
    assert seqs(bank.events(text="12345", pid=AUDITOR, kind="call")) == [17, 18, 19]
    assert seqs(bank.events(text="ok", since=0.02, until=0.03)) == [13, 14, 15, 16]


def test_search_tokens() -> None:
    assert search_tokens("{:deposit, 12345}") == ["deposit"]
    assert search_tokens("#PID<0.1.0> in Bank.Account") == ["Bank", "Account"]
    assert search_tokens('"line one\\nline two\\ttab"') == ["line", "one", "two", "tab"]
    assert search_tokens('"\\x7Fabc\\x{1F600}def"') == ["abc", "def"]
    assert search_tokens("nbcd") == ["bcd"]      # could be the end of "\\nbcd"
    assert search_tokens("uFEFFFbcd, \\uFEFFFbcd") == ["bcd", "Fbcd"]
    assert search_tokens("7Fabc, Bank") == ["abc", "Bank"]
    assert search_tokens("MapSet.new([1]) Date.range(x) <<1::size(2)>>") == ["MapSet", "Date"]
    assert search_tokens("#Reference<0.1.2.3> #Port<0.5> #Function<1.2/0 in M>") == []
    assert search_tokens("erence<0.1.2.3>") == []
    assert search_tokens(":ok") == []


_letters = st.text("abcdeuxFXYZ_éλ \n\\\"'#{}\x00\x1b\x7f\x85\ufeff\U0001f600",
                   max_size=12)
_leaf = st.one_of(
    _letters,
    st.binary(max_size=8),
    _letters.map(lambda text: [ord(c) for c in text]),
    st.text("abcdefXYZ_", min_size=1, max_size=8).map(Atom),
    st.text("ABC", min_size=1, max_size=4).map(lambda name: Atom(f"Elixir.Bank.{name}")),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False, allow_infinity=False),
    st.builds(Pid, st.sampled_from([Atom("app@host"), Atom("other@box")]),
              st.integers(0, 999), st.integers(0, 9), st.integers(0, 3)),
    st.builds(Reference, st.just(Atom("app@host")), st.integers(0, 3),
              st.lists(st.integers(0, 999), min_size=3, max_size=3)),
    st.lists(st.integers(1, 9), max_size=3).map(
        lambda items: {Atom("__struct__"): Atom("Elixir.MapSet"),
                       Atom("map"): {item: [] for item in items}}),
)
_terms = st.recursive(_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=3).map(tuple),
    st.dictionaries(st.text("abkey", min_size=1, max_size=4).map(Atom), inner, max_size=3)),
    max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(_terms, st.data())
def test_every_token_of_any_printed_piece_is_in_the_raw_bytes(term: Any,
                                                            data: st.DataObject) -> None:
    """The prefilter never loses a match: for any piece of a term's printed text, each
    search token occurs in the ETF bytes as DuckDB's BLOB-to-text cast shows them."""
    printed = inspect(term, limit=None, printable_limit=None, local_node="app@host")
    start = data.draw(st.integers(0, len(printed)))
    piece = printed[start:data.draw(st.integers(start, len(printed)))]
    as_text = encode(term).decode("latin-1")
    for token in search_tokens(piece):
        assert token in as_text or query_module._as_small_integers(token) in as_text, (
            token, printed)


# --- result objects -------------------------------------------------------------------


def test_event_results_carry_every_field(bank: Recording) -> None:
    named_send = bank.event(10)
    assert named_send.node == "app@host" and named_send.pid == ACCOUNT
    assert named_send.pid_name is None and named_send.kind == "send"
    assert named_send.time == 0.015 and named_send.ts == T0 + 15 * MS
    assert named_send.wall_ns == int(START.timestamp()) * 10**9 + 15 * MS
    assert named_send.hlc >= named_send.wall_ns
    assert named_send.other_pid == AUDITOR and named_send.target == "Bank.Auditor"
    assert named_send.value == (AUDIT[0], AUDIT[1].encode())
    assert named_send.text == '{:audit, "deposit of 12345\\nok"}'
    assert named_send.span_id == 9 and named_send.parent_span_id == 8
    assert named_send.message_id == 10 and named_send.correlation_id == 5
    assert named_send.mfa is None and named_send.caller is None

    call = bank.event(8)
    assert (call.module, call.function, call.arity) == ("Bank.Account", "handle_call", 3)
    assert call.mfa == "Bank.Account.handle_call/3"
    assert call.text == "[{:deposit, 12345}, #PID<0.100.0>, %{balance: 0}]"
    assert call.span_id == 8 and call.parent_span_id is None

    auditor_call = bank.event(17)
    assert auditor_call.pid_name == "Bank.Auditor"
    assert bank.event(31).truncated is True and bank.event(30).truncated is False
    assert bank.event(31).original_size == len(encode(MAPSET))


def test_event_as_dict_is_json_ready(bank: Recording) -> None:
    row = bank.event(8).as_dict()
    assert "payload" not in row
    assert row["text"] == "[{:deposit, 12345}, #PID<0.100.0>, %{balance: 0}]"
    assert row["mfa"] == "Bank.Account.handle_call/3"
    assert json.loads(json.dumps(row)) == row
    with pytest.raises(AttributeError):
        bank.event(8).seq = 3  # type: ignore[misc]


def test_unknown_event(bank: Recording) -> None:
    with pytest.raises(QueryError, match="no event 99"):
        bank.event(99)


# --- spans ----------------------------------------------------------------------------


def test_spans_in_start_order_with_their_texts(bank: Recording) -> None:
    found = bank.spans()
    assert [span.span_id for span in found] == [5, 8, 9, 17, 18, 19, 24]
    handler = found[1]
    assert handler.mfa == "Bank.Account.handle_call/3" and handler.pid == ACCOUNT
    assert (handler.depth, handler.parent_span_id, handler.outcome) == (1, None, "return")
    assert (handler.start, handler.end, handler.duration) == (0.013, 0.025, 0.012)
    assert handler.args == "[{:deposit, 12345}, #PID<0.100.0>, %{balance: 0}]"
    assert handler.result == "{:reply, :ok, %{balance: 12345}}"
    assert handler.trigger_message_id == 6 and handler.correlation_id == 5
    ets = found[5]
    assert (ets.mfa, ets.depth, ets.parent_span_id) == (":ets.insert/2", 3, 18)
    assert ets.pid_name == "Bank.Auditor" and ets.result == "true"
    crash = found[6]
    assert crash.outcome == "exception" and crash.result == "{:error, :badarith}"
    assert json.loads(json.dumps(crash.as_dict()))["args"] == "[0]"


def test_span_filters(bank: Recording) -> None:
    def ids(found: list[Any]) -> list[int]:
        return [span.span_id for span in found]

    assert ids(bank.spans(module="Bank.Auditor")) == [17, 18]
    assert ids(bank.spans(function="apply/2")) == [9]
    assert ids(bank.spans(pid="Bank.Auditor")) == [17, 18, 19]
    assert ids(bank.spans(min_duration=0.012)) == [5, 8, 17]
    assert ids(bank.spans(slowest=3)) == [5, 17, 8]
    assert [span.duration for span in bank.spans(slowest=2)] == [0.018, 0.015]
    assert ids(bank.spans(since=0.014, until="31ms")) == [9, 17]
    assert ids(bank.spans(since="2024-05-01T12:00:00.030Z")) == [17, 18, 19, 24]
    assert ids(bank.spans(limit=2)) == [5, 8]
    assert bank.span(19).mfa == ":ets.insert/2"
    with pytest.raises(QueryError, match="no span 6"):
        bank.span(6)


# --- messages, processes --------------------------------------------------------------


def test_message_flow_between_two_processes(bank: Recording) -> None:
    both = bank.message_flow(CLIENT, "#PID<0.101.0>")
    assert [m.message_id for m in both] == [6, 14]
    deposit, reply = both
    assert (deposit.sender, deposit.receiver) == (CLIENT, ACCOUNT)
    assert (deposit.sent, deposit.received, deposit.handled) == (0.011, 0.012, 0.013)
    assert deposit.queue_time == pytest.approx(0.001)
    assert deposit.text == "{:deposit, 12345}" and deposit.handler_span_id == 8
    assert (reply.sender, reply.receiver, reply.text) == (ACCOUNT, CLIENT, ":ok")
    assert bank.message_flow(ACCOUNT, CLIENT) == both


def test_message_flow_of_one_process(bank: Recording) -> None:
    flow = bank.message_flow("Bank.Auditor")
    assert [m.message_id for m in flow] == [10]
    audit = flow[0]
    assert audit.target == "Bank.Auditor" and audit.receiver_name == "Bank.Auditor"
    assert audit.send_span_id == 9 and audit.handler_span_id == 17
    assert audit.queue_time == pytest.approx(0.014)
    everything = bank.message_flow(ACCOUNT)
    assert [m.message_id for m in everything] == [6, 10, 14, 29, 30, 31]
    dead = everything[3]
    assert dead.to_dead and dead.receiver == WORKER and dead.received is None
    unsent = everything[4]
    assert unsent.sender is None and unsent.text == f"'{'hello world ' * 6000}'"
    assert [m.message_id for m in bank.message_flow(ACCOUNT, since=0.02, until=0.063)] == [
        14, 29]
    assert json.loads(json.dumps(dead.as_dict()))["text"] == ":ping"


def test_processes(bank: Recording) -> None:
    found = {process.pid: process for process in bank.processes()}
    assert set(found) == {SUP, CLIENT, ACCOUNT, AUDITOR, WORKER}
    assert found[AUDITOR].names == ("Bank.Auditor",) and found[AUDITOR].name == "Bank.Auditor"
    assert found[SUP].names == (":bank_sup",)
    assert found[CLIENT].parent == SUP and found[CLIENT].initial_call == "Bank.Client.start/1"
    assert found[WORKER].parent == ACCOUNT and found[WORKER].exit_reason == "{:badarith, []}"
    assert (found[WORKER].spawned, found[WORKER].exited) == (0.05, 0.053)
    assert found[AUDITOR].exit_reason == "{:shutdown, :tired}"
    assert found[ACCOUNT].exit_reason is None and found[ACCOUNT].events == 11
    assert found[CLIENT].as_dict()["names"] == []


# --- causes ---------------------------------------------------------------------------


def test_causes_walk_back_over_three_processes_to_a_spawn(bank: Recording) -> None:
    steps = bank.causes(19)
    assert [(step.relation, step.event.seq) for step in steps] == [
        ("inside Bank.Auditor.handle_cast/2, the outermost traced call on "
         "#PID<0.102.0> (Bank.Auditor)", 17),
        ('triggered by message {:audit, "deposit of 12345\\nok"} received by '
         "#PID<0.102.0> (Bank.Auditor)", 11),
        ("sent by #PID<0.101.0> in span Bank.Account.apply/2", 10),
        ("in span Bank.Account.apply/2", 9),
        ("inside Bank.Account.handle_call/3, the outermost traced call on #PID<0.101.0>", 8),
        ("triggered by message {:deposit, 12345} received by #PID<0.101.0>", 7),
        ("sent by #PID<0.100.0> in span Bank.Client.deposit/2", 6),
        ("in span Bank.Client.deposit/2", 5),
        ("#PID<0.100.0> spawned by #PID<0.50.0> (:bank_sup)", 2),
    ]
    assert [step.event.seq for step in bank.causes(bank.event(19), max_steps=3)] == [17, 11, 10]
    assert json.loads(json.dumps(steps[0].as_dict()))["event"]["seq"] == 17


def test_causes_of_other_events(bank: Recording) -> None:
    def chain(seq: int) -> list[int]:
        return [step.event.seq for step in bank.causes(seq)]

    assert chain(12) == [9, 8, 7, 6, 5, 2]      # a return: its span, then as above
    assert chain(25) == [24, 23, 7, 6, 5, 2]    # the crash, back through its spawn
    assert chain(11) == [10, 9, 8, 7, 6, 5, 2]  # a receive: its send
    assert chain(14) == [7, 6, 5, 2]            # outside spans: the last receive before
    assert chain(30) == []                      # a receive whose send is unknown
    assert bank.causes(14)[0].relation == "after receiving message {:deposit, 12345}"
    assert chain(1) == [] and chain(2) == []


# --- summary --------------------------------------------------------------------------


def test_summary(bank: Recording) -> None:
    summary = bank.summary()
    assert json.loads(json.dumps(summary)) == summary
    assert summary["nodes"] == ["app@host"] and summary["events"] == 31
    assert summary["duration"] == 0.066
    assert (summary["processes"], summary["spans"], summary["messages"]) == (5, 7, 6)
    assert {row["calls"] for row in summary["busiest_functions"]} == {1}
    assert [row["span_id"] for row in summary["slowest_spans"]] == [5, 17, 8, 18, 9]
    assert summary["slowest_spans"][0]["mfa"] == "Bank.Client.deposit/2"
    assert summary["crashes"] == [{"seq": 26, "pid": WORKER, "pid_name": None,
                                   "time": 0.053, "reason": "{:badarith, []}"}]
    assert summary["losses"] == {"agent_gap": {"events": None, "batches": 2}}
    assert summary["breaker_trips"] == [] and summary["recovered"] is False


def test_summary_reports_breaker_trips_and_what_was_traced(tmp_path: Path) -> None:
    path = tmp_path / "tripped.duckdb"
    b = BatchBuilder()
    pid = b.pid(7)
    for i in range(3):
        b.add("call", pid, T0 + i * MS, mfa=("Elixir.Hot", "loop", 0), value=[])
    record_batches(path, [b.batch()], offset_ns=OFFSET)
    con = duckdb.connect(str(path))
    con.execute("INSERT INTO session_events VALUES (1, ?, ?, 'breaker_trip', ?)",
                [T0 + 2 * MS, int(START.timestamp()) * 10**9 + 2 * MS,
                 '{"reason": "max_events_per_second"}'])
    put_meta(con, {"traces": [{"what": "Hot.loop/0"}], "limits": {"max_events": 3}})
    con.close()
    with open_recording(path) as rec:
        summary = rec.summary()
    assert summary["breaker_trips"] == [{"time": 0.002,
                                         "detail": '{"reason": "max_events_per_second"}'}]
    assert summary["meta"]["traces"] == [{"what": "Hot.loop/0"}]
    assert summary["meta"]["limits"] == {"max_events": 3}
    assert summary["busiest_functions"] == [{"mfa": "Hot.loop/0", "calls": 3}]
    assert [span["outcome"] for span in summary["slowest_spans"]] == ["open"] * 3


# --- files that cannot be read as they are --------------------------------------------


def one_sentence(error: BaseException) -> str:
    text = str(error)
    assert "\n" not in text and text.strip()
    return text


def test_missing_and_directory(tmp_path: Path) -> None:
    with pytest.raises(RecordingError, match="there is no recording at"):
        open_recording(tmp_path / "nope.duckdb")
    with pytest.raises(RecordingError, match="is a directory"):
        open_recording(tmp_path)


@pytest.mark.parametrize(("content", "sentence"), [
    (b"", "not a recording"),
    (b"timestamp,event\n1,call\n" * 400, "not a recording"),
    (os.urandom(1 << 16), "not a recording"),
])
def test_foreign_files(tmp_path: Path, content: bytes, sentence: str) -> None:
    path = tmp_path / "foreign.duckdb"
    path.write_bytes(content)
    with pytest.raises(RecordingError, match=sentence) as caught:
        open_recording(path)
    one_sentence(caught.value)


def test_truncated_file(tmp_path: Path, bank_path: Path) -> None:
    data = bank_path.read_bytes()
    for size in (4096, len(data) // 2):
        path = tmp_path / f"cut{size}.duckdb"
        path.write_bytes(data[:size])
        with pytest.raises(RecordingError, match="truncated") as caught:
            open_recording(path)
        one_sentence(caught.value)


def test_duckdb_file_that_is_not_a_recording(tmp_path: Path) -> None:
    path = tmp_path / "other.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE orders (id INTEGER)")
    con.close()
    with pytest.raises(RecordingError, match="a DuckDB database but not an ElixirScope"):
        open_recording(path)


def test_recording_of_a_newer_format(tmp_path: Path, bank_path: Path) -> None:
    path = tmp_path / "newer.duckdb"
    shutil.copy(bank_path, path)
    con = duckdb.connect(str(path))
    put_meta(con, {"format_version": 99})
    con.close()
    with pytest.raises(RecordingError, match=r"newer ElixirScope \(format 99\)"):
        open_recording(path)


def test_damage_found_at_open_or_by_a_later_query_is_one_sentence(
        tmp_path: Path, bank_path: Path) -> None:
    """A zeroed piece in every storage block (256 KiB, after a 12 KiB header): each
    outcome is either the right answers or a RecordingError, and some damage shows
    only when a query reaches it."""
    data = bank_path.read_bytes()
    expected = list(range(1, 32))
    outcomes = []
    for offset in range(12288 + 512, len(data), 256 * 1024):
        damaged = bytearray(data)
        damaged[offset:offset + 256] = bytes(256)
        path = tmp_path / f"damaged{offset}.duckdb"
        path.write_bytes(damaged)
        try:
            rec = open_recording(path)
        except RecordingError as exc:
            outcomes.append(("open", one_sentence(exc)))
            continue
        try:
            assert seqs(rec.events(limit=None)) == expected
            rec.spans()
            rec.message_flow(ACCOUNT)
            rec.processes()
            rec.summary()
            outcomes.append(("fine", ""))
        except RecordingError as exc:
            outcomes.append(("query", one_sentence(exc)))
        finally:
            rec.close()
    kinds = {kind for kind, _ in outcomes}
    assert "open" in kinds and "query" in kinds, outcomes
    assert all("damaged" in text for kind, text in outcomes if kind != "fine")


_HOLD = textwrap.dedent("""
    import sys, duckdb
    con = duckdb.connect(sys.argv[1])
    print("holding", flush=True)
    sys.stdin.read()
""")


@pytest.mark.parametrize("finalized", [True, False])
def test_a_recording_another_process_writes(tmp_path: Path, finalized: bool) -> None:
    path = tmp_path / "busy.duckdb"
    build_small(path, finalize=finalized)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(path)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "holding\n"
        with pytest.raises(RecordingError) as caught:
            open_recording(path)
        assert one_sentence(caught.value) == (
            f"{path} is being written by process {holder.pid}; open it when the "
            "recording has stopped")
    finally:
        holder.communicate("", timeout=30)
    with open_recording(path) as rec:
        assert rec.recovered is not finalized


def build_small(path: Path, *, finalize: bool = True) -> None:
    b = BatchBuilder()
    pid = b.pid(9)
    b.add("call", pid, T0, mfa=("Elixir.Bank.Account", "deposit", 2), value=[1, 2])
    b.add("return", pid, T0 + MS, mfa=("Elixir.Bank.Account", "deposit", 2), value=3)
    record_batches(path, [b.batch()], offset_ns=OFFSET, finalize=finalize)


def test_an_unfinalized_recording_is_finalized_when_opened(tmp_path: Path) -> None:
    path = tmp_path / "unfinished.duckdb"
    build_small(path, finalize=False)
    with open_recording(path) as rec:
        assert rec.recovered is True
        assert rec.meta["finalized"] is True
        [span] = rec.spans()
        assert (span.mfa, span.outcome, span.result) == ("Bank.Account.deposit/2", "return",
                                                         "3")
        assert rec.summary()["recovered"] is True
    with open_recording(path) as rec:
        assert rec.recovered is False


_KILLED_RECORDER = textwrap.dedent("""
    import os, sys
    from elixirscope.etf import Atom
    from elixirscope.recording.batch_builder import BatchBuilder
    from elixirscope.recording.ingest import BatchIngest, Dimensions, SeqCounter
    from elixirscope.recording.store import create
    from elixirscope.recording.writer import StoreWriter

    con = create(sys.argv[1])
    dimensions = Dimensions()
    ingest = BatchIngest("app@host", 1, 0, dimensions, SeqCounter())
    writer = StoreWriter(con, dimensions)
    con.execute("INSERT INTO nodes VALUES (1, 'app@host', NULL, NULL, NULL, 0, 100, NULL)")
    b = BatchBuilder()
    pid = b.pid(5)
    b.add("call", pid, 100, mfa=("Elixir.Bank.Account", "deposit", 2), value=[1, 2])
    b.add("return", pid, 350, mfa=("Elixir.Bank.Account", "deposit", 2), value=Atom("ok"))
    b.add("call", pid, 400, mfa=("Elixir.Bank.Account", "deposit", 2), value=[3, 4])
    writer.add([ingest.ingest(b.batch())])
    writer.flush()
    os._exit(0)  # killed: no finalize, no checkpoint, the WAL left behind
""")


def test_a_recording_whose_recorder_was_killed(tmp_path: Path) -> None:
    path = tmp_path / "killed.duckdb"
    subprocess.run([sys.executable, "-c", _KILLED_RECORDER, str(path)], check=True,
                   timeout=60)
    with open_recording(path) as rec:
        assert rec.recovered is True
        assert [(span.outcome, span.duration) for span in rec.spans()] == [
            ("return", 250e-9), ("open", None)]
        assert [event.time for event in rec.events()] == [0.0, 250e-9, 300e-9]
