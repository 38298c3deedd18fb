"""The hidden-node connection against real nodes: handshake, rpc, messages, monitors."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time

import pytest

import elixirscope
from elixirscope.dist.async_node import AsyncNode
from elixirscope.errors import (
    AuthenticationFailed,
    ConnectError,
    ConnectionLost,
    HostUnreachable,
    NameRefused,
    NodeNotFound,
    RemoteError,
    RpcTimeout,
)
from elixirscope.etf import Atom, Pid
from elixirscope.sample_nodes import BeamNode, start_bare

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def node(erl_node: BeamNode) -> elixirscope.Node:
    with elixirscope.connect(erl_node.name, erl_node.cookie) as conn:
        yield conn


def test_connects_as_a_hidden_node(node: elixirscope.Node, erl_node: BeamNode) -> None:
    assert node.rpc("erlang", "node", []) == Atom(erl_node.name)
    assert Atom(node.own_name) in node.rpc("erlang", "nodes", [Atom("hidden")])
    assert Atom(node.own_name) not in node.rpc("erlang", "nodes", [])


def test_rpc_returns_decoded_terms(node: elixirscope.Node) -> None:
    term = (Atom("ok"), [1, 2.5, b"bin", {Atom("k"): -(2**70)}], "text")
    assert node.rpc("erlang", "hd", [[term]]) == (Atom("ok"), [1, 2.5, b"bin",
                                                            {Atom("k"): -(2**70)}], b"text")
    assert node.rpc("lists", "seq", [1, 5]) == [1, 2, 3, 4, 5]
    assert node.rpc(":erlang", "length", [[0] * 1000]) == 1000


def test_many_calls_in_flight_are_matched_by_reference(erl_node: BeamNode) -> None:
    async def run() -> list[object]:
        anode = await AsyncNode.connect(erl_node.name, erl_node.cookie)
        try:
            calls = [anode.rpc("lists", "seq", [1, n]) for n in range(1, 301)]
            return list(await asyncio.gather(*calls))
        finally:
            await anode.close()

    results = asyncio.run(run())
    assert results == [list(range(1, n + 1)) for n in range(1, 301)]


def test_remote_exceptions_keep_class_reason_and_stacktrace(node: elixirscope.Node) -> None:
    with pytest.raises(RemoteError) as error:
        node.rpc("erlang", "+", [1, Atom("a")])
    assert error.value.kind == "error" and error.value.reason == Atom("badarith")
    assert "** (ArithmeticError) bad argument in arithmetic expression" in str(error.value)
    assert str(error.value).startswith(":erlang.+/2 raised")
    assert ":erlang.+(1, :a)" in error.value.formatted

    with pytest.raises(RemoteError) as error:
        node.rpc("erlang", "exit", [(Atom("shutdown"), 1)])
    assert error.value.kind == "exit" and error.value.reason == (Atom("shutdown"), 1)
    assert "** (exit) shutdown: 1" in str(error.value)

    with pytest.raises(RemoteError) as error:
        node.rpc("erlang", "throw", [Atom("oops")])
    assert error.value.kind == "throw" and "** (throw) :oops" in str(error.value)

    with pytest.raises(RemoteError, match=r"function :no_such_module.f/1 is undefined"):
        node.rpc("no_such_module", "f", [1])


def test_timeout_leaves_the_connection_usable(node: elixirscope.Node) -> None:
    started = time.monotonic()
    with pytest.raises(RpcTimeout, match=r"did not answer within 0\.3 s"):
        node.rpc("timer", "sleep", [1500], timeout=0.3)
    assert time.monotonic() - started < 1.5
    assert node.rpc("erlang", "abs", [-3]) == 3
    time.sleep(1.5)  # the late answer arrives now and must be dropped quietly
    assert node.rpc("erlang", "abs", [-4]) == 4
    assert node.connected


def test_output_of_a_call_is_captured_in_order(node: elixirscope.Node) -> None:
    lines: list[str] = []
    result = node.rpc("io", "format", ["~p and ~s~n", [[1, 2], "text"]], output=lines.append)
    assert result == Atom("ok")
    assert "".join(lines) == "[1,2] and text\n"


def test_mailbox_receives_sends_by_pid_and_by_name(node: elixirscope.Node) -> None:
    box = node.mailbox()
    named = node.mailbox("es_test_box")
    node.rpc("erlang", "send", [box.pid, (Atom("hello"), 1)])
    node.rpc("erlang", "send", [(Atom("es_test_box"), Atom(node.own_name)), b"by name"])
    assert box.receive(timeout=5) == (Atom("hello"), 1)
    assert named.receive(timeout=5) == b"by name"
    with pytest.raises(TimeoutError):
        box.receive(timeout=0.2)
    box.close()
    named.close()


def sleeper(node: elixirscope.Node) -> Pid:
    pid = node.rpc("erlang", "spawn", [Atom("timer"), Atom("sleep"), [Atom("infinity")]])
    assert isinstance(pid, Pid)
    return pid


def test_send_to_remote_pid_and_registered_name(node: elixirscope.Node) -> None:
    pid = sleeper(node)
    node.send(pid, (Atom("note"), 1))
    node.rpc("erlang", "register", [Atom("es_sleeper"), pid])
    node.send("es_sleeper", b"two")
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _, messages = node.rpc("erlang", "process_info", [pid, Atom("messages")])
        if len(messages) == 2:
            break
    assert messages == [(Atom("note"), 1), b"two"]
    node.rpc("erlang", "exit", [pid, Atom("kill")])


def test_monitor_reports_the_exit_reason(node: elixirscope.Node) -> None:
    pid = sleeper(node)
    box = node.mailbox()
    monitor = node.monitor(pid, box)
    node.rpc("erlang", "exit", [pid, Atom("boom")])
    assert monitor.wait(timeout=5) == Atom("boom")
    down = box.receive(timeout=5)
    assert down[0] == Atom("DOWN") and down[1] == monitor.ref and down[3:] == (pid, Atom("boom"))
    assert node.monitor("no_such_registered_name").wait(timeout=5) == Atom("noproc")


def test_demonitor_stops_the_down_message(node: elixirscope.Node) -> None:
    pid = sleeper(node)
    box = node.mailbox()
    monitor = node.monitor(pid, box)
    node.demonitor(monitor)
    node.rpc("erlang", "exit", [pid, Atom("kill")])
    with pytest.raises(TimeoutError):
        box.receive(timeout=0.5)


def test_link_delivers_exit_and_unlink_stops_it(node: elixirscope.Node) -> None:
    box = node.mailbox()
    first, second = sleeper(node), sleeper(node)
    node.link(box, first)
    node.link(box, second)
    node.unlink(box, second)
    node.rpc("erlang", "exit", [first, Atom("crashed")])
    node.rpc("erlang", "exit", [second, Atom("crashed")])
    assert box.receive(timeout=5) == (Atom("EXIT"), first, Atom("crashed"))
    with pytest.raises(TimeoutError):
        box.receive(timeout=0.5)
    # A remote process that links to us and dies takes the link down with it.
    links = node.rpc("erlang", "process_info", [first, Atom("links")])
    assert links is None or links == Atom("undefined")


def test_closing_a_linked_mailbox_sends_exit_to_the_remote_process(node: elixirscope.Node
                                                                    ) -> None:
    box = node.mailbox()
    pid = sleeper(node)
    node.rpc("erlang", "process_flag", [Atom("trap_exit"), True])  # rex worker, harmless
    node.link(box, pid)
    assert box.pid in node.rpc("erlang", "element", [2, node.rpc(
        "erlang", "process_info", [pid, Atom("links")])])
    box.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        _, links = node.rpc("erlang", "process_info", [pid, Atom("links")])
        if not links:
            break
    assert links == []


def test_wrong_cookie_is_refused_without_showing_either_cookie(erl_node: BeamNode) -> None:
    with pytest.raises(AuthenticationFailed) as error:
        elixirscope.connect(erl_node.name, "not-the-cookie")
    assert "rejected our cookie" in str(error.value)
    assert "not-the-cookie" not in str(error.value)
    assert erl_node.cookie not in str(error.value)


def test_a_node_that_allows_only_others_refuses_our_name() -> None:
    with start_bare("erl", name_prefix="t_allow") as beam, \
            elixirscope.connect(beam.name, beam.cookie) as first:
        assert first.rpc("net_kernel", "allow", [[Atom("somebody@elsewhere")]]) == Atom("ok")
        with pytest.raises(NameRefused, match="does not allow connections from"):
            elixirscope.connect(beam.name, beam.cookie)
        assert first.connected


def test_unknown_node_names_the_known_ones(erl_node: BeamNode) -> None:
    with pytest.raises(NodeNotFound) as error:
        elixirscope.connect(f"nobody_here@{erl_node.host}", erl_node.cookie)
    assert erl_node.short_name in str(error.value)


def test_unreachable_host(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    monkeypatch.setenv("ERL_EPMD_PORT", str(free_port))
    with pytest.raises(HostUnreachable, match=r"cannot reach EPMD on 127\.0\.0\.1"):
        elixirscope.connect("app@127.0.0.1", "cookie", timeout=3)
    with pytest.raises(HostUnreachable, match=r"cannot reach EPMD on no-such-host\.invalid"):
        elixirscope.connect("app@no-such-host.invalid", "cookie", timeout=3)


def test_a_frozen_node_is_a_timeout_not_a_hang() -> None:
    with start_bare("erl", name_prefix="t_frozen") as beam:
        os.kill(beam.os_pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with pytest.raises(ConnectError, match="did not finish the handshake within 2 s"):
                elixirscope.connect(beam.name, beam.cookie, timeout=2)
            assert time.monotonic() - started < 6
        finally:
            os.kill(beam.os_pid, signal.SIGCONT)


def test_cookie_from_environment(erl_node: BeamNode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERLANG_COOKIE", erl_node.cookie)
    with elixirscope.connect(erl_node.name) as conn:
        assert conn.rpc("erlang", "is_alive", []) is True


def test_elixir_node_and_long_names() -> None:
    with start_bare("elixir", name_prefix="t_long", longnames=True) as beam:
        assert "." in beam.host
        with elixirscope.connect(beam.name, beam.cookie) as conn:
            assert "@" in conn.own_name and "." in conn.own_name.split("@")[1]
            assert conn.rpc("Elixir.String", "upcase", ["élan"]) == "ÉLAN".encode()


def test_ticks_keep_an_idle_connection_alive_and_loss_is_detected() -> None:
    with start_bare("erl", name_prefix="t_tick", extra_args=["-kernel", "net_ticktime", "4"]
                    ) as beam:
        conn = elixirscope.connect(beam.name, beam.cookie, tick_time=4)
        box = conn.mailbox()
        time.sleep(7)  # idle for longer than the node's tick time
        assert conn.connected and conn.rpc("erlang", "node", []) == Atom(beam.name)
        pid = sleeper(conn)
        monitor = conn.monitor(pid)
        beam.kill()
        assert monitor.wait(timeout=10) == Atom("noconnection")
        with pytest.raises(ConnectionLost):
            box.receive(timeout=10)
        with pytest.raises(ConnectionLost):
            conn.rpc("erlang", "node", [])
        assert not conn.connected
        conn.close()
