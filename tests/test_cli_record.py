"""``elixirscope record`` against the running bank app."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from elixirscope.recordings import open_recording
from elixirscope.sample_nodes import BeamNode

pytestmark = pytest.mark.node


def command(node: BeamNode, *args: str) -> list[str]:
    return [sys.executable, "-m", "elixirscope", "record", node.name, "--cookie",
            node.cookie, *args]


def test_record_for_a_duration_writes_a_finished_recording(bank_node: BeamNode,
                                                           tmp_path: Path) -> None:
    path = tmp_path / "bank.duckdb"
    result = subprocess.run(
        command(bank_node, "--trace", "Bank.Account", "--trace-function",
                "Bank.Transfer.transfer/3", "--trace-process", "Bank.Auditor",
                "--duration", "2", "-o", str(path), "--json"),
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    stats = json.loads(result.stdout)
    assert stats["path"] == str(path) and stats["dropped"] == 0
    # When tracing switched on, and what the traced process already had in flight.
    assert re.search(r"into \S+ since \d\d:\d\d:\d\d\.\d{3} for 2 s", result.stderr)
    assert re.search(r"at the start, Bank\.Auditor \(#PID<[\d.]+>\) had \d+ messages? "
                     r"queued, \w+ in \S+/\d", result.stderr), result.stderr
    with open_recording(path) as recording:
        assert len(recording.events(limit=None)) == stats["events"]
        assert recording.meta["finalized"] is True
        traced = {trace["target"] for trace in recording.meta["traces"]}
        assert {"Bank.Account", "Bank.Transfer.transfer/3"} <= traced
        # The auditor checks every second: its timer messages are there.
        assert recording.events(pid="Bank.Auditor", kind="receive")


def test_record_with_state_captures_genservers_and_agents(bank_node: BeamNode,
                                                          tmp_path: Path) -> None:
    path = tmp_path / "state.duckdb"
    result = subprocess.run(
        command(bank_node, "--state", "--trace", "Bank.Account", "--trace", "Bank.Ledger",
                "--trace-process", "Bank.Ledger", "--duration", "2", "-o", str(path),
                "--json"),
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert "note: Bank.Ledger is not a GenServer or gen_statem callback module" in result.stderr
    with open_recording(path) as recording:
        ledger = recording.state_history("Bank.Ledger")
        assert ledger and isinstance(ledger[-1].state, list)
        accounts = {event.pid for event in recording.events(kind="state", limit=None)
                    if event.module == "Bank.Account"}
        assert len(accounts) >= 3


def test_ctrl_c_stops_cleanly_and_keeps_the_recording(bank_node: BeamNode,
                                                      tmp_path: Path) -> None:
    path = tmp_path / "interrupted.duckdb"
    process = subprocess.Popen(
        command(bank_node, "--trace-process", "Bank.Auditor", "-o", str(path)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    started = process.stderr.readline()  # attaching can take seconds on a loaded machine
    assert "Ctrl-C to stop" in started, started
    time.sleep(2.5)  # the auditor's timer fires every second
    os.kill(process.pid, signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "stopping" in err and "Traceback" not in err
    assert str(path) in out
    with open_recording(path) as recording:
        assert not recording.recovered
        assert recording.events(limit=None)


@pytest.mark.parametrize(("args", "code", "text"), [
    ((), 2, "name something to trace"),
    (("--trace", "Bank.Nope"), 1, "module Bank.Nope is not loaded"),
    (("--trace", "Bank.Account", "--capacity", "1000"), 2, "not a power of two"),
    (("--trace-function", "Bank.Account.deposit/x"), 1, "arity"),
])
def test_bad_requests_get_one_sentence(bank_node: BeamNode, tmp_path: Path,
                                       args: tuple[str, ...], code: int, text: str) -> None:
    path = tmp_path / "bad.duckdb"
    result = subprocess.run(command(bank_node, *args, "-o", str(path)), capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == code, result.stderr
    assert text in result.stderr and "Traceback" not in result.stderr
    assert not path.exists()


def test_a_limit_that_stops_the_tracing_is_announced_and_fails_the_command(
        bank_node: BeamNode, tmp_path: Path) -> None:
    path = tmp_path / "tripped.duckdb"
    args = ("--trace", "Bank.Account", "--max-events", "50", "--duration", "20",
            "-o", str(path))
    result = subprocess.run(command(bank_node, *args), capture_output=True, text=True,
                            timeout=120, check=False)
    # Announced when it happened, with the limit, its value and the option to raise it,
    # then a non-zero exit; the recording keeps what was captured.
    assert result.returncode == 1, result.stderr
    assert "s: tracing stopped by the max_events limit" in result.stderr
    assert "raise --max-events" in result.stderr and "--partial-ok" in result.stderr
    assert "stopped by max_events" in result.stderr and "Traceback" not in result.stderr
    with open_recording(path) as recording:
        assert recording.events(limit=None)
    partial = subprocess.run(command(bank_node, *args[:-1], str(tmp_path / "ok.duckdb"),
                                     "--partial-ok", "--json"),
                             capture_output=True, text=True, timeout=120, check=False)
    assert partial.returncode == 0, partial.stderr
    stats = json.loads(partial.stdout)
    assert stats["breaker"] == "max_events" and "max_events" in stats["stop_message"]
    assert stats["elapsed"] < 15  # it ended when the tracing stopped, not at --duration


def test_a_trace_that_saw_nothing_says_so_and_why(bank_node: BeamNode,
                                                  tmp_path: Path) -> None:
    result = subprocess.run(
        command(bank_node, "--trace", "Bank.Account", "--global-only",
                "--trace-function", "Bank.Ledger.last/1", "--trace-process",
                "Bank.Ledger", "--include", "lifecycle", "--duration", "1.5",
                "-o", str(tmp_path / "quiet.duckdb"), "--json"),
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    notes = json.loads(result.stdout)["notes"]
    assert any("Bank.Ledger.last/1 recorded nothing: no process called it" in n
               for n in notes), notes
    assert any("Bank.Ledger" in n and "did nothing of what was traced (lifecycle)" in n
               for n in notes), notes


def test_include_takes_known_parts_only(bank_node: BeamNode, tmp_path: Path) -> None:
    result = subprocess.run(
        command(bank_node, "--trace-process", "Bank.Auditor", "--include", "messages,calsl",
                "-o", str(tmp_path / "x.duckdb")),
        capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "calsl" in result.stderr
