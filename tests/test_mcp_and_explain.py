"""The MCP server with the SDK's own client against a real bank node (an agent-style
session: record, diagnose, follow the evidence), over stdio from the command line, and
explanations by rules and through an OpenAI-compatible endpoint (a local stub)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from mcp import Client, StdioServerParameters

import elixirscope
from elixirscope.etf import Atom
from elixirscope.explain import LLMConfig, explain, redact_text
from elixirscope.mcp_server import ToolBox, build_server
from elixirscope.recordings import open_recording
from elixirscope.sample_nodes import BeamNode, start_sample

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def bank() -> Iterator[BeamNode]:
    with start_sample("bank", name_prefix="t_mcp", workload=True) as node:
        yield node


def text(result: Any) -> str:
    return "\n".join(part.text for part in result.content)


def arm_crash_when_traced(node: BeamNode) -> threading.Thread:
    """Crashes an account once Bank.Account's callbacks are traced (the recording is on)."""
    def arm() -> None:
        with elixirscope.connect(node.name, node.cookie) as conn:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and conn.rpc("erlang", "trace_info", [
                    (Atom("Elixir.Bank.Account"), Atom("handle_call"), 3),
                    Atom("traced")]) == (Atom("traced"), False):
                time.sleep(0.05)
            time.sleep(0.3)
            account = conn.rpc("Elixir.Bank", "account_ids", [])[0]
            conn.rpc("Elixir.Bank.Faults", "crash_next", [account, Atom("arithmetic")])
            # Its next call crashes it (the workload may take a while to call it).
            with contextlib.suppress(elixirscope.ElixirScopeError):
                conn.rpc("Elixir.Bank.Account", "balance", [account])
    thread = threading.Thread(target=arm, daemon=True)
    thread.start()
    return thread


def test_an_agent_session_finds_the_root_cause(bank: BeamNode, tmp_path: Path) -> None:
    tools = ToolBox(tmp_path, cookie=bank.cookie)
    answers: list[str] = []

    async def session() -> None:
        async with Client(build_server(tools)) as client:
            names = {tool.name for tool in (await client.list_tools()).tools}
            assert {"record", "diagnose", "spans", "events", "find", "traceback", "state_at",
                    "state_history", "diff", "field_history", "waits_at", "messages",
                    "analyze", "plan", "processes", "list_nodes", "eval", "explain"} <= names
            table = text(await client.call_tool("processes", {"node": bank.name, "limit": 5}))
            answers.append(table)
            assert len(table.splitlines()) == 5 and '"pid"' in table
            arm = arm_crash_when_traced(bank)
            recorded = text(await client.call_tool("record", {
                "node": bank.name, "duration": 4,
                "modules": ["Bank.Account", "Bank.Transfer"],
                "processes": ["Bank.AccountSupervisor"], "children": True}))
            arm.join()
            answers.append(recorded)
            recording = recorded.split()[1].rstrip(":")
            assert recording.startswith("rec-")
            diagnosis = text(await client.call_tool("diagnose", {"recording": recording}))
            answers.append(diagnosis)
            # The root cause is in the first finding: the function, what it raised, on
            # which message.
            first = diagnosis.splitlines()[0]
            assert "crash" in first.lower() and "Bank.Account.handle_call/3" in first
            assert "ArithmeticError" in first or "badarith" in first
            evidence = json.loads(next(line for line in diagnosis.splitlines()
                                       if "evidence:" in line).split("evidence:", 1)[1])
            event = (evidence["events"] or evidence["spans"])[0]
            traceback = text(await client.call_tool("traceback", {"recording": recording,
                                                                  "event": event}))
            answers.append(traceback)
            assert "Bank.Account" in traceback
            slowest = text(await client.call_tool("spans", {"recording": recording,
                                                             "slowest": 3}))
            assert len(slowest.splitlines()) == 3 and '"span_id"' in slowest
            paged = text(await client.call_tool("events", {"recording": recording,
                                                            "limit": 5000}))
            assert "more lines: call again with offset=" in paged.splitlines()[-1]
            explained = text(await client.call_tool("explain", {"recording": recording}))
            answers.append(explained)
            assert "Bank.Account.handle_call/3" in explained
            refused = text(await client.call_tool("eval", {"node": bank.name,
                                                           "expression": "1 + 1"}))
            assert refused.startswith("error: eval is off")
            too_long = text(await client.call_tool("record", {"node": bank.name,
                                                              "duration": 3600,
                                                              "modules": ["Bank.Account"]}))
            assert too_long.startswith("error: duration is seconds")
            unlimited = text(await client.call_tool("record", {
                "node": bank.name, "duration": 1, "modules": ["Bank.Account"],
                "max_events_per_second": 0}))
            assert "a trace without limits is refused" in unlimited
            unknown = text(await client.call_tool("diagnose", {"recording": "no-such"}))
            assert unknown.startswith("error: there is no recording 'no-such'")
            resources = await client.list_resources()
            assert any(str(r.uri) == "elixirscope://recordings" for r in resources.resources)

    asyncio.run(session())
    assert not any(bank.cookie in answer for answer in answers)


