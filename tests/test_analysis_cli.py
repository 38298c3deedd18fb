"""``elixirscope traceback / range / stats / repeats / find / step / rerun`` over recordings
built from batches: tables, JSON lines, and one-sentence errors with exit codes."""

from __future__ import annotations

import pytest

from cli_support import json_rows, run
from test_analysis_queries import build_repeats
from test_recording_queries import build_bank


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("cli") / "bank.duckdb"
    build_bank(path)
    return str(path)


@pytest.fixture(scope="module")
def repeats(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("cli") / "repeats.duckdb"
    build_repeats(path)
    return str(path)


def error_line(result: tuple[int, str, str], code: int = 1) -> str:
    got, out, err = result
    assert got == code and out == "" and "Traceback" not in err, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") or lines[-1].startswith("Error: "), err
    return lines[-1]


def test_traceback_crosses_processes(capsys: pytest.CaptureFixture[str], bank: str) -> None:
    (doc,) = json_rows(capsys, "traceback", bank, "20")
    assert [[span["mfa"] for span in link["stack"]] for link in doc["links"]] == [
        [":ets.insert/2", "Bank.Auditor.record/1", "Bank.Auditor.handle_cast/2"],
        ["Bank.Account.apply/2", "Bank.Account.handle_call/3"],
        ["Bank.Client.deposit/2"]]
    assert doc["origin"] == ("Bank.Client.deposit(#PID<0.101.0>, 12345) on #PID<0.100.0>, "
                             "with no message received before it")
    code, out, _ = run(capsys, "traceback", bank, "20")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("event 20 (return) at 0.033 s on #PID<0.102.0> Bank.Auditor")
    assert lines[1].startswith('  in :ets.insert(:audit_log, {1, "deposit of 12345\\nok"}) '
                               "(span 19, 0.032 s, 1.000 ms)")
    assert lines[4] == '  started by message {:audit, "deposit of 12345\\nok"}'
    assert lines[5].startswith("sent 10 (send) at 0.015 s on #PID<0.101.0>")
    assert lines[-1].startswith("origin: Bank.Client.deposit(#PID<0.101.0>, 12345)")
    assert "there is no event 999" in error_line(run(capsys, "traceback", bank, "999"))


def test_stats_table_and_json(capsys: pytest.CaptureFixture[str], repeats: str) -> None:
    rows = json_rows(capsys, "stats", repeats, "--module", "Math")
    assert [(r["mfa"], r["count"], r["acc_time"]) for r in rows] == [
        ("Math.fact/1", 3, 0.03)]
    code, out, _ = run(capsys, "stats", repeats, "--sort", "own", "--limit", "2")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{repeats}: 2 functions by own"
    assert lines[1].split() == ["calls", "open", "acc", "own", "mean", "p50", "p95", "p99",
                                "max", "function"]
    assert lines[2].split()[-1] == "Shop.lookup/1"
    code, out, _ = run(capsys, "stats", repeats, "--by", "process", "--module", "Shop",
                       "--function", "lookup")
    assert code == 0 and "Shop.lookup/1 on #PID<0.100.0>" in out
    assert "Shop.lookup/1 on #PID<0.101.0>" in out
    assert "sort" in error_line(run(capsys, "stats", repeats, "--sort", "x"), code=2)
    assert "Nope does not appear" in error_line(run(capsys, "stats", repeats, "--module",
                                                    "Nope"))


def test_repeats_lists_the_most_wasteful_first(capsys: pytest.CaptureFixture[str],
                                              repeats: str) -> None:
    rows = json_rows(capsys, "repeats", repeats)
    assert [(r["mfa"], r["count"], r["size"]) for r in rows] == [
        ("Shop.lookup/1", 4, 2), ("Shop.handler/1", 2, 5), ("Shop.f/0", 2, 3)]
    code, out, _ = run(capsys, "repeats", repeats, "--min-size", "3")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{repeats}: 2 repeated call trees"
    assert lines[2].split()[:5] == ["30.000", "ms", "2", "5", "30.000"]
    assert "Shop.handler/1" in lines[2] and "[1]" in lines[2] and ":done" in lines[2]
    assert "min-count" in error_line(run(capsys, "repeats", repeats, "--min-count", "1"),
                                     code=2)


def test_find_takes_elixir_literals(capsys: pytest.CaptureFixture[str], bank: str) -> None:
    assert [r["seq"] for r in json_rows(capsys, "find", bank, "12345")] == [
        5, 6, 7, 8, 9, 12, 13]
    assert [r["seq"] for r in json_rows(capsys, "find", bank, '"deposit of"')] == [
        10, 11, 17, 18, 19]
    assert [r["seq"] for r in json_rows(capsys, "find", bank, "{:deposit, 12345}")] == [
        6, 7, 8]
    # The client's pid is in the account's handle_call arguments.
    assert [r["seq"] for r in json_rows(capsys, "find", bank, "#PID<0.100.0>")] == [8]
    assert [r["seq"] for r in json_rows(capsys, "find", bank, ":audit", "--kind", "send")
            ] == [10]
    assert [r["seq"] for r in json_rows(capsys, "find", bank, "Bank.Auditor")] == [4]
    code, out, _ = run(capsys, "find", bank, ":badarith")
    assert code == 0 and out.splitlines()[0] == f"{bank}: 2 events holding :badarith"
    assert "double quotes" in error_line(run(capsys, "find", bank, "deposit of"), code=2)
    assert "no #PID<0.999.0>" in error_line(run(capsys, "find", bank, "#PID<0.999.0>"))


def test_range_prints_the_tree(capsys: pytest.CaptureFixture[str], bank: str) -> None:
    (doc,) = json_rows(capsys, "range", bank, "8", "--messages")
    assert doc["span"]["mfa"] == "Bank.Account.handle_call/3"
    (child,) = doc["children"]
    assert child["span"]["mfa"] == "Bank.Account.apply/2"
    assert [e["seq"] for e in child["events"]] == [10]
    code, out, _ = run(capsys, "range", bank, "5", "--max-depth", "0")
    assert code == 0
    assert out.splitlines() == [
        "Bank.Client.deposit(#PID<0.101.0>, 12345) -> :ok [return, 18.000 ms, span 5]"]
    assert "there is no span 6" in error_line(run(capsys, "range", bank, "6"))


def test_rerun_asks_for_confirmation(capsys: pytest.CaptureFixture[str], bank: str) -> None:
    line = error_line(run(capsys, "rerun", bank, "9", "nobody@nowhere"), code=2)
    assert "--yes-run-it" in line


def test_step_walks_by_message_span_and_process(capsys: pytest.CaptureFixture[str],
                                                bank: str) -> None:
    def seqs(*args: str) -> list[int]:
        return [int(str(row["seq"])) for row in json_rows(capsys, "step", bank, *args)]

    # The deposit call, its send, the account's receive, the handler it started, then the
    # handler's own next message (the tell to the auditor).
    assert seqs("5", "--by", "message", "--count", "4") == [5, 6, 7, 8, 10]
    # Over the handler's nested apply/2 to its return, then the reply it sent.
    assert seqs("8", "--by", "span", "--count", "2") == [8, 13, 14]
    assert seqs("14", "--by", "span", "--back", "--count", "2") == [14, 13, 8]
    assert seqs("26", "--count", "3") == [26]  # the crashed worker's exit is its last
    code, out, _ = run(capsys, "step", bank, "7", "--by", "message", "--back")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].endswith("from event 7, 1 step back by message")
    assert [line.split()[:1] + line.split()[3:4] for line in lines[2:]] == [
        ["7", "receive"], ["6", "send"]]
    code, out, _ = run(capsys, "step", bank, "29", "--count", "50")
    assert code == 0 and "the recording has no step further" in out
    assert "there is no event 999" in error_line(run(capsys, "step", bank, "999"))
    assert run(capsys, "step", bank, "5", "--by", "sideways")[0] == 2
