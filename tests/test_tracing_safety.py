"""The traced node is never harmed: limits trip inside the VM, and nothing is left
behind when the session ends, crashes, is killed, or the network goes silent."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import elixirscope
from elixirscope.agent.loader import AgentLoadError
from elixirscope.etf import Atom
from elixirscope.sample_nodes import BeamNode, start_bare
from tracing_support import (
    ALL_MFAS,
    clean_state,
    erl,
    start_traced,
    trace_state,
    wait_clean,
)

pytestmark = pytest.mark.node

# Four processes calling es_traced:add/2 as fast as they can, until told to stop.
FLOOD = """
Loop = fun L(0) -> ok; L(N) -> es_traced:call_many(1000, 1), L(N - 1) end,
[spawn(fun() -> Loop(Rounds) end) || _ <- lists:seq(1, 4)]
"""


@pytest.fixture(scope="module")
def beam(traced_code: bytes) -> Iterator[BeamNode]:
    with start_traced(traced_code, "t_safe") as node:
        yield node


@pytest.fixture
def node(beam: BeamNode) -> Iterator[elixirscope.Node]:
    with elixirscope.connect(beam.name, beam.cookie) as conn:
        yield conn
        stop_workloads(conn)
        assert wait_clean(conn, ALL_MFAS) == clean_state(ALL_MFAS), "tracing left behind"


WORKERS: list[object] = []


def flood(node: elixirscope.Node, rounds: int = 100_000) -> None:
    WORKERS.extend(erl(node, FLOOD, Rounds=rounds))


def trickle(node: elixirscope.Node) -> None:
    WORKERS.append(erl(node, TRICKLE))


def stop_workloads(node: elixirscope.Node) -> None:
    for pid in WORKERS:
        node.rpc("erlang", "exit", [pid, Atom("kill")])
    WORKERS.clear()


def wait_stopped(scope: elixirscope.Scope, timeout: float = 10) -> elixirscope.TraceStopped:
    deadline = time.monotonic() + timeout
    with pytest.raises(elixirscope.TraceStopped) as stopped:
        while time.monotonic() < deadline:
            for _ in scope.events(timeout=0.5):
                pass
    return stopped.value


# Each limit with a workload that reaches it and the other limits out of the way.
LIMIT_CASES = [
    ("max_events", {"max_events": 1000, "max_queue_len": 10**7,
                    "max_relay_memory_mb": float("inf")}, "flood"),
    ("max_queue_len", {"max_queue_len": 50}, "flood"),
    ("max_duration_s", {"max_duration_s": 1}, "trickle"),
    ("max_node_memory_mb", {"max_node_memory_mb": 1}, "trickle"),
]
TRICKLE = "spawn(fun L() -> es_traced:call_many(10, 1), timer:sleep(50), L() end)"
# About 50k events a second: more than the rate limit, less than the relay can take.
STEADY = "spawn(fun L() -> es_traced:call_many(100, 1), timer:sleep(10), L() end)"


@pytest.mark.parametrize(("limit", "limits", "workload"), LIMIT_CASES,
                         ids=[case[0] for case in LIMIT_CASES])
def test_each_limit_trips_the_breaker_and_removes_everything(
        node: elixirscope.Node, limit: str, limits: dict[str, int], workload: str) -> None:
    with elixirscope.attach(node, **limits) as scope:
        scope.trace("es_traced", "full")
        started = time.monotonic()
        if workload == "flood":
            flood(node)
        else:
            trickle(node)
        stopped = wait_stopped(scope)
        assert stopped.reason == limit
        # The relay reports its counts; the watcher, tripping ahead of a flooded relay,
        # reports the value it saw against the limit.
        if "value" in stopped.counters:
            assert limit in ("max_queue_len", "max_node_memory_mb")
            assert stopped.counters["value"] >= stopped.counters["limit"] == limits[limit]
        else:
            assert stopped.counters["kept"] > 0 and "received" in stopped.counters
        assert time.monotonic() - started < 5
        # No process is traced any more when the stop is told; the patterns, which
        # wait for a code barrier, follow.
        assert node.rpc("erlang", "trace_info", [Atom("new"), Atom("flags")])[1] == []
        assert erl(node, "[P || P <- processes(), erlang:trace_info(P, flags) =/= "
                         "{flags, []}, erlang:trace_info(P, flags) =/= undefined]") == []
        deadline = time.monotonic() + 10
        while node.rpc("erlang", "trace_info", [(Atom("es_traced"), Atom("add"), 2),
                                                 Atom("traced")]) != (Atom("traced"), False):
            assert time.monotonic() < deadline, "the patterns were not removed"
            time.sleep(0.05)


def test_adaptive_sampling_lowers_the_kept_share_before_the_rate_limit(
        node: elixirscope.Node) -> None:
    with elixirscope.attach(node, max_events_per_second=3000) as scope:
        scope.trace("es_traced", "full")
        WORKERS.append(erl(node, STEADY))
        deadline = time.monotonic() + 8
        for _ in scope.events(timeout=1):
            if scope.ascope.stats.adaptive_rate < 1.0 or time.monotonic() > deadline:
                break
        stats = scope.ascope.stats
        assert stats.adaptive_rate < 1.0 and stats.sampled_out > 0
        assert scope.stopped is None  # sampling kept it under the breaker


def test_under_overload_hot_helpers_leave_the_trace_and_loops_stay(
        node: elixirscope.Node) -> None:
    """Sampling keeps the relay's rate, but the VM still pays for every call: while it
    keeps half or less, the hot leaf add/2 leaves the trace, though untraced code calls
    it directly (its calls look like entries); the loop call_many/2, which calls it
    too, stays, and list_traces says which left."""
    with elixirscope.attach(node, max_events_per_second=3000) as scope:
        scope.trace("es_traced", "detailed")
        WORKERS.append(erl(node, STEADY))
        WORKERS.append(erl(node, "spawn(fun L() -> [es_traced:add(1, N) || N <- "
                                 "lists:seq(1, 100)], timer:sleep(10), L() end)"))
        deadline = time.monotonic() + 15
        left: dict[str, int] = {}
        while not left and time.monotonic() < deadline:
            checked = time.monotonic() + 0.5
            for _ in scope.events(timeout=0.5):
                if time.monotonic() > checked:
                    break
            left = {str(item[0][1]): item[3] for info in scope.list_traces()
                    for item in info.options.get("narrowed", [])
                    if isinstance(item[3], int)}
        assert set(left) == {"add"}, left
        traced = {function: node.rpc("erlang", "trace_info", [
            (Atom("es_traced"), Atom(function), arity), Atom("traced")])[1]
            for function, arity in (("add", 2), ("call_many", 2))}
        assert traced["add"] is False and traced["call_many"] is not False
        assert scope.stopped is None


def test_under_overload_the_vm_samples_and_the_relay_keeps_what_it_sends(
        node: elixirscope.Node) -> None:
    """Past the rate, the traced functions sample in the VM: their patterns test a bit
    of the trace control word, which the watcher sets for the kept share of each
    100 ms. Calls made while it is clear send nothing, and are counted as sampled out
    (estimated); the bit is cleared when the session ends."""
    with elixirscope.attach(node, max_events_per_second=3000) as scope:
        scope.trace("es_traced", "detailed")
        WORKERS.append(erl(node, STEADY))
        deadline = time.monotonic() + 10
        guarded = False
        while not guarded and time.monotonic() < deadline:
            checked = time.monotonic() + 0.3
            for _ in scope.events(timeout=0.3):
                if time.monotonic() > checked:
                    break
            spec = node.rpc("erlang", "trace_info", [
                (Atom("es_traced"), Atom("call_many"), 2), Atom("match_spec")])[1]
            guarded = "get_tcw" in repr(spec)
        assert guarded, spec
        words = set(erl(node, "[begin timer:sleep(3), erlang:system_info(trace_control_word) "
                              "end || _ <- lists:seq(1, 400)]"))
        assert len(words) == 2 and 0 in words, words  # set and cleared in turn
        counters = {str(k): v for k, v in scope.status()[Atom("counters")].items()}
        assert counters["sampled_out"] > 0 and counters["adaptive_rate"] < 1.0
        assert scope.stopped is None
    # The node fixture then checks that the word, like every flag and pattern, is clear.


def test_rate_breaker_trips_when_sampling_reaches_its_floor(node: elixirscope.Node) -> None:
    """A steady load the relay keeps up with, ten times the rate even at the floor
    share: after a second at the floor (a backlog from before the VM sampled would
    have cleared by then), the rate breaker trips."""
    with elixirscope.attach(node, max_events_per_second=500, min_sample_rate=0.5,
                            max_queue_len=10**7, max_relay_memory_mb=float("inf")) as scope:
        scope.trace("es_traced", "full")
        WORKERS.append(erl(node, STEADY))
        assert wait_stopped(scope).reason == "max_events_per_second"


def test_a_busy_connection_makes_the_agent_drop_and_count_never_wait(
        beam: BeamNode, node: elixirscope.Node) -> None:
    # The scope has its own connection, which stops reading: the node's distribution
    # buffer fills, and the relay's nosuspend sends fail and are counted.
    with elixirscope.attach(beam.name, beam.cookie, max_queue_len=10**7,
                            max_events_per_second=float("inf")) as scope:
        scope.trace("es_traced", "full")
        scope.node.run(_pause(scope))
        try:
            started = time.monotonic()
            assert node.rpc("es_traced", "call_many", [100_000, 1], timeout=60) == Atom("ok")
            workload_seconds = time.monotonic() - started
        finally:
            scope.node.run(_resume(scope))
        delivered = sum(1 for _ in scope.events(timeout=1))
        counters = {str(k): v for k, v in scope.status()[Atom("counters")].items()}
        assert counters["dropped"] > 0, counters
        assert counters["kept"] == delivered + counters["dropped"]
        assert scope.ascope.lost_batches == 0
        assert workload_seconds < 30  # the traced code never waited on the consumer


async def _pause(scope: elixirscope.Scope) -> None:
    scope.ascope.node.pause_reading()


async def _resume(scope: elixirscope.Scope) -> None:
    scope.ascope.node.resume_reading()


def test_cpu_limit_without_os_mon_is_reported_not_enforced(node: elixirscope.Node) -> None:
    with elixirscope.attach(node, max_cpu_percent=1) as scope:
        assert any("will not be enforced" in line for line in scope.capabilities.degraded)
        scope.trace("es_traced", "basic")
        node.rpc("es_traced", "call_many", [100, 1])
        time.sleep(0.5)
        assert scope.stopped is None


def test_cpu_limit_with_os_mon(traced_code: bytes) -> None:
    with start_traced(traced_code, "t_osmon") as beam, \
            elixirscope.connect(beam.name, beam.cookie) as node:
        erl(node, "application:ensure_all_started(os_mon), timer:sleep(500)")
        with elixirscope.attach(node, max_cpu_percent=0) as scope:
            assert scope.capabilities.os_mon
            assert not any("cpu" in line for line in scope.capabilities.degraded)
            scope.trace("es_traced", "basic")
            assert wait_stopped(scope).reason == "max_cpu_percent"


def test_a_killed_relay_is_cleaned_up_by_the_watcher(node: elixirscope.Node) -> None:
    with elixirscope.attach(node) as scope:
        scope.trace("es_traced", "full")
        server = node.rpc("erlang", "spawn", [Atom("es_traced"), Atom("echo_server"), []])
        scope.trace_process(server)
        node.rpc("erlang", "exit", [scope.ascope.relay, Atom("kill")])
        stopped = wait_stopped(scope)
        assert "relay died (:killed)" in str(stopped)
        state = wait_clean(node, ALL_MFAS)
        assert state == clean_state(ALL_MFAS)
        node.send(server, Atom("stop"))


def test_the_relay_heap_limit_kills_only_the_relay(node: elixirscope.Node) -> None:
    # Results of a few MB each: the relay's heap passes 1 MB as it takes one in. The
    # watcher's bound on the relay's memory is out of the way (it would act first on a
    # backlog).
    with elixirscope.attach(node, max_relay_heap_mb=1, max_queue_len=10**7,
                            max_relay_memory_mb=float("inf"), max_term_bytes=10**8,
                            elide_arg_bytes=float("inf"),
                            max_events_per_second=float("inf")) as scope:
        scope.trace("es_traced", "full")
        WORKERS.append(erl(node, "spawn(fun L() -> es_traced:big(300000), L() end)"))
        stopped = wait_stopped(scope)
        assert "relay died (:killed)" in str(stopped)
    assert node.rpc("erlang", "is_alive", []) is True


def test_a_flood_trips_the_relay_memory_bound_before_anything_kills_it(
        node: elixirscope.Node) -> None:
    """The relay's memory, counted whole (its queue of trace messages included), stops
    the tracing at its bound: the relay lives on, what it captured before reaches
    Python, and the stop says what acted, how far, and which option raises it."""
    with elixirscope.attach(node, max_relay_memory_mb=20, max_queue_len=10**9,
                            max_events_per_second=float("inf")) as scope:
        relay = scope.ascope.relay
        scope.trace("es_traced", "full")
        flood(node)
        delivered = 0
        deadline = time.monotonic() + 20
        with pytest.raises(elixirscope.TraceStopped) as stopped:
            while time.monotonic() < deadline:
                for _ in scope.events(timeout=0.5):
                    delivered += 1
        stop_workloads(node)
        assert stopped.value.reason == "max_relay_memory_mb"
        text = str(stopped.value)
        assert "--max-relay-memory-mb" in text and "reached 20" in text
        assert node.rpc("erlang", "is_process_alive", [relay]) is True
        # What was still queued at the trip is discarded and counted, and the relay's
        # memory comes back under its bound.
        counters = {str(k): v for k, v in scope.status()[Atom("counters")].items()}
        assert counters["kept"] >= delivered and "discarded" in counters
        memory = node.rpc("erlang", "process_info", [relay, Atom("memory")])[1]
        assert memory < 20 * 1024 * 1024, memory
        assert node.rpc("erlang", "trace_info", [(Atom("es_traced"), Atom("add"), 2),
                                                  Atom("traced")]) == (Atom("traced"), False)
    assert wait_clean(node, ALL_MFAS) == clean_state(ALL_MFAS)


def test_a_start_over_its_deadline_is_undone_under_load(node: elixirscope.Node) -> None:
    """Starting a trace on a busy node either finishes in time or leaves nothing: a
    start given no time at all is undone, and nothing of it stays while the session
    goes on."""
    with elixirscope.attach(node, max_queue_len=10**7,
                            max_relay_memory_mb=float("inf")) as scope:
        # Busy, but not past what the relay can serve: the agent must answer.
        WORKERS.extend(erl(node, f"[{STEADY} || _ <- [1, 2, 3, 4]]"))
        scope.ascope.setup_timeout = 0.0001  # rounds to a deadline of 0 ms
        with pytest.raises(elixirscope.TraceError, match="undone and nothing of it stays"):
            scope.trace("es_traced", "full")
        state = trace_state(node, ALL_MFAS)
        assert state["new"] == [] and state["processes"] == []
        assert all(value is False for value in state["patterns"].values())
        scope.ascope.setup_timeout = 10.0
        scope.trace("es_traced", "basic")  # the session still works
        stop_workloads(node)
    assert wait_clean(node, ALL_MFAS) == clean_state(ALL_MFAS)


def test_an_agent_that_does_not_answer_is_removed_before_the_start_fails(
        node: elixirscope.Node) -> None:
    """The relay is stuck (suspended here): the start times out, and before it raises
    the session is ended on the node, every pattern and flag removed and the agent
    unloaded."""
    with elixirscope.attach(node, max_queue_len=10**7,
                            max_relay_memory_mb=float("inf")) as scope:
        scope.trace("es_traced", "basic")
        flood(node)
        # A suspension lasts as long as the process that asked for it.
        holder = erl(node, "spawn(fun() -> erlang:suspend_process(R), receive stop -> ok "
                           "end end)", R=scope.ascope.relay)
        scope.ascope.setup_timeout = 0.5
        with pytest.raises(elixirscope.TraceError, match="session was ended"):
            scope.trace_function("es_traced", "helper", 1)
        state = trace_state(node, ALL_MFAS)
        stop_workloads(node)
        node.send(holder, Atom("stop"))
    assert state == clean_state(ALL_MFAS)


def test_other_tracers_are_respected_unless_forced(node: elixirscope.Node) -> None:
    erl(node, "{ok, _} = dbg:tracer(), {ok, _} = dbg:p(all, c)")
    try:
        with elixirscope.attach(node) as scope:
            with pytest.raises(elixirscope.TraceError, match="dbg") as refused:
                scope.trace("es_traced")
            assert "--force" in str(refused.value) and "force=True" in str(refused.value)
            scope.trace("es_traced", force=True)
    finally:
        erl(node, "dbg:stop_clear()")


def test_a_node_without_the_compiler_gets_a_clear_error() -> None:
    with start_bare("erl", name_prefix="t_nocomp") as beam, \
            elixirscope.connect(beam.name, beam.cookie) as node:
        erl(node, "code:del_path(filename:join(code:lib_dir(compiler), \"ebin\")), "
                  "code:delete(compile), code:purge(compile)")
        with pytest.raises(AgentLoadError, match="no compiler application") as error:
            elixirscope.attach(node)
        assert "extra_applications" in str(error.value)


CHILD = textwrap.dedent("""
    import sys, time
    import elixirscope
    from elixirscope.etf import Atom
    scope = elixirscope.attach(sys.argv[1], sys.argv[2])
    scope.trace("es_traced", "full")
    server = scope.node.rpc("erlang", "whereis", [Atom("es_safe_server")])
    scope.trace_process(server, include_children=True)
    print("ready", flush=True)
    time.sleep(600)
