"""The ``elixirscope`` command as a user runs it: a real process against real nodes."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from elixirscope.sample_nodes import BeamNode
from export_support import all_spans, check_chrome_trace, check_otlp_request, check_parents

pytestmark = pytest.mark.node


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "ERLANG_COOKIE"}
    return subprocess.run(
        [sys.executable, "-m", "elixirscope", *args],
        capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL,
        check=False,
    )


def one_sentence_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, result
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def test_nodes_lists_what_epmd_knows(erl_node: BeamNode) -> None:
    table = run("nodes")
    assert table.returncode == 0 and erl_node.name in table.stdout
    rows = [json.loads(line) for line in run("nodes", "--json").stdout.splitlines()]
    assert {"node": erl_node.name, "name": erl_node.short_name} in [
        {"node": row["node"], "name": row["name"]} for row in rows]


def test_nodes_prints_the_name_a_node_gives_itself(tmp_path: Path) -> None:
    name = f"t_local_{secrets.token_hex(4)}"
    node = subprocess.Popen(
        ["erl", "-sname", f"{name}@localhost", "-setcookie", secrets.token_hex(8),
         "-noshell"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(tmp_path)})
    try:
        for _ in range(100):
            rows = [json.loads(line) for line in run("nodes", "--json").stdout.splitlines()]
            if any(row["name"] == name for row in rows):
                break
        assert {"node": f"{name}@localhost", "name": name} in [
            {"node": row["node"], "name": row["name"]} for row in rows]
        assert f"{name}@localhost" in run("nodes", "127.0.0.1").stdout
    finally:
        node.kill()
        node.wait()
    assert node.stdout is not None and node.stdout.read() == b""


def test_ps_shows_the_live_process_table(erl_node: BeamNode) -> None:
    result = run("ps", erl_node.name, "--cookie", erl_node.cookie, "--sort", "memory",
                 "--limit", "5", "--json")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 5
    assert [row["memory"] for row in rows] == sorted((row["memory"] for row in rows),
                                                     reverse=True)
    assert set(rows[0]) == {"pid", "name", "label", "current_function", "initial_call",
                            "mailbox", "memory", "reductions"}
    table = run("ps", erl_node.name, "--cookie", erl_node.cookie, "--limit", "0")
    assert table.returncode == 0
    assert ":code_server" in table.stdout and "#PID<0." in table.stdout


def test_eval_elixir_prints_elixir_style_and_output_goes_to_stderr(
        elixir_node: BeamNode) -> None:
    result = run("eval", elixir_node.name, "--cookie", elixir_node.cookie,
                 'IO.puts("side effect"); %{sum: Enum.sum([1, 2, 3]), list: ~c"ab", s: "é"}')
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '%{list: \'ab\', s: "é", sum: 6}'
    assert "side effect" in result.stderr
    as_json = run("eval", elixir_node.name, "--cookie", elixir_node.cookie, "--json",
                  "{:ok, [1, nil, :atom, \"text\"]}")
    assert json.loads(as_json.stdout) == {"result": ["ok", [1, None, "atom", "text"]],
                                          "inspect": '{:ok, [1, nil, :atom, "text"]}'}


def test_eval_erlang(erl_node: BeamNode) -> None:
    result = run("eval", erl_node.name, "--cookie", erl_node.cookie, "--erlang",
                 "X = lists:seq(1, 3), {X, self() =/= undefined}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "{[1, 2, 3], true}"
    syntax = run("eval", erl_node.name, "--cookie", erl_node.cookie, "--erlang", "1 +")
    assert "cannot parse the expression" in one_sentence_error(syntax)


def test_name_sets_our_hidden_node_name(elixir_node: BeamNode) -> None:
    result = run("eval", elixir_node.name, "--cookie", elixir_node.cookie,
                 "--name", "es_cli_probe", "Node.list(:hidden)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"[:es_cli_probe@{elixir_node.host}]"


def test_eval_on_a_node_without_elixir_suggests_erlang(erl_node: BeamNode) -> None:
    result = run("eval", erl_node.name, "--cookie", erl_node.cookie, "1 + 1")
    assert "use --erlang" in one_sentence_error(result)


def test_eval_that_raises_prints_the_exception_elixir_style(elixir_node: BeamNode) -> None:
    result = run("eval", elixir_node.name, "--cookie", elixir_node.cookie,
                 "Map.fetch!(%{}, :missing)")
    assert result.returncode == 1
    assert "** (KeyError) key :missing not found in: %{}" in result.stderr
    assert "Traceback" not in result.stderr


def test_wrong_cookie_is_one_sentence_and_never_shows_a_cookie(erl_node: BeamNode) -> None:
    result = run("ps", erl_node.name, "--cookie", "wrong-cookie-123")
    line = one_sentence_error(result)
    assert "rejected our cookie" in line
    assert "wrong-cookie-123" not in result.stderr + result.stdout
    debug = run("ps", erl_node.name, "--cookie", "wrong-cookie-123", "--debug")
    assert debug.returncode == 1 and "Traceback" in debug.stderr
    assert "wrong-cookie-123" not in debug.stderr + debug.stdout
    assert erl_node.cookie not in debug.stderr + debug.stdout


def test_unknown_node_and_usage_errors(erl_node: BeamNode) -> None:
    missing = run("ps", f"nobody@{erl_node.host}", "--cookie", erl_node.cookie)
    assert erl_node.short_name in one_sentence_error(missing)
    usage = run("ps")
    assert usage.returncode == 2 and "Missing argument" in usage.stderr
    assert run("ps", erl_node.name, "--sort", "size").returncode == 2
    assert run("--help").returncode == 0
    assert run("no-such-command").returncode == 2


def test_demo_records_the_bank_app_and_explains_its_crashes(tmp_path: Path) -> None:
    path = tmp_path / "demo.duckdb"
    result = run("demo", "--duration", "12", "-o", str(path), "--json", timeout=180)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["path"] == str(path) and path.exists()
    assert summary["events"] > 1000 and summary["spans"] > 100 and summary["messages"] > 100
    assert "Bank.Account.handle_call/3" in {row["mfa"] for row in summary["busiest_functions"]}
    # The fault script: account 2 crashes at 3 s, account 4 at 11 s; a slow spell at 6 s.
    assert len(summary["crashes"]) >= 2
    assert any("ArithmeticError" in crash["reason"] for crash in summary["crashes"])
    chain = summary["crash_chains"][0]["causes"]
    assert chain[0]["relation"].startswith("after Bank.Account.handle_call/3 raised")
    assert any(step["relation"].startswith("triggered by message {:\"$gen_call\"")
               for step in chain)
    assert max(span["duration"] for span in summary["slowest_spans"]) > 0.25
    assert summary["meta"]["drops"]["drop_oldest"] == 0
    # A loaded machine may still lose a batch; what is lost is reported, and stays small.
    lost = sum(loss["events"] or 0 for loss in summary["losses"].values())
    assert lost <= summary["events"] // 100
    check_exports(path, summary, tmp_path)


def check_exports(path: Path, summary: dict[str, Any], tmp_path: Path) -> None:
    """The demo's recording, exported in each format, reads back whole in that format's
    reader: every event and span in Parquet, each span a slice in Perfetto, OTLP spans
    that parse as a collector request."""
    targets = {"perfetto": tmp_path / "trace.json", "otlp": tmp_path / "traces.jsonl",
               "parquet": tmp_path / "parquet"}
    for fmt, target in targets.items():
        done = run("export", str(path), "--format", fmt, "-o", str(target))
        assert done.returncode == 0, done.stderr
    events = pq.read_table(targets["parquet"] / "events.parquet")
    spans = pq.read_table(targets["parquet"] / "spans.parquet").to_pylist()
    assert events.num_rows == summary["events"] and len(spans) == summary["spans"]
    crashed = [span for span in spans if span["outcome"] == "exception"]
    assert any(span["mfa"] == "Bank.Account.handle_call/3" for span in crashed)

    doc = json.loads(targets["perfetto"].read_text())
    check_chrome_trace(doc)
    slices = [event for event in doc["traceEvents"] if event["ph"] == "X"]
    assert sorted(event["args"]["span_id"] for event in slices) == sorted(
        span["span_id"] for span in spans)
    assert sum(event["ph"] == "s" for event in doc["traceEvents"]) > 100

    lines = [json.loads(line) for line in targets["otlp"].read_text().splitlines()]
    for request in lines:
        check_otlp_request(request)
    exported = all_spans(lines)
    check_parents(exported)
    closed = {span["span_id"] for span in spans if span["outcome"] != "open"}
    assert set(exported) == closed
