"""Time travel against real nodes, with the node itself as the oracle: the workload is
paused at known moments, ``:sys.get_state/1`` is read over rpc, and the recording
must say the same state at that moment."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import elixirscope
from cli_support import run
from elixirscope.etf import Atom, Pid
from elixirscope.recording.state_diff import MISSING
from elixirscope.recordings import Recording
from elixirscope.sample_nodes import start_sample
from tracing_support import erl

pytestmark = pytest.mark.node

ACCOUNTS = (1, 2, 3, 4, 5)


@dataclass
class Moment:
    """What the node said at one paused moment: seconds from the recording's start
    (filled in once the recording is open) and each process's state."""

    wall_ns: int
    states: dict[Pid, Any]


@dataclass
class Session:
    path: Path
    moments: list[Moment]
    pids: dict[str, Pid]
    crashed: Pid


def account_pids(node: elixirscope.Node) -> dict[str, Pid]:
    pids = {f"account{i}": erl(node, f"'Elixir.Bank.Account':whereis({i})") for i in ACCOUNTS}
    for name in ("Elixir.Bank.Ledger", "Elixir.Bank.Transfer", "Elixir.Bank.Workload"):
        pids[name] = erl(node, f"whereis('{name}')")
    return pids


def snapshot(node: elixirscope.Node, pids: list[Pid]) -> Moment:
    """Pauses the workload, lets what is in flight finish, reads every state and the
    node's clock, and resumes."""
    erl(node, "'Elixir.Bank.Workload':pause()")
    time.sleep(0.3)
    states, now = erl(node, "{[sys:get_state(P) || P <- Pids], erlang:system_time(nanosecond)}",
                      Pids=pids)
    erl(node, "'Elixir.Bank.Workload':resume()")
    return Moment(now, dict(zip(pids, states, strict=True)))


@pytest.fixture(scope="module")
def bank_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Session]:
    path = tmp_path_factory.mktemp("tt") / "bank.duckdb"
    with start_sample("bank", workload=True, name_prefix="tt_bank") as beam, \
            elixirscope.attach(beam.name, beam.cookie) as scope:
        pids = account_pids(scope.node)
        scope.trace("Bank.Account", "basic", state=True)
        scope.trace_process("Bank.Ledger", include=("state",))
        scope.trace_process("Bank.Transfer", include=("state", "messages"))
        # Account 1's messages are traced too, account 2's are not.
        scope.trace_process(pids["account1"], include=("messages",))
        recorder = scope.record(path)
        watched = [pids[f"account{i}"] for i in ACCOUNTS] + [
            pids["Elixir.Bank.Ledger"], pids["Elixir.Bank.Transfer"]]
        moments = []
        for _ in range(5):
            time.sleep(0.4)
            moments.append(snapshot(scope.node, watched))
        crashed = pids["account3"]
        erl(scope.node, "'Elixir.Bank.Faults':crash_next(3, arithmetic)")
        time.sleep(1.0)
        moments.append(snapshot(scope.node, watched[:2] + watched[3:]))
        recorder.stop()
    yield Session(path, moments, pids, crashed)


@pytest.fixture(scope="module")
def recording(bank_session: Session) -> Iterator[Recording]:
    with elixirscope.open_recording(bank_session.path) as rec:
        yield rec


def at(recording: Recording, wall_ns: int) -> float:
    return (wall_ns - recording.dims.start_wall_ns) / 1e9


def pid_text(pid: Pid) -> str:
    return f"<0.{pid.id}.{pid.serial}>"


def test_state_at_matches_the_node_at_every_paused_moment(bank_session: Session,
                                                          recording: Recording) -> None:
    checked = 0
    for moment in bank_session.moments:
        t = at(recording, moment.wall_ns)
        for pid, expected in moment.states.items():
            assert recording.state_at(pid_text(pid), t) == expected, (pid, t)
            checked += 1
    assert checked >= 40
    # Structs, nested maps, lists of tuples, binaries: the account is all of those.
    account = recording.state_at(pid_text(bank_session.pids["account1"]),
                                 at(recording, bank_session.moments[-1].wall_ns))
    assert account[Atom("__struct__")] == Atom("Elixir.Bank.Account")
    assert isinstance(account[Atom("limits")], dict) and isinstance(account[Atom("owner")], bytes)