""")


def attached_child(beam: BeamNode) -> subprocess.Popen[str]:
    child = subprocess.Popen([sys.executable, "-c", CHILD, beam.name, beam.cookie],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    line = child.stdout.readline()
    assert line.strip() == "ready", child.stderr.read() if child.stderr else ""
    return child


@pytest.fixture
def server(node: elixirscope.Node) -> Iterator[None]:
    erl(node, "register(es_safe_server, spawn(es_traced, echo_server, []))")
    yield
    node.send("es_safe_server", Atom("stop"))


@pytest.mark.usefixtures("server")
def test_nothing_is_left_when_the_python_process_is_killed(
        beam: BeamNode, node: elixirscope.Node) -> None:
    child = attached_child(beam)
    assert wait_clean(node, ALL_MFAS, timeout=0.5)["agent_loaded"]
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert wait_clean(node, ALL_MFAS) == clean_state(ALL_MFAS)


def test_nothing_is_left_when_the_network_goes_silent(traced_code: bytes) -> None:
    with start_traced(traced_code, "t_silent", ["-kernel", "net_ticktime", "4"]) as beam, \
            elixirscope.connect(beam.name, beam.cookie) as node:
        erl(node, "register(es_safe_server, spawn(es_traced, echo_server, []))")
        child = attached_child(beam)
        os.kill(child.pid, signal.SIGSTOP)  # no ticks, no FIN: the node must notice itself
        try:
            state = wait_clean(node, ALL_MFAS, timeout=20)  # net_ticktime is 4 s here
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait()
        assert state == clean_state(ALL_MFAS)


def test_sessions_have_their_own_agent_and_refuse_each_others_processes(
        node: elixirscope.Node) -> None:
    first = elixirscope.attach(node)
    second = elixirscope.attach(node)
    first.trace("es_traced", "basic")
    # On OTP 25 a process has one tracer: the second session must not take it over.
    with pytest.raises(elixirscope.TraceError, match="another ElixirScope session"):
        second.trace_function("es_traced", "add", 2)
    assert first.ascope.module != second.ascope.module
    first.close()
    time.sleep(0.5)
    assert node.rpc("code", "is_loaded", [first.ascope.module]) is False
    assert node.rpc("code", "is_loaded", [second.ascope.module]) is not False
    second.trace_function("es_traced", "add", 2)
    node.rpc("es_traced", "add", [1, 1])
    assert [e.value for e in second.events(timeout=1) if e.kind == "call"] == [[1, 1]]
    second.close()


def test_agent_source_ships_in_the_package() -> None:
    from elixirscope.agent.loader import agent_source, session_module

    module = session_module()
    assert session_module() != module
    source = agent_source(module)
    assert f"-module({module})." in source
    assert "?" not in source.replace("'?'", "")  # no macros: compiled without epp
    assert Path(elixirscope.__file__).parent.joinpath("agent", "elixirscope_agent.erl").exists()
