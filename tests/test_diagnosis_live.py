"""Each detector finds its bug on a real node that has it, named in the first finding's
title, and stays silent on the healthy sample apps; doctor does it on a node nobody
configured and leaves nothing behind.

The misbehaving systems are the scenarios of ``tests/beam/es_faults.erl``, one node
each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import elixirscope
from cli_support import json_rows, run
from elixirscope.diagnosis.finding import Finding
from elixirscope.recordings import open_recording
from elixirscope.sample_nodes import BeamNode, start_bare, start_sample
from tracing_support import clean_state, compile_fixture, erl, load_fixture, wait_clean

pytestmark = pytest.mark.node

FAULTS = [("es_faults", "handle_call", 3), ("es_faults", "handle_cast", 2),
          ("es_faults", "init", 1)]


@pytest.fixture(scope="module")
def faults_code(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return compile_fixture(tmp_path_factory.mktemp("faults"), "es_faults")


@pytest.fixture
def faults_node(faults_code: bytes) -> Iterator[BeamNode]:
    with start_bare("erl", name_prefix="t_diag") as node:
        with elixirscope.connect(node.name, node.cookie) as conn:
            load_fixture(conn, faults_code, "es_faults")
        yield node


def record_scenario(node: BeamNode, path: Path, run_it: str, seconds: float, *,
                    prepare: Callable[[elixirscope.Scope], None] | None = None
                    ) -> list[Finding]:
    """Traces es_faults (and what ``prepare`` adds) with process metrics, runs the
    scenario, records ``seconds`` more, and diagnoses the recording."""
    with elixirscope.attach(node.name, node.cookie) as scope:
        scope.trace("es_faults", "detailed")
        if prepare is not None:
            prepare(scope)
        recorder = scope.record(path)
        scope.sample_metrics(top=5, hz=10)
        erl(scope.node, run_it)
        time.sleep(seconds)
        recorder.stop()
    with open_recording(path, writable=True) as rec:
        return rec.findings()


def first(found: list[Finding], kind: str, *words: str) -> Finding:
    assert found, "no findings"
    finding = found[0]
    assert finding.kind == kind, [f.title for f in found]
    for word in words:
        assert word in finding.title, finding.title
    return finding


def test_a_call_cycle_ended_by_a_timeout_is_a_deadlock(faults_node: BeamNode, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    path = tmp_path / "deadlock.duckdb"
    found = record_scenario(faults_node, path, "es_faults:deadlock()", 1.5)
    finding = first(found, "deadlock", ":es_dl_a", ":es_dl_b", ":audit", ":balance",
                    "timed out", "handle_call/3")
    assert finding.severity == "critical" and len(finding.evidence.waits) == 2
    code, out, _ = run(capsys, "waits", str(path), "--at", f"{finding.start + 0.2:.3f}")
    assert code == 0 and out.count("CYCLE") == 2 and "1 cycle" in out
    code, out, _ = run(capsys, "waits", str(path), "--at", f"{finding.end + 0.5:.3f}")
    assert code == 0 and "no cycle" in out
    code, out, _ = run(capsys, "diagnose", str(path))
    assert code == 0 and "CRITICAL" in out and f"waits {path} --at" in out
    # Findings are stored with the version of the detectors that found them.
    with open_recording(path) as rec:
        assert rec.stored_findings() == found
    with open_recording(path, writable=True) as rec:
        rec.con.execute("UPDATE meta SET value = '\"older detectors\"' WHERE key = 'findings'")
    with open_recording(path) as rec:
        assert rec.stored_findings() is None and rec.findings() == found
    rows = json_rows(capsys, "diagnose", str(path))
    assert rows[0]["kind"] == "deadlock" and rows[0]["next_commands"][0].startswith(
        f"elixirscope waits {path} --at")


def test_task_await_is_a_wait_on_the_tasks_process(faults_code: bytes,
                                                  tmp_path: Path) -> None:
    """On an Elixir node, es_dl_a awaits a Task that calls es_dl_a back and gives up
    after a second: the await is a wait on the task's process, for that second."""
    path = tmp_path / "task.duckdb"
    with start_bare("elixir", name_prefix="t_diag_ex") as node:
        with elixirscope.connect(node.name, node.cookie) as conn:
            load_fixture(conn, faults_code, "es_faults")
        record_scenario(node, path, "es_faults:task_deadlock()", 1.5)
    with open_recording(path) as rec:
        (wait,) = [w for w in rec.waits() if w.request.startswith("Task.await of")]
        assert wait.span.pid_name == ":es_dl_a" and wait.outcome == "answered"
        assert wait.duration is not None and 0.9 < wait.duration < 3.0
        assert wait.callee.startswith("#PID<") and wait.caller is not None
        assert wait.caller.function == "handle_call"


def test_a_restart_storm_names_the_first_crash_its_message_and_the_supervisor(
        faults_node: BeamNode, tmp_path: Path) -> None:
    def prepare(scope: elixirscope.Scope) -> None:
        erl(scope.node, "es_faults:cascade_sup()")
        scope.trace_process("es_sup", include_children=True,
                            include=["messages", "calls", "lifecycle", "state"])
        scope.trace_process("es_watcher", include=["messages", "lifecycle"])

    found = record_scenario(faults_node, tmp_path / "cascade.duckdb", "es_faults:cascade()",
                            1.0, prepare=prepare)
    finding = first(found, "crash_cascade", ":es_faults.handle_cast/2", ":es_worker",
                    ":badarith", "{:charge, 0}", "restarted 3 times",
                    ":es_sup allows 3 in 10 s", "gave up", "4 linked processes died with them",
                    "1 process monitoring them crashed after the :DOWN")
    assert finding.severity == "critical"
    assert finding.evidence.messages and finding.evidence.spans