def test_history_has_callbacks_triggers_and_deltas(bank_session: Session,
                                                   recording: Recording) -> None:
    history = recording.state_history(pid_text(bank_session.pids["account2"]))
    assert len(history) > 10
    # Whole first: read at the start, or sent whole by the first callback (a process
    # busy when tracing starts is not asked, and is unknown until then).
    first = next(item for item in history if item.kind != "unavailable")
    assert first.kind == "whole" and first.known
    callbacks = {item.callback for item in history}
    assert {"handle_call", "handle_continue"} <= callbacks
    deposit = next(item for item in history if item.callback == "handle_call"
                   and any(change.path == (Atom("balance"),) for change in item.delta.changes))
    # Account 2's messages are not traced: the trigger is the callback's call.
    assert deposit.trigger is not None and deposit.trigger.kind == "call"
    assert deposit.trigger.text.startswith(("[{:deposit,", "[{:withdraw,"))
    assert deposit.kind in ("delta", "whole")
    change = next(c for c in deposit.delta.changes if c.path == (Atom("balance"),))
    assert change.old != change.new and change.new == deposit.state[Atom("balance")]
    # Each state is the one before with the delta applied.
    for before, after in itertools.pairwise(history):
        if after.kind == "delta" and before.known:
            assert after.state != before.state or not after.delta
    ledger = recording.state_history("Bank.Ledger")
    assert next(item for item in ledger if item.kind != "unavailable").kind == "whole"
    assert isinstance(ledger[-1].state, list)
    assert any(item.callback == "handle_call" and item.delta for item in ledger)


def test_a_crashed_account_keeps_its_history_to_the_exit(bank_session: Session,
                                                        recording: Recording) -> None:
    history = recording.state_history(pid_text(bank_session.crashed))
    terminate = [item for item in history if item.callback == "terminate"]
    assert len(terminate) == 1
    assert "ArithmeticError" in elixirscope.inspect(terminate[0].reason)
    assert terminate[0].known and terminate[0].state[Atom("id")] == 3
    assert history[-1] is terminate[0] or history[-1].callback == "exit"


def test_replay_diff_and_field_history(bank_session: Session, recording: Recording) -> None:
    pid = pid_text(bank_session.pids["account1"])
    first, last = (at(recording, m.wall_ns) for m in (bank_session.moments[0],
                                                      bank_session.moments[-1]))
    replay = recording.replay_to(pid, last)
    assert replay.state == recording.state_at(pid, last)
    assert replay.transition.time <= last
    # Seconds of workload later, the state came from a callback, not the first read.
    assert replay.transition.span_id is not None
    relations = [step.relation for step in replay.causes]
    assert relations[0].startswith("made by Bank.Account.")
    assert any(relation.startswith("triggered by message {:\"$gen_call\"")
               for relation in relations)
    diff = recording.diff(pid, first, last)
    assert diff  # every deposit or withdrawal adds to the account's history
    old, new = recording.state_at(pid, first), recording.state_at(pid, last)
    balance = [c for c in diff.changes if c.path == (Atom("balance"),)]
    if old[Atom("balance")] != new[Atom("balance")]:
        assert balance and balance[0].old == old[Atom("balance")]
        assert f"[:balance]: {old[Atom('balance')]} -> {new[Atom('balance')]}" in str(diff)
    changes = recording.field_history(pid, [Atom("balance")])
    assert changes[0].old is MISSING
    for a, b in itertools.pairwise(changes):
        assert a.new == b.old and a.new != b.new
        assert b.transition.callback == "handle_call"
        trigger = b.transition.trigger
        assert trigger is not None and trigger.kind == "receive"
        assert trigger.text.startswith('{:"$gen_call"')
    final = [c for c in changes if c.time <= last][-1]
    assert final.new == new[Atom("balance")]


def test_unknown_process_or_moment_is_one_sentence(bank_session: Session,
                                                  recording: Recording) -> None:
    stateful = {f"#PID{pid_text(pid)}" for pid in bank_session.pids.values()}
    stateless = next(process.pid for process in recording.processes()
                     if process.pid not in stateful)
    with pytest.raises(elixirscope.QueryError, match="no state of"):
        recording.state_history(stateless)
    with pytest.raises(elixirscope.QueryError, match=r"no process named Bank\.Nothing"):
        recording.state_history("Bank.Nothing")
    with pytest.raises(elixirscope.QueryError, match="at or before"):
        recording.state_at("Bank.Ledger", -5)


