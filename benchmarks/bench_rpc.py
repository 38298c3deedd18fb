"""Remote call round trip: ElixirScope's ``Node.rpc`` against an Erlang node doing
``rpc:call`` to the same target, measured in the same run.

Three nodes on this machine: the target, an Erlang caller (the baseline), and this
Python process. Each figure is the median of several rounds of sequential calls of
``erlang:node/0``; the ratio is ours divided by Erlang's (goal: at most 2x).
"""

from __future__ import annotations

import asyncio
import statistics
import time

from elixirscope.dist.async_node import AsyncNode
from elixirscope.dist.node import Node, connect
from elixirscope.remote_eval import eval_erlang
from elixirscope.sample_nodes import BeamNode, start_bare

CALLS = 2000
ROUNDS = 5


def erlang_rpc_call_us(caller: Node, target: str) -> float:
    """Microseconds per ``rpc:call`` made by the Erlang caller node."""
    expression = (
        f"T = '{target}', N = {CALLS}, rpc:call(T, erlang, node, []), "
        "F = fun Loop(0) -> ok; Loop(K) -> rpc:call(T, erlang, node, []), Loop(K - 1) end, "
        "{Us, ok} = timer:tc(fun() -> F(N) end), Us / N"
    )
    return float(caller.run(eval_erlang(caller.anode, expression)))


def erlang_rex_call_us(caller: Node, target: str) -> float:
    """Microseconds per call through ``rex`` (the mechanism ``Node.rpc`` uses), from Erlang."""
    expression = (
        f"T = '{target}', N = {CALLS}, "
        "C = fun() -> gen_server:call({rex, T}, {call, erlang, node, [], group_leader()}) end, "
        "C(), F = fun Loop(0) -> ok; Loop(K) -> C(), Loop(K - 1) end, "
        "{Us, ok} = timer:tc(fun() -> F(N) end), Us / N"
    )
    return float(caller.run(eval_erlang(caller.anode, expression)))


def python_sync_us(node: Node) -> float:
    started = time.perf_counter()
    for _ in range(CALLS):
        node.rpc("erlang", "node", [])
    return (time.perf_counter() - started) / CALLS * 1e6


def python_async_us(target: BeamNode) -> tuple[float, float]:
    """(sequential, 64 in flight) microseconds per call on the asyncio core."""

    async def run() -> tuple[float, float]:
        anode = await AsyncNode.connect(target.name, target.cookie)
        try:
            await anode.rpc("erlang", "node", [])
            started = time.perf_counter()
            for _ in range(CALLS):
                await anode.rpc("erlang", "node", [])
            sequential = (time.perf_counter() - started) / CALLS * 1e6
            started = time.perf_counter()
            for _ in range(CALLS // 64):
                await asyncio.gather(*(anode.rpc("erlang", "node", []) for _ in range(64)))
            concurrent = (time.perf_counter() - started) / (CALLS // 64 * 64) * 1e6
            return sequential, concurrent
        finally:
            await anode.close()

    return asyncio.run(run())


def main() -> None:
    with start_bare("erl", name_prefix="bench_target") as target, \
            start_bare("erl", name_prefix="bench_caller", cookie=target.cookie) as caller_node, \
            connect(caller_node.name, caller_node.cookie) as caller, \
            connect(target.name, target.cookie) as node:
        node.rpc("erlang", "node", [])
        figures: dict[str, list[float]] = {
            "erlang rpc:call": [], "erlang rex call": [], "python Node.rpc (sync)": [],
            "python AsyncNode.rpc": [], "python AsyncNode.rpc, 64 in flight": [],
        }
        for _ in range(ROUNDS):
            figures["erlang rpc:call"].append(erlang_rpc_call_us(caller, target.name))
            figures["erlang rex call"].append(erlang_rex_call_us(caller, target.name))
            figures["python Node.rpc (sync)"].append(python_sync_us(node))
            sequential, concurrent = python_async_us(target)
            figures["python AsyncNode.rpc"].append(sequential)
            figures["python AsyncNode.rpc, 64 in flight"].append(concurrent)
    baseline = statistics.median(figures["erlang rpc:call"])
    print(f"{CALLS} sequential calls of erlang:node/0, median of {ROUNDS} rounds")
    print(f"{'path':40} {'us/call':>10} {'vs rpc:call':>12}")
    for label, values in figures.items():
        median = statistics.median(values)
        print(f"{label:40} {median:10.1f} {median / baseline:11.2f}x")
    print("goal: python Node.rpc at most 2.00x erlang rpc:call")


if __name__ == "__main__":
    main()
