"""``elixirscope supervisors``: live (strategy, intensity, period, restarts of the current
period, children, a busy supervisor left alone) on the bank sample's real supervision
tree and RabbitMQ's supervisor2, and across a recording (children by generations)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import elixirscope
from cli_support import json_rows, run
from elixirscope.dist.node import Node
from elixirscope.etf import Atom, Pid
from elixirscope.remote_eval import eval_elixir, eval_erlang
from elixirscope.sample_nodes import BeamNode, start_bare

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def bank(bank_node: BeamNode) -> Iterator[Node]:
    with elixirscope.connect(bank_node.name, bank_node.cookie) as conn:
        yield conn


def supervisors_json(capsys: pytest.CaptureFixture[str], node: BeamNode | str,
                     *args: str) -> list[dict[str, object]]:
    target = node.name if isinstance(node, BeamNode) else node
    cookie = ("--cookie", node.cookie) if isinstance(node, BeamNode) else ()
    return json_rows(capsys, "supervisors", target, *args, *cookie)


def restart(conn: Node, name: str) -> None:
    """Kills the registered process ``name`` and waits for its supervisor to restart it."""
    before = conn.rpc("erlang", "whereis", [Atom(name)])
    assert isinstance(before, Pid)
    conn.rpc("erlang", "exit", [before, Atom("kill")])
    for _ in range(200):
        after = conn.rpc("erlang", "whereis", [Atom(name)])
        if isinstance(after, Pid) and after != before:
            return
        time.sleep(0.02)
    raise AssertionError(f"{name} was not restarted")


def test_live_settings_children_and_restarts(
        bank_node: BeamNode, bank: Node, capsys: pytest.CaptureFixture[str]) -> None:
    restart(bank, "Elixir.Bank.Auditor")
    [top] = supervisors_json(capsys, bank_node, "Bank.Supervisor")
    assert (top["strategy"], top["intensity"], top["period"]) == ("one_for_one", 3, 5)
    assert top["state"] == "read" and top["module"] == "Supervisor.Default"
    assert isinstance(top["restarts_ago_s"], list) and len(top["restarts_ago_s"]) == 1
    children = {child["id"]: child for child in top["children"]}  # type: ignore[attr-defined]
    assert children["Bank.Auditor"]["type"] == "worker"
    assert children["Bank.AccountSupervisor"]["type"] == "supervisor"
    assert top["children_count"] == len(children)
    [accounts] = supervisors_json(capsys, bank_node, "Bank.AccountSupervisor")
    assert (accounts["strategy"], accounts["intensity"], accounts["period"]) == (
        "one_for_one", 10, 5)
    labels = sorted(child["label"] for child in accounts["children"])  # type: ignore[attr-defined]
    assert labels and all(label.startswith("Bank.Registry:") for label in labels)
    names = {row["name"] for row in supervisors_json(capsys, bank_node)}
    assert {"Bank.Supervisor", "Bank.Registry", "Bank.TaskSupervisor", ":kernel_sup"} <= names
    code, out, _ = run(capsys, "supervisors", bank_node.name, "Bank.Supervisor", "--cookie",
                       bank_node.cookie)
    assert code == 0 and "one_for_one, at most 3 restarts in 5 s" in out


def test_a_busy_supervisor_is_not_asked_for_its_state_and_is_left_unharmed(
        bank_node: BeamNode, bank: Node, capsys: pytest.CaptureFixture[str]) -> None:
    pid = bank.rpc("erlang", "whereis", [Atom("Elixir.Bank.TaskSupervisor")])
    bank.rpc("sys", "suspend", [pid])
    try:
        bank.send(pid, Atom("waiting_in_the_mailbox"))
        [busy] = supervisors_json(capsys, bank_node, "Bank.TaskSupervisor")
        assert busy["state"] == "busy" and busy["strategy"] is None
        assert busy["children_count"] is None
    finally:
        bank.rpc("sys", "resume", [pid])
    assert bank.rpc("erlang", "whereis", [Atom("Elixir.Bank.TaskSupervisor")]) == pid
    deadline = time.monotonic() + 5  # resumed, it handles the stray message first
    while bank.rpc("erlang", "process_info", [pid, Atom("message_queue_len")])[1]:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    [idle] = supervisors_json(capsys, bank_node, "Bank.TaskSupervisor")
    assert idle["state"] == "read" and idle["children_count"] == 0


def test_an_unknown_name_is_one_sentence(bank_node: BeamNode,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "supervisors", bank_node.name, "Bank.Nope", "--cookie",
                       bank_node.cookie)
    assert code == 1 and "no supervisor named Bank.Nope" in err and "Traceback" not in err


def _supervisor2_ebin() -> Path | None:
    listed = subprocess.run(["dpkg", "-L", "rabbitmq-server"], capture_output=True,
                            text=True, check=False).stdout.splitlines()
    beams = [Path(line) for line in listed if line.endswith("/supervisor2.beam")]
    return beams[0].parent if beams else None


# A supervisor2 callback module, compiled on the node: init/1 gives the flags and one
# gen_event worker.
_SUP2 = """
Forms = [{attribute, 1, module, t_sup2}, {attribute, 1, export, [{init, 1}]},
         {function, 1, init, 1, [{clause, 1, [{var, 1, '_'}], [],
             [{tuple, 1, [{atom, 1, ok}, {tuple, 1, [
                 {tuple, 1, [{atom, 1, one_for_all}, {integer, 1, 7}, {integer, 1, 30}]},
                 {cons, 1, {tuple, 1, [{atom, 1, events}, {tuple, 1, [{atom, 1, gen_event},
                     {atom, 1, start_link}, {nil, 1}]}, {atom, 1, permanent},
                     {integer, 1, 5000}, {atom, 1, worker}, {atom, 1, dynamic}]},
                  {nil, 1}}]}]}]}]}],
{ok, t_sup2, Bin} = compile:forms(Forms, []),
{module, t_sup2} = code:load_binary(t_sup2, "", Bin),
{ok, Pid} = supervisor2:start_link({local, t_sup2}, t_sup2, []),
unlink(Pid),
Pid
"""


def test_rabbitmq_supervisor2(capsys: pytest.CaptureFixture[str]) -> None:
    ebin = _supervisor2_ebin()
    if ebin is None:
        pytest.skip("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
    with start_bare("erl", name_prefix="t_sup2", extra_args=("-pa", str(ebin))) as node:
        with elixirscope.connect(node.name, node.cookie) as conn:
            conn.run(eval_erlang(conn.anode, _SUP2))
        [sup] = supervisors_json(capsys, node, "t_sup2")
    assert (sup["strategy"], sup["intensity"], sup["period"]) == ("one_for_all", 7, 30)
    assert sup["module"] == ":t_sup2" and sup["restarts_ago_s"] == []
    [child] = sup["children"]  # type: ignore[misc]
    assert child["id"] == "events" and child["pid"].startswith("#PID<")


def test_a_recording_shows_each_child_across_its_generations(
        bank_node: BeamNode, bank: Node, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "restarts.duckdb"
    with elixirscope.attach(bank) as scope:
        scope.trace_process("Bank.Supervisor", include=["lifecycle"], include_children=True)
        with scope.record(path):
            restart(bank, "Elixir.Bank.Ledger")
            restart(bank, "Elixir.Bank.Ledger")
            bank.run(eval_elixir(bank.anode, "Bank.Ledger.entries()"))
    [history] = supervisors_json(capsys, str(path), "Bank.Supervisor")
    ledger = next(child for child in history["children"]  # type: ignore[attr-defined]
                  if child["child"] == "Bank.Ledger")
    assert ledger["restarts"] == 2 and len(ledger["generations"]) == 3
    assert len({generation["pid"] for generation in ledger["generations"]}) == 3
    assert [restart["child"] for restart in history["restarts"]] == ["Bank.Ledger"] * 2
    assert all("killed" in restart["after"] for restart in history["restarts"])
    code, out, _ = run(capsys, "supervisors", str(path), "Bank.Supervisor")
    assert code == 0 and "restart at" in out and "Bank.Ledger" in out