def test_the_server_over_stdio_from_the_command_line(tmp_path: Path, bank: BeamNode) -> None:
    async def session() -> str:
        params = StdioServerParameters(command=sys.executable,
                                       args=["-m", "elixirscope", "mcp", "--dir", str(tmp_path),
                                             "--cookie", bank.cookie])
        async with Client(params) as client:
            return text(await client.call_tool("analyze", {"node": bank.name,
                                                           "modules": ["Bank.Transfer",
                                                                       "Bank.Account"]}))

    answer = asyncio.run(session())
    assert "Bank.Transfer: GenServer" in answer
    assert "risk call_in_callback" in answer


class _StubModel(BaseHTTPRequestHandler):
    seen: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        _StubModel.seen.append({"path": self.path, "body": body,
                                "authorization": self.headers.get("authorization")})
        answer = json.dumps({"choices": [{"message": {"role": "assistant",
                                                      "content": "The stub explains."}}]})
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, *args: Any) -> None:
        pass


def test_explanations_by_rules_and_by_a_model(bank: BeamNode, tmp_path: Path) -> None:
    path = tmp_path / "crash.duckdb"
    with elixirscope.attach(bank.name, bank.cookie) as scope:
        scope.trace("Bank.Account", "detailed")
        scope.trace_process("Bank.AccountSupervisor", include_children=True)
        recorder = scope.record(path)
        arm_crash_when_traced(bank).join()
        time.sleep(1.5)
        recorder.stop()
    server = HTTPServer(("127.0.0.1", 0), _StubModel)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with open_recording(path) as rec:
            by_rules = explain(rec)
            assert by_rules.source == "rules"
            assert "Bank.Account.handle_call/3" in by_rules.text
            assert "The first crash is the cause" in by_rules.text
            one = explain(rec, "1")
            assert one.subject == "finding 1"
            llm = LLMConfig(f"http://127.0.0.1:{server.server_address[1]}/v1", "stub-model",
                            "sk-test")
            by_model = explain(rec, llm=llm)
    finally:
        server.shutdown()
    assert by_model.text == "The stub explains." and by_model.source == "stub-model"
    (request,) = _StubModel.seen
    assert request["path"] == "/v1/chat/completions"
    assert request["authorization"] == "Bearer sk-test"
    assert request["body"]["model"] == "stub-model"
    prompt = request["body"]["messages"][-1]["content"]
    assert "Bank.Account.handle_call/3" in prompt and prompt == by_model.prompt


def test_secrets_are_redacted_in_evidence() -> None:
    raw = ('%{"password" => "hunter2", api_key: "k-123", name: "ann"} '
           '[{"authorization", "Bearer abc"}]')
    cleaned = redact_text(raw)
    assert "hunter2" not in cleaned and "k-123" not in cleaned and "Bearer abc" not in cleaned
    assert 'name: "ann"' in cleaned


def test_the_server_over_http_wants_its_token(tmp_path: Path) -> None:
    import socket
    import subprocess

    import httpx
    from mcp.client.streamable_http import streamable_http_client

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "elixirscope", "mcp", "--http", "--port",
                               str(port), "--dir", str(tmp_path)],
                              stderr=subprocess.PIPE, text=True)
    try:
        assert server.stderr is not None
        token = ""
        while not token:
            line = server.stderr.readline()
            assert line, "the server stopped before printing its token"
            if "Bearer " in line:
                token = line.split("Bearer ", 1)[1].strip()
        url = f"http://127.0.0.1:{port}/mcp"
        deadline = time.monotonic() + 20
        while True:
            try:
                assert httpx.post(url, json={}).status_code == 401
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline
                time.sleep(0.2)

        async def session() -> str:
            headers = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(headers=headers) as http, \
                    Client(streamable_http_client(url, http_client=http)) as client:
                return text(await client.call_tool("list_recordings", {}))

        assert asyncio.run(session()) == "(nothing)"
    finally:
        server.terminate()
        server.wait(10)
