"""What a trace ships of each call, on a real node: local calls seen by default, a
behaviour callback's state never shipped with its call, large arguments and results
left out after the first, and state capture that follows the callback module a
process runs, never disturbs a busy process, and keeps its own probe out of the
recording."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import elixirscope
from elixirscope.etf import Atom, Pid
from elixirscope.sample_nodes import BeamNode, start_bare
from tracing_support import collect, compile_fixture, drain, erl, load_fixture

pytestmark = pytest.mark.node

STATE = Atom("$state")
ELIDED = Atom("$elided")
M = Atom("es_capture")


@pytest.fixture(scope="module")
def beam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BeamNode]:
    code = compile_fixture(tmp_path_factory.mktemp("capture"), "es_capture")
    with start_bare("erl", name_prefix="t_capture") as node:
        with elixirscope.connect(node.name, node.cookie) as conn:
            load_fixture(conn, code, "es_capture")
        yield node


@pytest.fixture
def scope(beam: BeamNode) -> Iterator[elixirscope.Scope]:
    with elixirscope.attach(beam.name, beam.cookie) as attached:
        yield attached


def server(scope: elixirscope.Scope, keys: int, how: str = "start") -> Pid:
    started = scope.node.rpc("es_capture", how, [keys])
    assert started[0] == Atom("ok"), started
    pid: Pid = started[1]
    return pid


def calls_of(events: list[elixirscope.TraceEvent], function: str) -> list[Any]:
    return [e for e in events if e.kind == "call" and e.mfa and e.mfa[1] == Atom(function)]


def test_a_module_trace_sees_local_calls_unless_told_global(scope: elixirscope.Scope) -> None:
    ref = scope.trace("es_capture", "basic", only=["local_loop"])
    scope.node.rpc("es_capture", "local_loop", [3])
    events = collect(scope, lambda evs: len(calls_of(evs, "local_loop")) >= 4)
    assert [e.value for e in calls_of(events, "local_loop")] == [[3], [2], [1], [0]]
    scope.stop_trace(ref)
    drain(scope)

    scope.trace("es_capture", "basic", only=["local_loop"], calls="global")
    scope.node.rpc("es_capture", "local_loop", [3])
    scope.flush()
    events = drain(scope, quiet=1.0)
    assert [e.value for e in calls_of(events, "local_loop")] == [[3]]


def test_level_applies_to_a_function_trace(scope: elixirscope.Scope) -> None:
    scope.trace_function("es_capture", "summarize", 2, level="detailed")
    scope.node.rpc("es_capture", "summarize", [{}, 7])
    events = collect(scope, lambda evs: any(e.kind == "return" for e in evs))
    assert [(e.kind, e.value) for e in events] == [("call", [{}, 7]), ("return", (7, 0))]


def test_a_callback_ships_its_request_and_large_values_stop_being_shipped(
        scope: elixirscope.Scope) -> None:
    pid = server(scope, 20_000)
    scope.trace("es_capture", "detailed")
    scope.node.rpc("es_capture", "set", [pid, 1])
    # Once the relay has seen the first call whole, the patterns are narrowed; calls
    # made before that still arrive whole.
    events = collect(scope, lambda evs: sum(e.kind == "return" for e in evs) >= 2)
    for key in (2, 3):
        scope.node.rpc("es_capture", "set", [pid, key])
    events += collect(scope, lambda evs: sum(e.kind == "return" for e in evs) >= 4)
    handle_calls = calls_of(events, "handle_call")
    # The state argument never travels with the call, whatever its size.
    assert [c.value[0] for c in handle_calls] == [(Atom("set"), k) for k in (1, 2, 3)]
    assert all(c.value[2] == STATE and not c.truncated for c in handle_calls)
    # The helper handed the whole state ships it once (cut to size), then no more.
    summarize = calls_of(events, "summarize")
    assert summarize[0].truncated
    assert [c.value for c in summarize[1:]] == [[ELIDED, 2], [ELIDED, 3]]
    # handle_call's result holds the state: after the first, its calls end by time.
    returns = [e for e in events if e.kind == "return" and e.mfa[1] == Atom("handle_call")]
    assert len(returns) == 3
    assert not returns[0].ended_by_time and returns[0].truncated
    assert all(r.ended_by_time for r in returns[1:])
    narrowed = {tuple(item[0]): (item[1], item[2])
                for info in scope.list_traces() for item in info.options.get("narrowed", [])}
    assert narrowed[(M, Atom("summarize"), 2)] == ([1], True)
    assert narrowed[(M, Atom("handle_call"), 3)] == ([], False)


def test_state_capture_follows_the_callback_module_the_process_runs(
        scope: elixirscope.Scope, tmp_path: Path) -> None:
    """A server entered from a plain process (as a gen_server2 that became another
    module looks): its initial call names no callback module."""
    pid = server(scope, 3, "start_late")
    scope.trace_process(pid, include=("state",))
    path = tmp_path / "late.duckdb"
    with scope.record(path):
        scope.node.rpc("es_capture", "set", [pid, 9])
        scope.node.rpc("es_capture", "bump", [pid])
        scope.node.rpc("es_capture", "set", [pid, 10])
        scope.node.rpc("sys", "get_state", [pid])  # waits until the cast is handled
    truth = scope.node.rpc("sys", "get_state", [pid])
    with elixirscope.open_recording(path) as rec:
        history = rec.state_history(elixirscope.inspect(pid))
        assert [step.callback for step in history][-3:] == [
            "handle_call", "handle_cast", "handle_call"]
        assert history[-1].state == truth
        # A state record prints as what it says, never as the codec's {N, {:delta, ...}}.
        texts = [e.text for e in rec.events(pid=elixirscope.inspect(pid), kind="state")]
        assert "state #4 changed: ~ [:bumped]: ? -> 1" in texts, texts
        assert "state #3 changed: ~ [9]: ? -> {:entry, :set}" in texts, texts
        # Only the state was asked for: the calls recorded are the state callbacks
        # (they are what caused each transition), none of what else the process ran.
        called = {e.function for e in rec.events(pid=elixirscope.inspect(pid), kind="call")}
        assert called == {"handle_call", "handle_cast"}


def test_a_busy_process_is_not_probed_and_the_probe_is_not_recorded(
        scope: elixirscope.Scope, tmp_path: Path) -> None:
    idle = server(scope, 3)
    busy = server(scope, 3)
    scope.node.rpc("es_capture", "busy", [busy, 1500])
    path = tmp_path / "probe.duckdb"
    with scope.record(path):
        for pid in (idle, busy):
            scope.trace_process(pid, include=("state", "messages", "calls"))
        queued = erl(scope.node, "element(2, process_info(P, messages))", P=busy)
        scope.node.rpc("es_capture", "set", [idle, 4])
    # Nothing of ours waits in the busy process's mailbox.
    assert queued == []
    with elixirscope.open_recording(path) as rec:
        first = {pid: rec.state_history(elixirscope.inspect(pid))[0] for pid in (idle, busy)}
        assert first[idle].callback == "initial"
        assert first[busy].kind == "unavailable" and not first[busy].known
        assert "busy" in rec.events(pid=elixirscope.inspect(busy), kind="state")[0].text
        idle_events = rec.events(pid=elixirscope.inspect(idle))
        assert idle_events, "the idle server's call should be recorded"
        texts = " ".join(f"{e.mfa} {e.text}" for e in idle_events)
        assert "sys" not in {str(e.mfa[0]) for e in idle_events if e.mfa}
        assert ":system" not in texts and "get_state" not in texts


def test_a_state_over_its_budget_is_shipped_no_more(scope: elixirscope.Scope) -> None:
    pid = server(scope, 5_000)
    scope.set_limits(max_state_bytes=20_000)
    try:
        scope.trace("es_capture", "basic", state=True, only=["summarize"])
        # The probe reads the idle server's state at the start: over the budget.
        first = collect(scope, lambda evs: any(e.kind == "state" and e.pid == pid
                                               for e in evs))
        for key in (1, 2, 3):
            scope.node.rpc("es_capture", "set", [pid, key])
        events = collect(scope, lambda evs: sum(e.kind == "return" for e in evs) >= 3)
    finally:
        scope.set_limits(max_state_bytes=262_144)
    states = [e.value for e in first + events if e.kind == "state" and e.pid == pid]
    assert len(states) == 1 and states[0][1][0] == Atom("too_large")
    # From then on the callbacks' results, which hold the state, are not shipped.
    returns = [e for e in events if e.kind == "return" and e.mfa[1] == Atom("handle_call")]
    assert len(returns) == 3 and all(r.ended_by_time for r in returns)


def test_calls_to_other_processes_are_recorded_as_waits(
        scope: elixirscope.Scope, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli_support import json_rows, run

    asker, slow, fast = (server(scope, 3) for _ in range(3))
    path = tmp_path / "waits.duckdb"
    scope.trace("es_capture", "detailed", only=["handle_call", "handle_cast"])
    with scope.record(path):
        scope.node.rpc("es_capture", "ask", [asker, fast, (Atom("set"), 1), 1000])
        scope.node.rpc("es_capture", "busy", [slow, 600])
        scope.node.rpc("es_capture", "ask", [asker, slow, (Atom("set"), 2), 100])
        # The client's own gen:call is outside traced code: not a wait of the recording.
        scope.node.rpc("es_capture", "set", [fast, 3])
    with elixirscope.open_recording(path) as rec:
        found = rec.waits()
    assert [(w.pid, w.callee, w.request, w.outcome) for w in found] == [
        (elixirscope.inspect(asker), elixirscope.inspect(fast), "{:set, 1}", "answered"),
        (elixirscope.inspect(asker), elixirscope.inspect(slow), "{:set, 2}", "timed out")]
    assert found[0].detail == "{:ok, {1, 3}}"
    assert all(w.caller is not None and w.caller.function == "handle_call" for w in found)
    # Messages were not traced here: the traceback says that, and how to record them.
    with elixirscope.open_recording(path) as rec:
        origin = rec.traceback(found[0].caller.span_id if found[0].caller else 0).origin
    assert "its messages were not recorded" in origin and "--include messages" in origin
    # Stepping by message says the same, instead of "no step further".
    assert found[0].caller is not None
    code, out, _ = run(capsys, "step", str(path), str(found[0].caller.span_id), "--by",
                       "message")
    assert code == 0 and "were not recorded" in out and "--include messages" in out
    assert found[1].duration is not None and found[1].duration >= 0.1
    rows = json_rows(capsys, "waits", str(path), "--pid", elixirscope.inspect(asker))
    assert [(r["callee"], r["outcome"], r["in"]) for r in rows] == [
        (elixirscope.inspect(fast), "answered", ":es_capture.handle_call/3"),
        (elixirscope.inspect(slow), "timed out", ":es_capture.handle_call/3")]
    code, out, _ = run(capsys, "waits", str(path))
    assert code == 0 and "timed out" in out and "{:set, 2}" in out


def test_callbacks_of_a_backlog_are_not_given_later_messages(scope: elixirscope.Scope,
                                                             tmp_path: Path) -> None:
    """Three casts wait behind a slow one when tracing starts; a fourth comes after.
    The first three handle_casts served messages queued before the recording: no
    trigger. The fourth served the cast received while traced."""
    pid = server(scope, 3)
    scope.node.rpc("es_capture", "busy", [pid, 800])
    for _ in range(3):
        scope.node.rpc("es_capture", "bump", [pid])
    path = tmp_path / "backlog.duckdb"
    with scope.record(path):
        scope.trace_process(pid, include=("messages", "calls"))
        scope.node.rpc("es_capture", "bump", [pid])
        scope.node.rpc("sys", "get_state", [pid])  # after every cast
    with elixirscope.open_recording(path) as rec:
        text = elixirscope.inspect(pid)
        mailbox = rec.events(pid=text, kind="mailbox")[0].value
        assert mailbox[Atom("backlog")][Atom("cast")] == 3
        casts = rec.spans(pid=text, function="handle_cast")
        assert len(casts) == 4
        triggers = [span.trigger_message_id for span in casts]
        assert triggers[:3] == [None, None, None] and triggers[3] is not None
        received = rec.events(pid=text, kind="receive")
        assert triggers[3] in [e.message_id for e in received if "$gen_cast" in e.text]
        # The traceback says so, rather than that nothing was received before it.
        origin = rec.traceback(casts[0].span_id).origin
        assert "serving a message queued before the recording" in origin, origin


def test_a_call_still_running_at_the_end_comes_first_among_the_slowest(
        scope: elixirscope.Scope, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli_support import json_rows, run

    pid = server(scope, 3)
    path = tmp_path / "hang.duckdb"
    scope.trace("es_capture", "detailed", only=["handle_call", "handle_cast"])
    with scope.record(path):
        scope.node.rpc("es_capture", "set", [pid, 1])
        scope.node.rpc("es_capture", "busy", [pid, 3000])  # still sleeping at the end
        time.sleep(0.6)
    with elixirscope.open_recording(path) as rec:
        slowest = rec.spans(slowest=5)
        hanging = slowest[0]
        assert (hanging.function, hanging.outcome, hanging.duration) == ("handle_cast", "open",
                                                                          None)
        assert hanging.running_for is not None and hanging.running_for >= 0.4
        assert [s.span_id for s in rec.spans(min_duration=0.3)] == [hanging.span_id]
    rows = json_rows(capsys, "spans", str(path), "--slowest", "1")
    assert (rows[0]["duration"], rows[0]["open"]) == (None, True)
    code, out, _ = run(capsys, "spans", str(path), "--slowest", "3")
    assert code == 0 and "still running" in out
    # stats shows the hanging call as running, not as "0 calls".
    code, out, _ = run(capsys, "stats", str(path), "--function", "handle_cast")
    assert code == 0 and "1 running" in out


def test_traceback_of_a_failed_call_leads_into_the_callee_that_died(
        scope: elixirscope.Scope, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A calls server B (a monitor, no link); B's handle_call raises, so A's call exits.
    The traceback of A's exit goes to B's exit, to where B raised (the innermost
    traced call), and to the request that started it; the exception is listed with
    the calls it was raised in."""
    from cli_support import json_rows

    b = server(scope, 3)
    a = erl(scope.node, "spawn(fun() -> receive go -> gen_server:call(B, nokey) end end)",
            B=b)  # no clause of handle_call takes nokey
    path = tmp_path / "callee.duckdb"
    scope.trace("es_capture", "detailed", only=["handle_call", "summarize"])
    scope.trace_process(a, include=("lifecycle", "messages"))
    scope.trace_process(b, include=("lifecycle", "messages"))
    with scope.record(path):
        erl(scope.node, "A ! go, timer:sleep(300)", A=a)
    with elixirscope.open_recording(path) as rec:
        [a_exit] = rec.events(pid=elixirscope.inspect(a), kind="exit")
        found = rec.traceback(a_exit)
    a_text, b_text = elixirscope.inspect(a), elixirscope.inspect(b)
    # A's exit, the exception its call raised in A, B's exit, B's exception, A's send.
    assert [(link.event.kind, link.event.pid) for link in found.links] == [
        ("exit", a_text), ("exception", a_text), ("exit", b_text), ("exception", b_text),
        ("send", a_text)]
    assert found.links[1].cause is not None and found.links[1].cause.startswith(
        f"its call to {b_text} failed because that process exited with")
    raised = found.links[3]
    assert raised.stack and raised.stack[-1].function == "handle_call"
    assert raised.message is not None and ":nokey" in raised.message.text
    rows = json_rows(capsys, "query", str(path), "--kind", "exception",
                     "--pid", elixirscope.inspect(b))
    assert rows and all(row["stack"] for row in rows)
    assert rows[0]["stack"][-1]["mfa"] == ":es_capture.handle_call/3"


