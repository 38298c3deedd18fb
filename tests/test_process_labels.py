"""Processes named by what the node knows: registered names, RabbitMQ's ``process_name``,
Elixir Registry keys, initial calls; in ``ps`` and in a recording's ``--pid`` lookups."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import elixirscope
from cli_support import json_rows
from elixirscope.dist.node import Node, connect
from elixirscope.etf import Atom, Pid
from elixirscope.process_labels import MAX_COPIED_HEAP_WORDS, fetch_labels, label_text
from elixirscope.remote_eval import eval_erlang
from elixirscope.sample_nodes import BeamNode

pytestmark = pytest.mark.node

_QUEUE = ("erlang:spawn(fun() -> put(process_name, {rabbit_amqqueue_process, "
          "{resource, VHost, queue, Name}}), put(unrelated, lists:seq(1, 10)), "
          "receive stop -> ok end end)")


@pytest.fixture(scope="module")
def conn(erl_node: BeamNode) -> Iterator[Node]:
    with connect(erl_node.name, erl_node.cookie) as node:
        yield node


def spawn_queue(conn: Node, vhost: bytes, name: bytes) -> Pid:
    pid = conn.run(eval_erlang(conn.anode, _QUEUE, bindings={"VHost": vhost, "Name": name}))
    assert isinstance(pid, Pid)
    return pid


def test_rabbitmq_queue_processes_are_told_apart_by_their_process_name(conn: Node) -> None:
    q1 = spawn_queue(conn, b"/", b"q1")
    q2 = spawn_queue(conn, b"billing", b"q2")
    code_server = conn.rpc("erlang", "whereis", [Atom("code_server")])
    try:
        first, second, named = conn.run(fetch_labels(conn.anode, [q1, q2, code_server]))
        assert first is not None and second is not None and named is not None
        assert first.text == "rabbit_amqqueue_process:q1"
        assert second.text == "rabbit_amqqueue_process:billing/q2"
        assert named.text == ":code_server" and named.names == (":code_server",)
    finally:
        for pid in (q1, q2):
            conn.send(pid, Atom("stop"))


def test_a_gone_process_has_no_label(conn: Node) -> None:
    pid = spawn_queue(conn, b"/", b"gone")
    conn.send(pid, Atom("stop"))
    conn.monitor(pid).wait(timeout=5)
    assert conn.run(fetch_labels(conn.anode, [pid])) == [None]


def test_a_big_heap_is_not_copied_to_read_its_dictionary_where_the_node_cannot_pick_keys(
        conn: Node) -> None:
    picks_keys = ("try erlang:process_info(self(), {dictionary, k}), true "
                  "catch error:badarg -> false end")
    if conn.run(eval_erlang(conn.anode, picks_keys)) == Atom("true"):
        pytest.skip("the node reads single dictionary keys")
    pid = conn.run(eval_erlang(conn.anode, (
        "Self = self(), P = erlang:spawn(fun() -> put(process_name, big), "
        "Keep = lists:seq(1, Words), Self ! {ready, self()}, "
        "receive stop -> length(Keep) end end), receive {ready, P} -> P end"),
        bindings={"Words": MAX_COPIED_HEAP_WORDS}))
    try:
        [label] = conn.run(fetch_labels(conn.anode, [pid]))
        assert label is not None and label.label == ""
    finally:
        conn.send(pid, Atom("stop"))


def test_label_text_is_what_people_type() -> None:
    assert label_text(Atom("Elixir.Bank.Registry")) == "Bank.Registry"
    assert label_text((Atom("worker"), 3, b"eu")) == "worker:3:eu"
    assert label_text(b"\xff") == '<<255>>'


def test_ps_names_registry_processes_by_their_keys(
        bank_node: BeamNode, capsys: pytest.CaptureFixture[str]) -> None:
    rows = json_rows(capsys, "ps", bank_node.name, "--cookie", bank_node.cookie,
                     "--limit", "0")
    accounts = [row for row in rows if row["initial_call"] == "Bank.Account.init/1"]
    assert accounts and all(str(row["label"]).startswith("Bank.Registry:") for row in accounts)
    supervisor = next(row for row in rows if row["name"] == "Bank.Supervisor")
    assert supervisor["initial_call"] == ":supervisor.Elixir.Supervisor.Default/1"


def test_a_recording_finds_a_process_by_its_label(erl_node: BeamNode, conn: Node,
                                                  tmp_path: Path) -> None:
    queue = spawn_queue(conn, b"/", b"orders")
    other = spawn_queue(conn, b"/", b"audit")
    path = tmp_path / "labels.duckdb"
    try:
        with elixirscope.attach(conn) as scope:
            scope.trace_process(queue, include=["messages"])
            scope.trace_process(other, include=["messages"])
            with scope.record(path):
                conn.send(queue, Atom("publish"))
                conn.send(other, Atom("ack"))
                conn.rpc("erlang", "process_info", [queue, Atom("messages")])
    finally:
        for pid in (queue, other):
            conn.send(pid, Atom("stop"))
    with elixirscope.open_recording(path) as rec:
        received = rec.events(pid="rabbit_amqqueue_process:orders", kind="receive")
        assert [event.pid for event in received] == [f"#PID<0.{queue.id}.{queue.serial}>"]
        labelled = {process.pid: process.names for process in rec.processes()}
        assert labelled[f"#PID<0.{other.id}.{other.serial}>"] == (
            "rabbit_amqqueue_process:audit",)
