"""Cost per traced call in the traced process: the ElixirScope agent as the tracer,
against the same calls traced into a bare Erlang process that only counts messages
(the VM's own floor for call tracing), measured on one node in the same run.

Each round times N calls of ``es_bench_workload:work/1`` with ``timer:tc`` inside a
worker process on the node, three ways: untraced, traced into the counting process
(``erlang:trace`` + ``erlang:trace_pattern(..., true, [local])``, removed before the
round ends) and traced by the agent (``Scope.trace_function``, stopped before the
round ends, its events drained into Python). Between the ways the benchmark checks
that no flag or pattern is left on the node. The order of the two traced ways
alternates from round to round; the figures are medians over the rounds.
Goal: the agent at most 1.25x the counting tracer, per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import elixirscope
from benchmarks._beam_workload import (
    ARITY,
    FUNCTION,
    MODULE,
    NO_BREAKER,
    WORKLOAD,
    load_workload,
    median,
    require_clean,
    spread,
    table,
    trace_state,
    verdict,
)
from elixirscope.dist.node import Node
from elixirscope.etf import Atom
from elixirscope.sample_nodes import start_bare
from elixirscope.tracing.scope import AsyncScope, Scope

CALLS = 200_000
UNTRACED_CALLS = 2_000_000
ROUNDS = 7
GOAL = 1.25
LIMITS = NO_BREAKER


@dataclass
class AgentRound:
    ns_per_call: float
    delivered: int
    captured: int
    dropped: int
    sampled_out: int


@dataclass
class Figures:
    untraced: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    agent: list[float] = field(default_factory=list)
    agent_rounds: list[AgentRound] = field(default_factory=list)
    relay_memory: list[int] = field(default_factory=list)


def untraced_ns(node: Node) -> float:
    us = node.rpc(WORKLOAD, "timed_calls", [UNTRACED_CALLS], timeout=120)
    return float(us) * 1000 / UNTRACED_CALLS


def bare_ns(node: Node) -> float:
    """One round into the counting process; the counter must have seen every call."""
    result = {str(key): value for key, value in
              node.rpc(WORKLOAD, "bare_round", [CALLS], timeout=120).items()}
    if result["counted"] != CALLS:
        raise RuntimeError(f"the counting tracer saw {result['counted']} of {CALLS} calls")
    return float(result["us"]) * 1000 / CALLS


async def _drain(scope: AsyncScope, expected: int) -> int:
    """Takes the round's events off the queue (no payload decoding)."""
    delivered = 0
    async for _event in scope.events(timeout=1.0):
        delivered += 1
        if delivered >= expected:
            break
    return delivered


def agent_round(scope: Scope, node: Node) -> AgentRound:
    ref = scope.trace_function(MODULE, FUNCTION, ARITY, capture=("args",))
    us = node.rpc(WORKLOAD, "timed_calls", [CALLS], timeout=120)
    # The request queues behind the trace messages, so it returns once the relay has
    # handled all of them and sent its last batch.
    scope.flush()
    delivered = node.run(_drain(scope.ascope, CALLS))
    info = scope.stop_trace(ref)
    return AgentRound(float(us) * 1000 / CALLS, delivered, info.captured, info.dropped,
                      info.sampled_out)


def relay_memory(node: Node, scope: Scope) -> int:
    reply = node.rpc("erlang", "process_info", [scope.ascope.relay, Atom("memory")])
    return int(reply[1]) if isinstance(reply, tuple) else -1


def measure(node: Node, scope: Scope) -> Figures:
    figures = Figures()
    untraced_ns(node)
    bare_ns(node)
    agent_round(scope, node)  # warm-up: code paths, the relay's heap, the pid table
    for round_number in range(ROUNDS):
        figures.untraced.append(untraced_ns(node))
        ways = ["bare", "agent"] if round_number % 2 == 0 else ["agent", "bare"]
        for way in ways:
            require_clean(trace_state(node), f"before the {way} tracer, round {round_number}")
            if way == "bare":
                figures.bare.append(bare_ns(node))
            else:
                result = agent_round(scope, node)
                figures.agent.append(result.ns_per_call)
                figures.agent_rounds.append(result)
                figures.relay_memory.append(relay_memory(node, scope))
        require_clean(trace_state(node), f"after round {round_number}")
    return figures


def report(figures: Figures, scope: Scope, counters: dict[str, Any]) -> None:
    bare = median(figures.bare)
    agent = median(figures.agent)
    untraced = median(figures.untraced)
    per_round = [a / b for a, b in zip(figures.agent, figures.bare, strict=True)]
    ratio = agent / bare
    print(f"{CALLS} traced calls of {MODULE}:{FUNCTION}/{ARITY} per round "
          f"({UNTRACED_CALLS} untraced), timer:tc in the calling process on the node, "
          f"median of {ROUNDS} rounds")
    print(table(
        ["path", "ns/call", "rounds (min..max)", "vs counting tracer"],
        [["untraced", f"{untraced:.1f}", spread(figures.untraced), f"{untraced / bare:.3f}x"],
         ["traced into a counting process", f"{bare:.0f}", spread(figures.bare), "1.00x"],
         ["traced by the ElixirScope agent", f"{agent:.0f}", spread(figures.agent),
          f"{ratio:.2f}x"]]))
    print(f"agent/counting ratio per round: {', '.join(f'{r:.2f}' for r in per_round)} "
          f"(median {median(per_round):.2f}x)")
    delivered = sum(r.delivered for r in figures.agent_rounds)
    captured = sum(r.captured for r in figures.agent_rounds)
    print(f"agent over the measured rounds: {delivered} events reached Python, "
          f"{captured} captured and {sum(r.dropped for r in figures.agent_rounds)} dropped "
          f"by the traces, {sum(r.sampled_out for r in figures.agent_rounds)} sampled out "
          f"(expected {CALLS * ROUNDS} each)")
    print("agent counters for the whole session (warm-up included): "
          + ", ".join(f"{key} {counters.get(key)}" for key in
                      ("received", "kept", "dropped", "sampled_out", "batches")))
    print(f"python side: lost_batches {scope.ascope.lost_batches}, "
          f"python_dropped {scope.ascope.python_dropped}")
    stopped = scope.stopped
    print("breaker: " + ("did not trip" if stopped is None else
                         f"TRIPPED ({stopped.reason}) - the figures are not valid"))
    print("relay process memory after each agent round (MB): "
          + ", ".join(f"{m / 1e6:.1f}" for m in figures.relay_memory))
    print("tracing left on the node between and after the ways: none (checked each time)")
    print(f"goal: agent at most {GOAL:.2f}x the counting tracer per call: "
          f"{ratio:.2f}x, {verdict(ratio <= GOAL and stopped is None)}")


def main() -> None:
    with start_bare("erl", name_prefix="bench_overhead") as target, \
            elixirscope.connect(target.name, target.cookie) as node:
        load_workload(node)
        scope = elixirscope.attach(node, None, **LIMITS)
        try:
            figures = measure(node, scope)
            status = node.run(scope.ascope.status())
            counters = {str(key): value for key, value in status[Atom("counters")].items()}
        finally:
            scope.close()
        require_clean(trace_state(node), "after the scope closed")
    report(figures, scope, counters)


if __name__ == "__main__":
    main()
