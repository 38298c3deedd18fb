"""State capture with the behaviour modules real systems run, from Debian's packages:
RabbitMQ's gen_server2 (including a process that becomes another callback module, as
a queue does) and ejabberd's p1_server and xmpp_stream_in. The node's own
``:sys.get_state`` is the oracle."""

from __future__ import annotations

import glob
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import elixirscope
from elixirscope.etf import Atom, Pid
from elixirscope.sample_nodes import BeamNode, start_bare
from tracing_support import BEAM_SOURCES

pytestmark = pytest.mark.node

GEN_SERVER2 = sorted(glob.glob("/usr/lib/rabbitmq/lib/rabbitmq_server-*/plugins/"
                               "rabbit_common-*/ebin/gen_server2.beam"))
P1_UTILS = sorted(glob.glob("/usr/lib/erlang/lib/p1_utils-*/ebin/p1_server.beam"))
P1_XMPP = sorted(glob.glob("/usr/lib/erlang/lib/p1_xmpp-*/ebin/xmpp_stream_in.beam"))
FIXTURES = ("es_gs2", "es_gs2_pre", "es_p1", "es_xmpp")


def _ebin(found: list[str], package: str) -> str:
    if not found:
        pytest.skip(f"{package} is not installed (./dev test installs it from Debian)")
    return str(Path(found[-1]).parent)


@pytest.fixture(scope="module")
def beam(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BeamNode]:
    paths = [_ebin(GEN_SERVER2, "rabbitmq-server"), _ebin(P1_UTILS, "erlang-p1-utils"),
             _ebin(P1_XMPP, "erlang-p1-xmpp")]
    out = tmp_path_factory.mktemp("real-behaviours")
    for name in FIXTURES:
        subprocess.run(["erlc", *(f"-pa{p}" for p in paths), "-o", str(out),
                        str(BEAM_SOURCES / f"{name}.erl")], check=True, capture_output=True)
    args = [arg for path in [*paths, str(out)] for arg in ("-pa", path)]
    with start_bare("erl", name_prefix="t_realbeh", extra_args=args) as node:
        yield node


@pytest.fixture
def scope(beam: BeamNode) -> Iterator[elixirscope.Scope]:
    with elixirscope.attach(beam.name, beam.cookie) as attached:
        yield attached


def start(scope: elixirscope.Scope, module: str, n: int) -> Pid:
    started = scope.node.rpc(module, "start", [n])
    assert started[0] == Atom("ok"), started
    pid: Pid = started[1]
    return pid


def callback_state(scope: elixirscope.Scope, pid: Pid) -> Any:
    """What the process holds as its callback state (gen_server2's sys:get_state gives
    its whole #gs2_state{}, whose third field it is)."""
    state = scope.node.rpc("sys", "get_state", [pid])
    if isinstance(state, tuple) and state and state[0] == Atom("gs2_state"):
        return state[3]
    return state


def recorded(path: Path, pid: Pid) -> list[Any]:
    with elixirscope.open_recording(path) as rec:
        return rec.state_history(elixirscope.inspect(pid))


def test_gen_server2_states_are_captured_unwrapped(scope: elixirscope.Scope,
                                                   tmp_path: Path) -> None:
    pid = start(scope, "es_gs2", 1)
    path = tmp_path / "gs2.duckdb"
    scope.trace("es_gs2", "detailed", state=True)
    with scope.record(path):
        scope.node.rpc("gen_server2", "call", [pid, (Atom("add"), 7)])
        scope.node.rpc("gen_server2", "cast", [pid, Atom("bump")])
        scope.node.rpc("gen_server2", "call", [pid, Atom("get")])
    history = recorded(path, pid)
    # The first state is the callback's own, read at the start, not the #gs2_state{}.
    assert history[0].callback == "initial"
    assert history[0].state == {Atom("count"): 1, Atom("items"): []}
    assert [step.callback for step in history[1:]] == ["handle_call", "handle_cast",
                                                       "handle_call"]
    assert history[-1].state == callback_state(scope, pid)