def test_gen_statem_in_both_callback_modes(tmp_path: Path) -> None:
    """kv_lock runs in state_functions mode, kv_conn in handle_event_function mode
    with state enter calls; the state is {State, Data}, as :sys.get_state/1 gives it."""
    path = tmp_path / "kv.duckdb"
    steps = ["kv_lock:unlock(\"0000\")", "kv_lock:unlock(\"1234\")", "kv_lock:lock()",
             "kv_conn:connect()", "kv_conn:fail()", "kv_conn:disconnect()",
             "kv_lock:unlock(\"1\"), kv_lock:unlock(\"2\"), kv_lock:unlock(\"3\")"]
    moments: list[Moment] = []
    with start_sample("kv", workload=False, name_prefix="tt_kv") as beam, \
            elixirscope.attach(beam.name, beam.cookie) as scope:
        pids = [erl(scope.node, "whereis(kv_lock)"), erl(scope.node, "whereis(kv_conn)")]
        scope.trace("kv_lock", "basic", state=True)
        scope.trace("kv_conn", "basic", state=True)
        recorder = scope.record(path)
        time.sleep(0.3)
        for step in steps:
            erl(scope.node, step)
            time.sleep(0.2)
            states, now = erl(scope.node, "{[sys:get_state(P) || P <- Pids], "
                                          "erlang:system_time(nanosecond)}", Pids=pids)
            moments.append(Moment(now, dict(zip(pids, states, strict=True))))
        recorder.stop()
    with elixirscope.open_recording(path) as rec:
        for moment in moments:
            t = at(rec, moment.wall_ns)
            for pid, expected in moment.states.items():
                assert rec.state_at(pid_text(pid), t) == expected
        lock = rec.state_history("kv_lock")
        # Idle when recording began: the first state was read with :sys.get_state/2.
        assert lock[0].callback == "initial" and lock[0].state[0] == Atom("locked")
        assert {"locked", "open"} <= {item.callback for item in lock}
        names = [item.state[0] for item in lock if item.known]
        assert Atom("open") in names and Atom("blocked") in names
        wrong = next(item for item in lock if item.callback == "locked" and item.delta)
        assert [str(change) for change in wrong.delta.changes] == ["~ [1, :attempts]: 0 -> 1"]
        conn = rec.state_history("kv_conn")
        assert conn[0].callback == "initial"
        assert {item.state[0] for item in conn if item.known} >= {
            Atom("disconnected"), Atom("connecting"), Atom("connected")}
        assert all(item.callback in ("initial", "handle_event") for item in conn)


def test_history_and_state_commands(bank_session: Session, recording: Recording,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    rec = str(bank_session.path)
    pid = pid_text(bank_session.pids["account1"])
    last = at(recording, bank_session.moments[-1].wall_ns)
    code, out, err = run(capsys, "history", rec, "Bank.Transfer", "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == len(recording.state_history("Bank.Transfer"))
    assert rows[1]["callback"] == "handle_call" and rows[1]["delta"]
    code, out, err = run(capsys, "state", rec, pid, "--at", f"{last}", "--json")
    assert code == 0, err
    assert json.loads(out)["state"] == elixirscope.inspect(
        recording.state_at(pid, last), limit=None, printable_limit=None)
    code, out, _ = run(capsys, "state", rec, pid, "--field", "[:balance]", "--json")
    assert code == 0 and [json.loads(line)["new"] for line in out.splitlines()] == [
        elixirscope.inspect(change.new) for change in recording.field_history(
            pid, [Atom("balance")])]
    first = at(recording, bank_session.moments[0].wall_ns)
    code, out, _ = run(capsys, "state", rec, pid, "--diff", f"{first}", f"{last}")
    assert code == 0 and out.strip() == str(recording.diff(pid, first, last))
    code, out, _ = run(capsys, "state", rec, pid, "--at", f"{last}", "--why")
    assert code == 0 and "<- made by Bank.Account." in out
    code, _, err = run(capsys, "state", rec, pid)
    assert code == 2 and "exactly one of --at, --diff and --field" in err
    code, _, err = run(capsys, "state", rec, "Bank.Nobody", "--at", "1")
    assert code == 1 and err.strip() == f"error: there is no process named Bank.Nobody in {rec}"
    code, _, err = run(capsys, "state", rec, pid, "--field", "[:a,")
    assert code == 2 and "--field" in err


def test_no_state_names_the_process_not_an_internal_id(recording: Recording) -> None:
    """A process with no recorded state is named as the user knows it."""
    from elixirscope.errors import QueryError

    unrecorded = next(p for p in recording.processes()
                      if not recording.events(pid=p.pid_id, kind="state", limit=1))
    with pytest.raises(QueryError) as error:
        recording.state_history(unrecorded.pid_id)
    assert unrecorded.pid in str(error.value) and f"of {unrecorded.pid_id} " not in str(
        error.value)
