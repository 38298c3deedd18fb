"""``elixirscope query`` and ``elixirscope spans`` over a recording built from batches."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from rich.cells import cell_len

from cli_support import json_rows, run
from elixirscope.cli import output
from test_recording_queries import build_bank


@pytest.fixture(scope="module")
def rec(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("cli") / "bank.duckdb"
    build_bank(path)
    return str(path)


def seqs(capsys: pytest.CaptureFixture[str], *args: str) -> list[object]:
    return [row["seq"] for row in json_rows(capsys, "query", *args)]


def one_error_line(result: tuple[int, str, str]) -> str:
    code, out, err = result
    assert code == 1 and out == ""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0]


def test_query_prints_a_table(capsys: pytest.CaptureFixture[str], rec: str) -> None:
    code, out, _ = run(capsys, "query", rec)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{rec}: 31 events"
    assert lines[1].split() == ["seq", "time", "(s)", "pid", "kind", "function", "payload"]
    row = lines[2 + 7].rstrip().split(maxsplit=5)
    assert row == ["8", "0.013", "#PID<0.101.0>", "call", "Bank.Account.handle_call/3",
                   "[{:deposit, 12345}, #PID<0.100.0>, %{balance: 0}]"]
    named_send = lines[2 + 9]
    assert "→ Bank.Auditor" in named_send and '{:audit, "deposit of 12345\\nok"}' in named_send
    assert "#PID<0.102.0> Bank.Auditor  register" in lines[2 + 3]
    exception = lines.index(next(line for line in lines if " exception " in line))
    assert lines[exception + 1] == "    in Bank.Account.risky(0)"  # its recorded stack
    charlist = next(n for n, line in enumerate(lines) if line.startswith(" 30 "))
    assert "'hello world hello" in lines[charlist] and lines[charlist].endswith("…")
    # The cut text follows whole (up to a bound) on a detail line under its row.
    assert lines[charlist + 1].startswith("    payload: 'hello world hello world")
    assert lines[charlist + 1].endswith("more characters in --json)")
    assert all(cell_len(line) <= 200 for n, line in enumerate(lines) if n != charlist + 1)


def test_a_narrow_terminal_gets_every_text_whole(capsys: pytest.CaptureFixture[str],
                                                 rec: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(output.out, "width", 100)
    code, out, _ = run(capsys, "query", rec, "--limit", "10")
    assert code == 0
    lines = out.splitlines()
    row = next(n for n, line in enumerate(lines) if line.startswith("  8 "))
    assert cell_len(lines[row]) <= 100 and lines[row].endswith("…")
    assert lines[row + 1] == "    payload: [{:deposit, 12345}, #PID<0.100.0>, %{balance: 0}]"
    assert "[#PID<0.101.0>, 12345]" not in lines[row + 1]
    assert sum(1 for line in lines if line.startswith("    payload: ")) == sum(
        1 for line in lines if line.endswith("…"))
    code, out, _ = run(capsys, "spans", rec)
    lines = out.splitlines()
    risky = next(n for n, line in enumerate(lines) if "Bank.Account.r" in line)
    assert "Bank.Account.risky(0)" in lines[risky] + lines[risky + 1]


def test_query_filters(capsys: pytest.CaptureFixture[str], rec: str) -> None:
    assert seqs(capsys, rec, "--pid", "Bank.Auditor", "--kind", "call", "--kind",
                "return") == [17, 18, 19, 20, 21, 22]
    assert seqs(capsys, rec, "--pid", "<0.104.0>") == [24, 25, 26]
    assert seqs(capsys, rec, "--module", ":ets") == [19, 20]
    assert seqs(capsys, rec, "--module", "Bank.Account", "--function", "risky/1") == [
        23, 24, 25]
    assert seqs(capsys, rec, "--since", "20ms", "--until", "0.03") == [12, 13, 14, 15, 16]
    assert seqs(capsys, rec, "--since", "2024-05-01T12:00:00.061Z") == [28, 29, 30, 31]
    assert seqs(capsys, rec, "--text", "12345", "--order", "desc", "--limit", "2") == [19, 18]
    assert seqs(capsys, rec, "--text", "{:deposit, 99}") == []
    assert len(seqs(capsys, rec, "--limit", "0")) == 31
    assert seqs(capsys, rec, "--limit", "3") == [1, 2, 3]


def test_query_json_rows_are_complete(capsys: pytest.CaptureFixture[str], rec: str) -> None:
    [row] = json_rows(capsys, "query", rec, "--kind", "exception")
    assert row["seq"] == 25 and row["pid"] == "#PID<0.104.0>"
    assert row["mfa"] == "Bank.Account.risky/1" and row["text"] == "{:error, :badarith}"
    assert row["span_id"] == 24 and "payload" not in row
    assert row["stack"] == [{"span_id": 24, "mfa": "Bank.Account.risky/1",
                             "call": "Bank.Account.risky(0)"}]


def test_pid_ids_are_accepted(capsys: pytest.CaptureFixture[str], rec: str) -> None:
    [worker] = json_rows(capsys, "query", rec, "--kind", "exit", "--limit", "1")
    assert seqs(capsys, rec, "--pid", str(worker["pid_id"])) == [24, 25, 26]


def test_spans_table_and_json(capsys: pytest.CaptureFixture[str], rec: str) -> None:
    code, out, _ = run(capsys, "spans", rec)
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"{rec}: 7 calls"
    assert lines[1].split() == ["start", "(s)", "duration", "pid", "outcome", "call", "result"]
    # Each span prints as the call it was, nested by depth.
    assert lines[3].split()[:6] == ["0.013", "12.000", "ms", "#PID<0.101.0>", "return",
                                    "Bank.Account.handle_call({:deposit,"]
    assert "    :ets.insert(:audit_log, {1," in lines[7] and "1.000 ms" in lines[7]
    assert "exception" in lines[8] and "{:error, :badarith}" in lines[8]

    def ids(*args: str) -> list[object]:
        return [row["span_id"] for row in json_rows(capsys, "spans", rec, *args)]

    assert ids("--slowest", "2") == [5, 17]
    assert ids("--min-duration", "10ms", "--module", "Bank.Auditor") == [17]
    assert ids("--min-duration", "0.012") == [5, 8, 17]
    assert ids("--pid", "#PID<0.102.0>", "--function", "record") == [18]
    assert ids("--since", "0.03", "--limit", "2") == [17, 18]
    [row] = json_rows(capsys, "spans", rec, "--function", "apply")
    assert (row["args"], row["result"], row["duration"]) == ("[0, 12345]", "12345", 0.006)


@pytest.mark.parametrize("args", [
    ["query", "{rec}", "--since", "yesterday"],
    ["query", "{rec}", "--kind", "sned"],
    ["query", "{rec}", "--order", "up"],
    ["query", "{rec}", "--limit", "-1"],
    ["spans", "{rec}", "--min-duration", "fast"],
    ["spans", "{rec}", "--slowest", "0"],
    ["spans"],
])
def test_bad_options_are_usage_errors(capsys: pytest.CaptureFixture[str], rec: str,
                                      args: list[str]) -> None:
    code, out, err = run(capsys, *(arg.format(rec=rec) for arg in args))
    assert code == 2 and out == ""
    assert "Usage:" in err and "Traceback" not in err


def test_errors_are_one_sentence(capsys: pytest.CaptureFixture[str], rec: str,
                                 tmp_path: Path) -> None:
    missing = one_error_line(run(capsys, "query", str(tmp_path / "none.duckdb")))
    assert missing == f"error: there is no recording at {tmp_path / 'none.duckdb'}"
    assert one_error_line(run(capsys, "spans", rec, "--pid", "Bank.Nobody")) == (
        f"error: there is no process named Bank.Nobody in {rec}")
    assert "does not appear" in one_error_line(run(capsys, "query", rec, "--module", "Nope"))
    damaged = tmp_path / "damaged.duckdb"
    damaged.write_bytes(Path(rec).read_bytes()[:8192])
    assert one_error_line(run(capsys, "query", str(damaged))) == (
        f"error: {damaged} is truncated: the file ends before its data does")


@pytest.mark.parametrize("command", ["query", "spans"])
def test_help(capsys: pytest.CaptureFixture[str], command: str) -> None:
    code, out, _ = run(capsys, command, "--help")
    assert code == 0
    for option in ("--pid", "--module", "--function", "--since", "--until", "--limit",
                   "--json"):
        assert option in out
    extra = ["--kind", "--text", "--order"] if command == "query" else [
        "--min-duration", "--slowest"]
    assert all(option in out for option in extra)


def test_as_a_real_process(rec: str, tmp_path: Path) -> None:
    def elixirscope(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "elixirscope", *args],
                              capture_output=True, text=True, timeout=60, check=False,
                              stdin=subprocess.DEVNULL)

    result = elixirscope("spans", rec, "--slowest", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["mfa"] == "Bank.Client.deposit/2"
    foreign = tmp_path / "notes.txt"
    foreign.write_text("not a recording\n" * 100)
    failed = elixirscope("query", str(foreign))
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    assert failed.stderr.strip() == (f"error: {foreign} is not a recording (not a DuckDB "
                                     "database file)")


def test_flow_lists_a_process_messages(capsys: pytest.CaptureFixture[str], rec: str) -> None:
    rows = json_rows(capsys, "flow", rec, "Bank.Auditor")
    assert [(r["sender"], r["receiver_name"], r["text"]) for r in rows] == [
        ("#PID<0.101.0>", "Bank.Auditor", '{:audit, "deposit of 12345\\nok"}')]
    both = json_rows(capsys, "flow", rec, "#PID<0.100.0>", "#PID<0.101.0>")
    assert len(both) == 2 and {r["sender"] for r in both} == {"#PID<0.100.0>",
                                                               "#PID<0.101.0>"}
    code, out, _ = run(capsys, "flow", rec, "Bank.Auditor")
    assert code == 0 and "queued" in out.splitlines()[1] and "{:audit," in out
