"""Process traces on a real node: a name followed across restarts, children already
alive when tracing starts, and what each process had in flight at that moment."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import elixirscope
from elixirscope.etf import Atom, Pid
from elixirscope.sample_nodes import BeamNode
from tracing_support import erl, start_traced

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def beam(traced_code: bytes) -> Iterator[BeamNode]:
    with start_traced(traced_code, "t_proc") as node:
        yield node


@pytest.fixture
def scope(beam: BeamNode) -> Iterator[elixirscope.Scope]:
    with elixirscope.attach(beam.name, beam.cookie) as attached:
        yield attached


def wait_for(check: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def worker(scope: elixirscope.Scope, name: str) -> Pid:
    pid: Pid = erl(scope.node, f"spawn(es_traced, registered_worker, [{name}])")
    wait_for(lambda: scope.node.rpc("erlang", "whereis", [Atom(name)]) == pid)
    return pid


def test_a_traced_name_follows_whoever_holds_it(scope: elixirscope.Scope,
                                                tmp_path: Path) -> None:
    first = worker(scope, "es_follow")
    scope.trace_process("es_follow", include=("messages", "lifecycle", "calls"))
    scope.trace("es_traced", "full", only=["helper"])  # not exported: full level
    path = tmp_path / "follow.duckdb"
    with scope.record(path):
        erl(scope.node, "es_follow ! hello_first")
        erl(scope.node, "exit(P, kill)", P=first)
        second = worker(scope, "es_follow")
        time.sleep(0.5)  # the relay looks for a new holder every 100 ms
        erl(scope.node, "es_follow ! hello_second")
        time.sleep(0.3)
    with elixirscope.open_recording(path) as rec:
        by_name = rec.events(pid="es_follow", kind="receive")
        assert [(e.pid, e.text) for e in by_name] == [
            (elixirscope.inspect(first), ":hello_first"),
            (elixirscope.inspect(second), ":hello_second")]
        holders = {p.pid: p for p in rec.processes()}
        assert "es_follow" in str(holders[elixirscope.inspect(second)].names)
        assert holders[elixirscope.inspect(first)].exit_reason is not None
        # Stats by name put the calls of both holders in one row.
        [helper] = rec.call_stats(function="helper", by="name")
        assert (helper.pid_name, helper.count, helper.processes) == (":es_follow", 2, 2)
        assert len(rec.call_stats(function="helper", by="process")) == 2
    erl(scope.node, "es_follow ! stop")


def test_children_alive_before_tracing_are_traced(scope: elixirscope.Scope,
                                                  tmp_path: Path) -> None:
    parent, kids = erl(scope.node, """
        Self = self(),
        Parent = spawn(fun() ->
                           Kids = [spawn(fun() -> receive {ping, From} -> From ! pong end end)
                                   || _ <- [1, 2]],
                           Self ! {kids, Kids},
                           receive stop -> ok end
                       end),
        receive {kids, K} -> {Parent, K} after 2000 -> {Parent, []} end""")
    assert len(kids) == 2
    scope.trace_process(parent, include=("messages", "lifecycle"), include_children=True)
    path = tmp_path / "kids.duckdb"
    with scope.record(path):
        for kid in kids:
            erl(scope.node, "K ! {ping, self()}, receive pong -> ok end", K=kid)
        time.sleep(0.3)
    with elixirscope.open_recording(path) as rec:
        for kid in kids:
            text = elixirscope.inspect(kid)
            assert [e.kind for e in rec.events(pid=text) if e.kind != "mailbox"] == [
                "receive", "send", "exit"]
            assert next(p for p in rec.processes() if p.pid == text).exit_reason is not None
    erl(scope.node, "P ! stop", P=parent)


def test_what_was_in_flight_when_tracing_started(scope: elixirscope.Scope,
                                                 tmp_path: Path) -> None:
    sleeper = erl(scope.node, "spawn(fun() -> timer:sleep(1500), receive stop -> ok end end)")
    for n in range(5):
        erl(scope.node, f"P ! {{queued, {n}}}", P=sleeper)
    path = tmp_path / "backlog.duckdb"
    with scope.record(path):
        scope.trace_process(sleeper, include=("messages",))
        time.sleep(0.2)
    with elixirscope.open_recording(path) as rec:
        mailbox = rec.events(pid=elixirscope.inspect(sleeper), kind="mailbox")
        assert len(mailbox) == 1
        value = mailbox[0].value
        assert value[Atom("message_queue_len")] == 5
        assert value[Atom("current_function")] == (Atom("timer"), Atom("sleep"), 1)


def test_rerun_refuses_a_local_function_before_running_anything(
        beam: BeamNode, scope: elixirscope.Scope, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    from cli_support import run

    path = tmp_path / "local.duckdb"
    scope.trace("es_traced", "full", only=["add", "helper"])
    with scope.record(path):
        scope.node.rpc("es_traced", "add", [4, 5])
    with elixirscope.open_recording(path) as rec:
        helper = next(s for s in rec.spans() if s.function == "helper")
        assert helper.call == ":es_traced.helper(4)"
        with pytest.raises(elixirscope.QueryError, match=r"not exported .* nothing was run"):
            rec.rerun(helper, scope.node)
        add = next(s for s in rec.spans() if s.function == "add")
        assert rec.rerun(add, scope.node).status == "equal"
    code, _, err = run(capsys, "rerun", str(path), str(helper.span_id), beam.name,
                       "--cookie", beam.cookie, "--yes-run-it")
    assert code == 1 and "not exported" in err and "Traceback" not in err


def test_find_finds_text_inside_erlang_strings(scope: elixirscope.Scope,
                                               tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from cli_support import json_rows

    path = tmp_path / "strings.duckdb"
    url = [ord(c) for c in "/report.yaws?user=187&slow=1"]
    scope.trace_function("string", "uppercase", 1, level="detailed")
    with scope.record(path):
        scope.node.rpc("string", "uppercase", [url])
        scope.node.rpc("string", "uppercase", [[ord(c) for c in "boom"]])
    with elixirscope.open_recording(path) as rec:
        assert [e.kind for e in rec.find("slow=1")] == ["call"]
        assert [e.kind for e in rec.find("SLOW=1")] == ["return"]
        assert [e.kind for e in rec.find(b"boom")] == ["call"]
    rows = json_rows(capsys, "find", str(path), '"boom"')
    assert [row["kind"] for row in rows] == ["call"]


def test_traceback_of_an_exit_leads_to_what_killed_the_process(scope: elixirscope.Scope,
                                                               tmp_path: Path) -> None:
    """A dies because B, linked to it, raised: the traceback of A's exit goes to B's
    exit, then to the exception in B and the message that started it, not to the last
    message A happened to receive."""
    b, a = erl(scope.node, """
        B = spawn(fun() -> receive go -> es_traced:fail(x) end end),
        A = spawn(fun() -> receive {link, P} -> link(P) end, receive never -> ok end end),
        {B, A}""")
    path = tmp_path / "exits.duckdb"
    scope.trace("es_traced", "detailed", only=["fail"])
    scope.trace_process(a, include=("lifecycle", "messages"))
    scope.trace_process(b, include=("lifecycle", "messages"))
    with scope.record(path):
        erl(scope.node, "A ! {link, B}, timer:sleep(100), B ! go, timer:sleep(200)", A=a, B=b)
    with elixirscope.open_recording(path) as rec:
        [a_exit] = rec.events(pid=elixirscope.inspect(a), kind="exit")
        found = rec.traceback(a_exit)
    assert [link.event.kind for link in found.links] == ["exit", "exit", "exception"]
    assert found.links[0].cause is not None
    assert found.links[0].cause.startswith(f"died because linked {elixirscope.inspect(b)} "
                                           "exited with")
    assert found.links[1].cause is not None
    assert found.links[1].cause.startswith("exited after :es_traced.fail/1 raised")
    assert found.links[2].message is not None and found.links[2].message.text == ":go"
