"""The runtime tracing API against a real node: every call, event kind and option."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import elixirscope
from elixirscope.etf import Atom, Pid
from elixirscope.sample_nodes import BeamNode, start_bare
from tracing_support import (
    ALL_MFAS,
    clean_state,
    collect,
    drain,
    erl,
    kinds,
    start_traced,
    values,
    wait_clean,
)

pytestmark = pytest.mark.node

ADD = ("es_traced", "add", 2)
HELPER = ("es_traced", "helper", 1)
FAIL = ("es_traced", "fail", 1)



@pytest.fixture(scope="module")
def beam(traced_code: bytes) -> Iterator[BeamNode]:
    with start_traced(traced_code, "t_trace") as node:
        yield node


@pytest.fixture
def node(beam: BeamNode) -> Iterator[elixirscope.Node]:
    with elixirscope.connect(beam.name, beam.cookie) as conn:
        yield conn
        assert wait_clean(conn, ALL_MFAS) == clean_state(ALL_MFAS), "tracing left behind"


@pytest.fixture
def scope(node: elixirscope.Node) -> Iterator[elixirscope.Scope]:
    with elixirscope.attach(node) as attached:
        yield attached


def test_attach_loads_a_versioned_agent_and_reports_capabilities(
        node: elixirscope.Node, scope: elixirscope.Scope) -> None:
    module = str(scope.ascope.module)
    assert module.startswith(f"elixirscope_agent_{elixirscope.__version__.replace('.', '_')}_")
    assert node.rpc("code", "is_loaded", [scope.ascope.module]) is not False
    caps = scope.capabilities
    assert caps.otp_release == "25" and caps.elixir_version is None
    assert caps.os_mon is False and caps.trace_sessions is False
    assert any("max_cpu_percent" in line for line in caps.degraded)


def test_basic_level_sends_calls_with_arguments_only(node: elixirscope.Node,
                                                     scope: elixirscope.Scope) -> None:
    scope.trace("es_traced", "basic")
    assert node.rpc("es_traced", "add", [1, 2]) == 3
    events = collect(scope, lambda evs: "call" in kinds(evs, ADD))
    assert kinds(events, ADD) == ["call"]
    call = next(e for e in events if e.kind == "call")
    assert call.value == [1, 2] and call.node == node.name and isinstance(call.pid, Pid)
    assert call.timestamp < call.wall_time_ns
    assert kinds(events, HELPER) == []  # local functions are not traced at this level


def test_detailed_level_adds_returns_and_exceptions(node: elixirscope.Node,
                                                    scope: elixirscope.Scope) -> None:
    scope.trace(":es_traced", "detailed")
    node.rpc("es_traced", "add", [2, 3])
    with pytest.raises(elixirscope.RemoteError):
        node.rpc("es_traced", "fail", [Atom("x")])
    events = collect(scope, lambda evs: "exception" in kinds(evs, FAIL))
    assert kinds(events, ADD) == ["call", "return"]
    assert values([e for e in events if e.mfa and e.mfa[1] == Atom("add")], "return") == [5]
    assert values(events, "exception") == [(Atom("error"), (Atom("bad"), Atom("x")))]


def test_full_level_adds_local_functions_and_the_caller(node: elixirscope.Node,
                                                        scope: elixirscope.Scope) -> None:
    scope.trace("es_traced", "full")
    node.rpc("es_traced", "add", [4, 5])
    events = collect(scope, lambda evs: "return" in kinds(evs, ADD))
    helper_call = next(e for e in events if e.kind == "call" and e.mfa and
                       e.mfa[1] == Atom("helper"))
    assert helper_call.value == [4]
    assert helper_call.caller == (Atom("es_traced"), Atom("add"), 2)
    assert [e.kind for e in events if e.mfa and e.mfa[1] == Atom("helper")] == [
        "call", "return"]


def test_only_and_exclude_pick_functions(node: elixirscope.Node,
                                         scope: elixirscope.Scope) -> None:
    scope.trace("es_traced", "full", only=["add", ("helper", 1), "countdown"],
                exclude=["countdown"])
    node.rpc("es_traced", "add", [1, 1])
    node.rpc("es_traced", "countdown", [3])
    events = drain(scope)
    traced = {str(e.mfa[1]) for e in events if e.kind == "call" and e.mfa}
    assert traced == {"add", "helper"}


def test_trace_function_captures_what_is_asked(node: elixirscope.Node,
                                               scope: elixirscope.Scope) -> None:
    scope.trace_function("es_traced", "add", 2, capture=("returns",))
    node.rpc("es_traced", "add", [1, 2])
    events = collect(scope, lambda evs: "return" in kinds(evs, ADD))
    call = next(e for e in events if e.kind == "call")
    assert call.value == []  # arguments were not asked for
    assert values(events, "return") == [3]


def test_trace_function_takes_a_raw_match_specification(node: elixirscope.Node,
                                                        scope: elixirscope.Scope) -> None:
    only_first_is_one = [([1, Atom("_")], [], [])]
    scope.trace_function("es_traced", "add", 2, match=only_first_is_one)
    for first in (1, 2, 1, 3):
        node.rpc("es_traced", "add", [first, 10])
    events = drain(scope)
    assert values(events, "call") == [[1, 10], [1, 10]]


def test_unknown_targets_are_clear_errors(scope: elixirscope.Scope) -> None:
    with pytest.raises(elixirscope.TraceError, match=r"module NoSuch\.Module is not loaded"):
        scope.trace("NoSuch.Module")
    with pytest.raises(elixirscope.TraceError, match=r":es_traced\.nope/_ does not exist"):
        scope.trace_function("es_traced", "nope")
    with pytest.raises(elixirscope.TraceError, match="no process"):
        scope.trace_process("no_such_registered_name")
    with pytest.raises(elixirscope.TraceError, match="no process"):
        scope.trace_process("#PID<0.65000.0>")
    assert scope.list_traces() == []


def test_process_messages_and_lifecycle(node: elixirscope.Node,
                                        scope: elixirscope.Scope) -> None:
    server = node.rpc("erlang", "spawn", [Atom("es_traced"), Atom("echo_server"), []])
    box = node.mailbox()
    scope.trace_process(server, include=("messages", "lifecycle"))
    node.send(server, (box.pid, b"hi"))
    assert box.receive(timeout=5) == (Atom("echo"), b"hi")
    node.send(server, Atom("stop"))
    events = collect(scope, lambda evs: "exit" in kinds(evs))
    assert values(events, "receive") == [(box.pid, b"hi"), Atom("stop")]
    send = next(e for e in events if e.kind == "send")
    assert send.value == (Atom("echo"), b"hi") and send.peer == box.pid
    assert values(events, "exit") == [Atom("normal")]
    assert all(e.pid == server for e in events)


def test_calls_of_one_process_stay_with_it_beside_a_module_trace(
        node: elixirscope.Node, scope: elixirscope.Scope) -> None:
    scope.trace("es_traced", "basic")  # puts the call flag on every process
    server = node.rpc("erlang", "spawn", [Atom("es_traced"), Atom("seq_server"), []])
    scope.trace_process(server, include=("calls",))
    box = node.mailbox()
    assert node.rpc("lists", "seq", [1, 2]) == [1, 2]  # another process's call
    node.send(server, (box.pid, 3))
    assert box.receive(timeout=5) == (Atom("seq"), [1, 2, 3])
    events = collect(scope, lambda evs: "return" in kinds(evs, ("lists", "seq", 2)))
    seq_events = [e for e in events if e.mfa == (Atom("lists"), Atom("seq"), 2)]
    assert [e.kind for e in seq_events] == ["call", "return"]
    assert all(e.pid == server for e in seq_events)
    node.send(server, Atom("stop"))


def test_process_by_name_with_register_and_send_to_dead(node: elixirscope.Node,
                                                        scope: elixirscope.Scope) -> None:
    worker = node.rpc("erlang", "spawn", [Atom("es_traced"), Atom("registered_worker"),
                                          [Atom("es_named_worker")]])
    erl(node, "timer:sleep(50)")
    scope.trace_process(":es_named_worker", include=("lifecycle", "messages"))
    node.send("es_named_worker", Atom("stop"))
    events = collect(scope, lambda evs: "exit" in kinds(evs))
    assert values(events, "unregister") == [Atom("es_named_worker")]
    assert all(e.pid == worker for e in events)

    dead = erl(node, "P = spawn(fun() -> ok end), timer:sleep(20), P")
    sender = erl(node, "spawn(fun() -> receive {go, D} -> D ! late end end)")
    scope.trace_process(sender, include=("messages",))
    node.send(sender, (Atom("go"), dead))
    events = collect(scope, lambda evs: "send_to_dead" in kinds(evs))
    to_dead = next(e for e in events if e.kind == "send_to_dead")
    assert to_dead.value == Atom("late") and to_dead.peer == dead


def test_links_and_unlinks(node: elixirscope.Node, scope: elixirscope.Scope) -> None:
    linker = erl(node, "spawn(fun() -> receive {go, P} -> link(P), unlink(P), "
                       "receive stop -> ok end end end)")
    other = node.rpc("erlang", "spawn", [Atom("es_traced"), Atom("echo_server"), []])
    scope.trace_process(linker, include=("lifecycle",))
    node.send(linker, (Atom("go"), other))
    events = collect(scope, lambda evs: "unlink" in kinds(evs))
    assert [(e.kind, e.peer) for e in events if e.kind in ("link", "unlink")] == [
        ("link", other), ("unlink", other)]
    node.send(linker, Atom("stop"))
    node.send(other, Atom("stop"))


def test_children_are_sampled_per_process(node: elixirscope.Node,
                                          scope: elixirscope.Scope) -> None:
    box = node.mailbox()
    spawner = erl(node, "spawn(fun() -> receive {go, P, N} -> es_traced:spawner(P, N) end end)")
    ref = scope.trace_process(spawner, include=("lifecycle", "messages"),
                              include_children=True, sample_rate=0.5)
    node.send(spawner, (Atom("go"), box.pid, 200))
    assert box.receive(timeout=10) == (Atom("spawner_done"), 200)
    events = collect(scope, lambda evs: spawner in [e.pid for e in evs if e.kind == "exit"])
    children = {e.pid for e in events if e.pid != spawner}
    assert 40 <= len(children) <= 160, len(children)  # about half of 200
    for child in children:  # a kept child is kept whole: spawned, send, exit
        assert {"spawned", "send", "exit"} <= {e.kind for e in events if e.pid == child}
    info = next(t for t in scope.list_traces() if t.ref == ref)
    assert info.sampled_out > 0
    # Mailbox records (what each process had queued when traced) count toward no trace.
    assert info.captured == len([e for e in events if e.kind != "mailbox"])


def test_duration_stops_a_process_trace_by_itself(node: elixirscope.Node,
                                                  scope: elixirscope.Scope) -> None:
    server = node.rpc("erlang", "spawn", [Atom("es_traced"), Atom("echo_server"), []])
    scope.trace_process(server, include=("messages",), duration=0.3)
    assert len(scope.list_traces()) == 1
    erl(node, "timer:sleep(600)")
    assert scope.list_traces() == []
    assert node.rpc("erlang", "trace_info", [server, Atom("flags")]) == (Atom("flags"), [])
    node.send(server, Atom("stop"))


def test_overlapping_traces_keep_shared_patterns_until_both_stop(
        node: elixirscope.Node, scope: elixirscope.Scope) -> None:
    first = scope.trace_function("es_traced", "add", 2)
    second = scope.trace("es_traced", "basic")
    traced = (Atom("es_traced"), Atom("add"), 2)
    scope.stop_trace(second)
    assert node.rpc("erlang", "trace_info", [traced, Atom("traced")])[1] is not False
    node.rpc("es_traced", "add", [7, 7])
    assert values(collect(scope, bool), "call") == [[7, 7]]
    stopped = scope.stop_trace(first)
    assert stopped.status == "stopped" and stopped.captured >= 1
    assert node.rpc("erlang", "trace_info", [traced, Atom("traced")])[1] is False
    with pytest.raises(elixirscope.TraceError, match="no trace"):
        scope.stop_trace(first)


def test_list_traces_counts_per_trace(node: elixirscope.Node, scope: elixirscope.Scope
                                      ) -> None:
    ref = scope.trace("es_traced", "full", sample_rate=0.5)
    node.rpc("es_traced", "call_many", [400, 1])
    events = drain(scope, quiet=1.0)
    [info] = scope.list_traces()
    assert info.ref == ref and info.kind == "module" and info.target == ":es_traced"
    assert info.status == "running" and info.options["level"] == Atom("full")
    # Mailbox records (what each process had queued when traced) count toward no trace.
    assert info.captured == len([e for e in events if e.kind != "mailbox"]) > 0
    assert info.sampled_out > 0
    # a call and its return are sampled together
    calls = [e for e in events if e.kind == "call" and e.mfa and e.mfa[1] == Atom("add")]
    returns = [e for e in events if e.kind == "return" and e.mfa and e.mfa[1] == Atom("add")]
    assert len(calls) == len(returns)


def test_emergency_stop_removes_everything(node: elixirscope.Node,
                                           scope: elixirscope.Scope) -> None:
    scope.trace("es_traced", "full")
    server = node.rpc("erlang", "spawn", [Atom("es_traced"), Atom("echo_server"), []])
    scope.trace_process(server)
    stopped = scope.emergency_stop()
    assert sorted(info.kind for info in stopped) == ["module", "process"]
    assert scope.list_traces() == []
    state = node.rpc("erlang", "trace_info", [(Atom("es_traced"), Atom("add"), 2),
                                              Atom("traced")])
    assert state == (Atom("traced"), False)
    assert node.rpc("erlang", "trace_info", [server, Atom("flags")]) == (Atom("flags"), [])
    node.send(server, Atom("stop"))


def test_big_payloads_are_truncated_keeping_their_shape(node: elixirscope.Node) -> None:
    with elixirscope.attach(node, max_term_bytes=200) as scope:
        scope.trace_function("es_traced", "big", 1)
        node.rpc("es_traced", "big", [5000])
        [ret] = [e for e in collect(scope, lambda evs: "return" in kinds(evs))
                 if e.kind == "return"]
        assert ret.truncated and ret.original_size > 20000
        assert isinstance(ret.value, list) and ret.value[:3] == [1, 2, 3]
        assert len(ret.payload) <= 200


def test_set_limits_at_run_time_and_breaker(node: elixirscope.Node,
                                            scope: elixirscope.Scope) -> None:
    scope.trace("es_traced", "full")
    limits = scope.set_limits(max_events=10)
    assert limits.max_events == 10 and limits.max_term_bytes == 4096
    node.rpc("es_traced", "call_many", [50, 1])
    with pytest.raises(elixirscope.TraceStopped) as stopped:
        for _ in scope.events(timeout=3):
            pass
    assert stopped.value.reason == "max_events"
    assert stopped.value.counters["kept"] >= 10
    assert scope.stopped is not None
    assert all(t.status.startswith("{:tripped") for t in scope.list_traces())
    with pytest.raises(elixirscope.TraceStopped):
        scope.trace("es_traced")
    assert node.rpc("erlang", "trace_info", [(Atom("es_traced"), Atom("add"), 2),
                                              Atom("traced")]) == (Atom("traced"), False)
    scope.reset_breaker()  # the event limit counts again from here
    assert scope.list_traces() == [] and scope.stopped is None
    scope.trace_function("es_traced", "add", 2)
    node.rpc("es_traced", "add", [5, 5])
    assert values(collect(scope, bool), "call") == [[5, 5]]


def test_validation_of_arguments(scope: elixirscope.Scope) -> None:
    with pytest.raises(ValueError, match="sample_rate"):
        scope.trace("es_traced", sample_rate=0)
    with pytest.raises(ValueError, match="level"):
        scope.trace("es_traced", "everything")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="capture"):
        scope.trace_function("es_traced", "add", capture=("stack",))
    with pytest.raises(ValueError, match="include"):
        scope.trace_process("es_whatever", include=("gc",))


def test_module_names_as_written_in_elixir(tmp_path: Path) -> None:
    with start_bare("elixir", name_prefix="t_trace_ex") as beam, \
            elixirscope.attach(beam.name, beam.cookie) as scope:
        assert scope.capabilities.elixir_version == "1.14.0"
        scope.trace("String", "detailed", only=[("upcase", 1)])
        scope.node.rpc("Elixir.String", "upcase", ["abc"])
        events = collect(scope, lambda evs: "return" in kinds(evs))
        assert values(events, "return") == [b"ABC"]
        assert events[0].mfa == (Atom("Elixir.String"), Atom("upcase"), 1)