RECORDS_MODULE = """
-module(es_records).
-export([total/1, new/1]).
-record(order, {id :: integer(), items = [] :: list(), note}).
new(Id) -> #order{id = Id, items = [a, b]}.
total(#order{items = Items}) -> length(Items).
"""


def test_records_print_with_their_field_names(scope: elixirscope.Scope, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """A module's record definitions come from its debug info on the node: a recorded
    {order, 1, [a, b], undefined} prints as #order{id: 1, ...}."""
    from cli_support import run

    source = tmp_path / "es_records.erl"
    source.write_text(RECORDS_MODULE)
    subprocess.run(["erlc", "+debug_info", "-o", str(tmp_path), str(source)], check=True)
    loaded = erl(scope.node, "code:add_patha(binary_to_list(Dir)), code:load_file(es_records)",
                 Dir=str(tmp_path).encode())
    assert loaded == (Atom("module"), Atom("es_records")), loaded
    path = tmp_path / "records.duckdb"
    scope.trace("es_records", "detailed")
    with scope.record(path):
        erl(scope.node, "es_records:total(es_records:new(1))")
    with elixirscope.open_recording(path) as rec:
        calls = {span.function: span for span in rec.spans()}
    assert calls["new"].result == "#order{id: 1, items: [:a, :b], note: :undefined}"
    assert calls["total"].call == (
        ":es_records.total(#order{id: 1, items: [:a, :b], note: :undefined})")
    code, out, _ = run(capsys, "spans", str(path))
    assert code == 0 and "#order{id: 1, items: [:a, :b]" in out


HANDLER_MODULE = """
-module({name}).
-behaviour(gen_event).
-export([init/1, handle_event/2, handle_call/2, handle_info/2, terminate/2]).
init(N) -> {{ok, N}}.
handle_event({{add, X}}, N) -> {{ok, N + X}};
handle_event(_, N) -> {{ok, N}}.
handle_call(get, N) -> {{ok, N, N}}.
handle_info(_, N) -> {{ok, N}}.
terminate(_, _) -> ok.
"""


def test_a_gen_event_manager_has_one_state_chain_of_its_handlers(
        scope: elixirscope.Scope, tmp_path: Path) -> None:
    """Two handlers of one manager: the manager's state is a map of handler states, one
    numbering, each event's change in its handler's entry; removing a handler takes
    its entry out. The node's own view of the handlers is the oracle."""
    for name in ("es_ev_a", "es_ev_b"):
        source = tmp_path / f"{name}.erl"
        source.write_text(HANDLER_MODULE.format(name=name))
        subprocess.run(["erlc", "-o", str(tmp_path), str(source)], check=True)
    erl(scope.node, "code:add_patha(binary_to_list(Dir)), [code:load_file(M) || M <- "
                    "[es_ev_a, es_ev_b]]", Dir=str(tmp_path).encode())
    manager = erl(scope.node, "{ok, P} = gen_event:start(), gen_event:add_handler(P, es_ev_a, 1),"
                              " gen_event:add_handler(P, es_ev_b, 100), P")
    path = tmp_path / "events.duckdb"
    a, b = Atom("es_ev_a"), Atom("es_ev_b")
    with scope.record(path):
        scope.trace_process(manager, include=("state", "calls"))
        time.sleep(0.3)  # the state probe reads both handlers while the manager is idle
        erl(scope.node, "gen_event:sync_notify(P, {add, 5})", P=manager)
        erl(scope.node, "gen_event:delete_handler(P, es_ev_b, stop)", P=manager)
        erl(scope.node, "gen_event:sync_notify(P, {add, 1})", P=manager)
    with elixirscope.open_recording(path) as rec:
        texts = [e.text for e in rec.events(pid=elixirscope.inspect(manager), kind="state")]
        history = rec.state_history(elixirscope.inspect(manager))
    states = [(step.callback, step.state) for step in history]
    assert states[0] == ("initial", {a: 1, b: 100})
    assert {a: 6, b: 105} in [state for _, state in states]
    assert ("terminate", {a: 6}) in states  # es_ev_b's entry left with it
    assert states[-1] == ("handle_event", {a: 7})
    # One numbering for the manager, whatever handler ran.
    assert [int(text.split()[1].strip("#,:")) for text in texts] == list(
        range(1, len(texts) + 1))
    assert "state #4 changed: - [:es_ev_b]" in texts, texts
    assert erl(scope.node, "gen_event:call(P, es_ev_a, get)", P=manager) == 7
