"""``ps`` under a header of the node's totals, and ``ps --watch``: refreshed, with the
change per second of mailbox, memory and reductions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from cli_support import run
from elixirscope.dist.node import connect
from elixirscope.etf import Atom
from elixirscope.remote_eval import eval_erlang
from elixirscope.sample_nodes import BeamNode

pytestmark = pytest.mark.node

# A process whose mailbox grows by 100 messages every 100 ms, and one that is idle.
_FLOODED = """
Sink = erlang:spawn(fun() -> receive stop -> ok end end),
Self = self(),
Feeder = erlang:spawn(fun F() ->
    [Sink ! {work, N} || N <- lists:seq(1, 100)],
    Self ! fed,
    receive stop -> exit(Sink, kill) after 100 -> F() end
end),
receive fed -> {Sink, Feeder} end
"""


def test_ps_prints_the_node_totals_over_the_table(
        erl_node: BeamNode, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "ps", erl_node.name, "--cookie", erl_node.cookie,
                         "--limit", "3")
    assert code == 0, err
    header = out.splitlines()[0]
    assert header.startswith(erl_node.name)
    for part in ("memory", "MB", "uptime", "schedulers", "run queue", "processes"):
        assert part in header


def test_watch_json_gives_one_line_per_refresh_with_changes_per_second(
        erl_node: BeamNode, capsys: pytest.CaptureFixture[str]) -> None:
    with connect(erl_node.name, erl_node.cookie) as conn:
        sink, feeder = conn.run(eval_erlang(conn.anode, _FLOODED))
        try:
            code, out, err = run(capsys, "ps", erl_node.name, "--cookie", erl_node.cookie,
                                 "--watch", "--interval", "0.5", "--count", "3",
                                 "--sort", "mailbox", "--limit", "5", "--json")
        finally:
            conn.send(feeder, Atom("stop"))
    assert code == 0, err
    frames = [json.loads(line) for line in out.splitlines()]
    assert len(frames) == 3
    assert frames[0]["seconds"] is None and frames[1]["seconds"] > 0
    for frame in frames:
        assert frame["node"] == erl_node.name
        assert frame["totals"]["processes"] > 10 and frame["totals"]["schedulers"] >= 1
        assert len(frame["processes"]) == 5
    sink_text = f"#PID<0.{sink.id}.{sink.serial}>"
    first, *later = [next(row for row in frame["processes"] if row["pid"] == sink_text)
                     for frame in frames]
    assert first["mailbox_per_s"] is None
    assert all(row["mailbox_per_s"] > 0 for row in later)
    assert later[-1]["mailbox"] > first["mailbox"]
    # Biggest mailbox first.
    assert frames[-1]["processes"][0]["pid"] == sink_text


def test_watch_refreshes_a_table_until_ctrl_c_which_exits_0(erl_node: BeamNode) -> None:
    env = {key: value for key, value in os.environ.items() if key != "ERLANG_COOKIE"}
    watcher = subprocess.Popen(
        [sys.executable, "-m", "elixirscope", "ps", erl_node.name, "--cookie",
         erl_node.cookie, "--watch", "--interval", "0.5", "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert watcher.stdout is not None
    lines = [watcher.stdout.readline() for _ in range(2)]
    watcher.send_signal(signal.SIGINT)
    _, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    assert "Traceback" not in err
    assert [json.loads(line)["node"] for line in lines] == [erl_node.name] * 2


def test_watch_as_a_table_shows_the_rates(erl_node: BeamNode,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "ps", erl_node.name, "--cookie", erl_node.cookie,
                         "--watch", "--interval", "0.5", "--count", "2", "--limit", "3")
    assert code == 0, err
    assert "run queue" in out and "reductions" in out and "/s" in out


def test_watch_interval_is_bounded(erl_node: BeamNode,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "ps", erl_node.name, "--cookie", erl_node.cookie,
                       "--watch", "--interval", "0.01")
    assert code == 2 and "0.5" in err