def test_a_mailbox_that_grows_faster_than_its_handler_serves_is_overload(
        faults_node: BeamNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def prepare(scope: elixirscope.Scope) -> None:
        erl(scope.node, "es_faults:start(es_sink)")
        scope.trace_process("es_sink")

    path = tmp_path / "overload.duckdb"
    found = record_scenario(faults_node, path, "es_faults:overload(3000)", 1.5,
                            prepare=prepare)
    first(found, "overload", ":es_sink", '{:"$gen_cast", {:job, _}}',
          ":es_faults.handle_cast/2")
    assert [f.kind for f in found].count("overload") == 1
    rows = json_rows(capsys, "top", str(path), "--at", "1.2", "--limit", "3")
    assert rows[0]["name"] == ":es_sink" and int(str(rows[0]["message_queue_len"])) > 1000


def test_one_call_per_item_to_another_process_is_n_plus_one(faults_node: BeamNode,
                                                           tmp_path: Path) -> None:
    found = record_scenario(faults_node, tmp_path / "nplus1.duckdb",
                            "es_faults:page(80), es_faults:page(80)", 0.5)
    finding = first(found, "repeated_work",
                    ":es_faults.fetch/1 called 80 times per :es_faults.page/1 (2 calls)",
                    ":es_store", "{:fetch, _}", "160 round trips")
    assert len(finding.evidence.spans) == 3


def test_a_call_far_above_its_median_is_an_outlier_with_what_it_waited_on(
        faults_node: BeamNode, tmp_path: Path) -> None:
    found = record_scenario(faults_node, tmp_path / "outliers.duckdb",
                            "es_faults:outliers(80)", 0.5)
    finding = first(found, "latency_outlier", ":es_faults.handle_call/3 on :es_api",
                    "2 times in 80 calls", ":es_backend", "{:query,")
    assert len(finding.evidence.spans) == 2


def test_a_process_running_one_function_most_of_the_time_is_busy(faults_node: BeamNode,
                                                                tmp_path: Path) -> None:
    found = record_scenario(faults_node, tmp_path / "hot.duckdb", "es_faults:hot(1500)", 2.0)
    first(found, "hot_function", "Busy process :es_hot", ":es_faults.crunch/1")


def test_a_write_from_a_stale_read_is_a_lost_update(faults_node: BeamNode,
                                                   tmp_path: Path) -> None:
    def prepare(scope: elixirscope.Scope) -> None:
        erl(scope.node, "es_faults:start(es_counter)")
        scope.trace_process("es_counter", include=["messages", "calls", "lifecycle", "state"])

    found = record_scenario(faults_node, tmp_path / "lost.duckdb", "es_faults:lost_update()",
                            0.5, prepare=prepare)
    finding = first(found, "lost_update", ":es_counter's balance", "read balance = 100",
                    "wrote 120", "wrote 110", "the write of 120 was lost")
    assert len(finding.evidence.events) == 3


def doctor(capsys: pytest.CaptureFixture[str], node: BeamNode, path: Path,
           seconds: float) -> tuple[int, str, str]:
    return run(capsys, "doctor", node.name, "--cookie", node.cookie, "--duration",
               str(seconds), "-o", str(path))


def test_doctor_finds_a_live_deadlock_on_a_node_nobody_configured_and_leaves_nothing(
        faults_node: BeamNode, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with elixirscope.connect(faults_node.name, faults_node.cookie) as conn:
        erl(conn, "es_faults:deadlock_forever()")
        time.sleep(0.2)
        code, out, err = doctor(capsys, faults_node, tmp_path / "doctor.duckdb", 2)
        assert code == 0, err
        assert "CRITICAL deadlock" in out, out
        assert ":es_dl_a (in :es_faults.handle_call/3) waits on :es_dl_b" in out, out
        assert f"recording: {tmp_path / 'doctor.duckdb'}" in out
        assert "waiting in a call" in err and faults_node.cookie not in out + err
        assert wait_clean(conn, FAULTS) == clean_state(FAULTS), "tracing left behind"


@pytest.mark.parametrize("app", ["bank", "kv"])
def test_doctor_stays_silent_on_a_healthy_app(app: str, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with start_sample(app, name_prefix=f"t_healthy_{app}") as node, \
            elixirscope.connect(node.name, node.cookie) as conn:
        if app == "bank":
            conn.rpc("Elixir.Bank.Workload", "start", [[]])
        else:
            conn.rpc("kv_load", "start", [])
        code, out, err = doctor(capsys, node, tmp_path / f"{app}.duckdb", 3)
        assert code == 0, err
        assert "no findings" in out, out
        assert "the busiest processes" in err
        with open_recording(tmp_path / f"{app}.duckdb") as rec:
            assert rec.summary()["events"] > 100
            assert rec.findings() == []
