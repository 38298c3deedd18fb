"""Code analysis from the debug info on real nodes (the bank and kv apps), and the
instrumentation planner's budget on the bank app under its workload."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import elixirscope
from elixirscope.code_analysis import analyze_node
from elixirscope.etf import Atom
from elixirscope.planner import Plan, apply_plan, make_plan
from elixirscope.recordings import open_recording
from elixirscope.sample_nodes import BeamNode, start_sample

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def busy_bank() -> Iterator[BeamNode]:
    with start_sample("bank", name_prefix="t_plan", workload=True) as node:
        yield node


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "elixirscope", *args], capture_output=True,
                          text=True, timeout=180, check=False)


def test_analyze_the_bank(busy_bank: BeamNode) -> None:
    with elixirscope.connect(busy_bank.name, busy_bank.cookie) as node:
        found = node.run(analyze_node(node.anode))
        loaded_after = node.rpc("code", "all_loaded", [])
    names = {m.name for m in found.modules}
    assert {"Bank.Account", "Bank.Transfer", "Bank.Ledger", "Bank.Application"} <= names
    assert found.module("Bank.Account").kinds == ("GenServer",)
    assert found.module("Bank.Ledger").kinds == ("Agent",)
    assert found.module("Bank.Application").kinds == ("Application",)
    account = found.module("Bank.Account")
    assert account.debug_info and account.file and account.file.endswith("account.ex")
    assert [s.name for s in account.supervisors] == ["Bank.AccountSupervisor"]
    run = found.function("Bank.Transfer.run/4")
    assert run is not None and run.sleeps == 1  # the fault switch's Process.sleep
    assert run.complexity > 1 and run.nesting >= 1
    assert ("Bank.Transfer.handle_call/3", "Bank.Transfer.run/4", 1) in found.edges
    # The transfer server calls the accounts from inside its callback.
    (risk,) = [r for r in found.risks if r.kind == "call_in_callback"]
    assert risk.function == "Bank.Transfer.handle_call/3"
    assert "Bank.Account.withdraw/3" in risk.text
    assert "{:via, Registry, {Bank.Registry, _}}" in risk.text
    # The analyzer was loaded for the analysis only.
    assert not any(str(m[0]).startswith("elixirscope_analyzer") for m in loaded_after)


def test_analyze_kv_from_the_command_line(tmp_path: Path) -> None:
    with start_sample("kv", name_prefix="t_an_kv") as beam:
        result = cli("analyze", beam.name, "--cookie", beam.cookie, "--json")
        missing = cli("analyze", beam.name, "--cookie", beam.cookie, "nosuch_module",
                      ":lists")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    modules = {m["name"]: m for m in found["modules"]}
    assert modules[":kv_store"]["kinds"] == ["GenServer"]
    assert modules[":kv_conn"]["kinds"] == ["gen_statem"]
    assert modules[":kv_sup"]["kinds"] == ["Supervisor"]
    assert modules[":kv_sup"]["supervisors"][0]["strategy"] == "one_for_one"
    handle_event = next(f for f in modules[":kv_conn"]["functions"]
                        if f["name"] == "handle_event")
    assert handle_event["complexity"] >= 10
    assert missing.returncode == 0, missing.stderr
    assert "not loaded on the node: :nosuch_module" in missing.stderr
    assert ":lists" in missing.stdout


def test_a_module_without_debug_info_says_so(tmp_path: Path) -> None:
    source = tmp_path / "es_nodebug.erl"
    source.write_text("-module(es_nodebug).\n-export([f/0]).\nf() -> ok.\n")
    subprocess.run(["erlc", "-o", str(tmp_path), str(source)], check=True)  # no +debug_info
    with start_sample("kv", name_prefix="t_an_nodbg") as beam, \
            elixirscope.connect(beam.name, beam.cookie) as node:
        node.rpc("code", "load_abs", [[ord(c) for c in str(tmp_path / "es_nodebug")]])
        found = node.run(analyze_node(node.anode, ["es_nodebug"]))
    (info,) = found.modules
    assert not info.debug_info and info.reason == "no_debug_info"
    assert info.exports >= 1 and info.functions == ()


def test_the_plan_keeps_the_budget_and_takes_the_slow_function(busy_bank: BeamNode,
                                                                tmp_path: Path) -> None:
    budget = 500.0
    with elixirscope.connect(busy_bank.name, busy_bank.cookie) as node:
        made = node.run(make_plan(node.anode, budget, focus="slow transfers"))
    assert abs(made.expected_events_per_s - budget) <= budget * 0.05
    transfer = next(item for item in made.items if item.module == "Bank.Transfer")
    assert ("run", 4) in transfer.functions  # what Bank.Faults.slow/1 makes slow
    path = tmp_path / "plan.json"
    made.save(path)
    assert Plan.load(path) == made
    recording = tmp_path / "planned.duckdb"
    result = cli("record", busy_bank.name, "--cookie", busy_bank.cookie, "--plan", str(path),
                 "--duration", "4", "--metrics-hz", "0", "-o", str(recording), "--json")
    assert result.returncode == 0, result.stderr
    with open_recording(recording) as rec:
        events, seconds = rec.con.execute(
            "SELECT count(*), (max(ts) - min(ts)) / 1e9 FROM events WHERE kind IN (1, 2, 3)"
        ).fetchone()
    rate = events / seconds
    assert budget * 0.75 <= rate <= budget * 1.25, (rate, made.as_dict())
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    refused = cli("record", busy_bank.name, "--cookie", busy_bank.cookie, "--plan", str(bad),
                  "-o", str(tmp_path / "x.duckdb"))
    assert refused.returncode != 0 and "is not a plan written by elixirscope plan" in \
        refused.stderr and "Traceback" not in refused.stderr


def test_analyze_a_source_tree_before_the_app_runs() -> None:
    bank = Path(__file__).resolve().parents[1] / "examples" / "bank" / "lib"
    result = cli("analyze", "--source", str(bank), "--json")
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    modules = {m["name"]: m for m in found["modules"]}
    assert modules["Bank.Transfer"]["kinds"] == ["GenServer"]
    run = next(f for f in modules["Bank.Transfer"]["functions"] if f["name"] == "run")
    assert run["sleeps"] == 1 and not run["exported"]
    (risk,) = [r for r in found["risks"] if r["kind"] == "call_in_callback"]
    assert "Bank.Transfer.handle_call/3 → Bank.Transfer.run/4 → Bank.Account.withdraw/3" \
        in risk["text"]
    only = json.loads(cli("analyze", "--source", str(bank), "Bank.Ledger", "--json").stdout)
    assert [m["name"] for m in only["modules"]] == ["Bank.Ledger"]
    assert only["modules"][0]["kinds"] == ["Agent"]
    missing = cli("analyze", "--source", "/no/such/dir")
    assert missing.returncode != 0 and "Traceback" not in missing.stderr


def test_a_plan_for_the_kv_app_keeps_its_budget(tmp_path: Path) -> None:
    budget = 300.0
    with start_sample("kv", name_prefix="t_plan_kv", workload=True) as beam:
        time.sleep(1.5)  # the load generator ramps up
        with elixirscope.attach(beam.name, beam.cookie) as scope:
            made = scope.node.run(make_plan(scope.node.anode, budget, focus="kv_store"))
            assert any(item.module == ":kv_store" for item in made.items)
            recorder = scope.record(tmp_path / "kv.duckdb")
            apply_plan(scope, made)
            time.sleep(4)
            recorder.stop()
    with open_recording(tmp_path / "kv.duckdb") as rec:
        events, seconds = rec.con.execute(
            "SELECT count(*), (max(ts) - min(ts)) / 1e9 FROM events WHERE kind IN (1, 2, 3)"
        ).fetchone()
    assert budget * 0.75 <= events / seconds <= budget * 1.25, (events / seconds,
                                                              made.as_dict())


def test_a_plan_focused_on_a_process_traces_its_messages(busy_bank: BeamNode,
                                                          tmp_path: Path) -> None:
    budget = 400.0
    with elixirscope.attach(busy_bank.name, busy_bank.cookie) as scope:
        made = scope.node.run(make_plan(scope.node.anode, budget, focus="Bank.Transfer"))
        first = made.items[0]
        assert (first.kind, first.module) == ("process", "Bank.Transfer")
        assert first.include == ("messages", "lifecycle", "state") and first.calls_per_s > 0
        recorder = scope.record(tmp_path / "focused.duckdb")
        apply_plan(scope, made)
        time.sleep(4)
        recorder.stop()
    with elixirscope.connect(busy_bank.name, busy_bank.cookie) as node:
        pid = node.rpc("erlang", "whereis", [Atom("Elixir.Bank.Transfer")])
        # Neither the message counting nor the recording left a trace flag behind.
        assert node.rpc("erlang", "trace_info", [pid, Atom("flags")]) == (Atom("flags"), [])
    with open_recording(tmp_path / "focused.duckdb") as rec:
        events, seconds = rec.con.execute(
            "SELECT count(*), (max(ts) - min(ts)) / 1e9 FROM events "
            "WHERE kind NOT IN (18, 19)").fetchone()
        received = rec.events(pid="Bank.Transfer", kind="receive", limit=None)
    assert received
    assert budget * 0.6 <= events / seconds <= budget * 1.25, (events / seconds,
                                                             made.as_dict())