def test_a_gen_server2_that_becomes_another_module_is_followed(scope: elixirscope.Scope,
                                                               tmp_path: Path) -> None:
    pid = start(scope, "es_gs2_pre", 5)
    scope.node.rpc("gen_server2", "cast", [pid, Atom("become")])
    assert callback_state(scope, pid)[Atom("items")] == [Atom("became")]
    path = tmp_path / "become.duckdb"
    # Its initial call still names es_gs2_pre: the module it runs now is found when
    # that module's callbacks run.
    with scope.record(path):  # the recorder first: the initial state is in the file
        scope.trace_process(pid, include=("state", "calls"))
        # The state probe finds the module the process runs now; its callbacks are
        # traced from then on.
        deadline = time.monotonic() + 5
        while scope.node.rpc("erlang", "trace_info", [
                (Atom("es_gs2"), Atom("handle_cast"), 2), Atom("traced")])[1] is False:
            assert time.monotonic() < deadline, "es_gs2's callbacks were never traced"
            time.sleep(0.02)
        scope.node.rpc("gen_server2", "cast", [pid, Atom("bump")])
        scope.node.rpc("gen_server2", "call", [pid, (Atom("add"), 1)])
    history = recorded(path, pid)
    assert history[0].callback == "initial"
    assert [step.mfa for step in history[1:]] == [":es_gs2.handle_cast/2",
                                                  ":es_gs2.handle_call/3"]
    assert history[-1].state == callback_state(scope, pid)
    with elixirscope.open_recording(path) as rec:
        functions = {e.function for e in rec.events(pid=elixirscope.inspect(pid), kind="call")}
    # The probe's system message is not in the recording, nor is gen_server2's loop.
    assert "handle_system_msg" not in functions and "system_continue" not in functions


def test_p1_server_states_are_captured_and_its_probe_is_not_a_span(
        scope: elixirscope.Scope, tmp_path: Path) -> None:
    pid = start(scope, "es_p1", 0)
    path = tmp_path / "p1.duckdb"
    scope.trace_process(pid, include=("state", "calls", "messages"))
    with scope.record(path):
        scope.node.rpc("p1_server", "call", [pid, (Atom("log"), b"hello")])
        scope.node.rpc("p1_server", "cast", [pid, Atom("bump")])
        scope.node.rpc("p1_server", "call", [pid, Atom("get")])
    history = recorded(path, pid)
    assert history[0].callback == "initial"
    assert [step.callback for step in history[1:]] == ["handle_call", "handle_cast",
                                                       "handle_call"]
    assert history[-1].state == callback_state(scope, pid)
    with elixirscope.open_recording(path) as rec:
        spans = rec.spans(pid=elixirscope.inspect(pid))
    # No span of sys or of the system callbacks that loop back into p1_server (they
    # never return): every span of the process ended.
    modules = {s.module for s in spans}
    assert ":sys" not in modules and ":p1_server" not in modules
    assert {"handle_call", "handle_cast"} <= {s.function for s in spans}
    assert all(s.outcome == "return" for s in spans)


def test_xmpp_stream_in_states_are_captured(scope: elixirscope.Scope, tmp_path: Path) -> None:
    """An ejabberd-style stream process: xmpp_stream_in (on p1_server) holds the state
    map and hands it to the callback module; each transition is xmpp_stream_in's."""
    pid = start(scope, "es_xmpp", 0)
    path = tmp_path / "xmpp.duckdb"
    with scope.record(path):  # the recorder first: the initial state is in the file
        scope.trace_process(pid, include=("state", "calls"))
        for item in (b"a", b"b"):
            scope.node.rpc("xmpp_stream_in", "cast", [pid, (Atom("log"), item)])
        assert callback_state(scope, pid)[Atom("log")] == [b"b", b"a"]
    history = recorded(path, pid)
    assert history[0].callback == "initial"
    assert history[0].state[Atom("mod")] == Atom("es_xmpp")
    assert Atom("log") not in history[0].state
    assert [(step.mfa, step.state[Atom("log")]) for step in history[1:]] == [
        (":xmpp_stream_in.handle_cast/2", [b"a"]),
        (":xmpp_stream_in.handle_cast/2", [b"b", b"a"])]
    assert history[-1].state == callback_state(scope, pid)
