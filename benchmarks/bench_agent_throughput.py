"""Trace events per second delivered to Python with their hot fields decoded, against
the rate at which the VM delivers the same trace messages to a bare Erlang process
that only counts them, measured on one node in the same run.

A worker on the node makes N calls of ``es_bench_workload:work/1`` as fast as it can.
Baseline: the calls are traced into a counting process, and the rate is N over the
time from ``go`` to the counter receiving the N-th message (timed on the node).
ElixirScope: the agent traces the calls (``trace_function``, arguments captured) and
Python iterates the ``TraceEvent`` objects, reading ``kind``, ``pid``, ``mfa`` and
``timestamp`` of each (payloads are not decoded); the rate is the events Python got
over the time from sending ``go`` to the last event iterated. Two consumers:
``AsyncScope.events`` in an asyncio loop (the goal is on this one) and the
synchronous ``Scope.events`` iterator.

Every event the agent kept is accounted for: the agent's counters for the rounds
(received, kept, dropped, sampled out) must satisfy kept == delivered + dropped;
batches the sequence numbers say never arrived, and batches Python's queue dropped,
are printed too. Goal: at least 0.8x the counting tracer's rate.
"""

from __future__ import annotations

import time
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
    trace_state_async,
    verdict,
)
from elixirscope.dist.async_node import AsyncNode
from elixirscope.etf import Atom, Pid
from elixirscope.sample_nodes import start_bare
from elixirscope.tracing.scope import AsyncScope, Scope

CALLS = 200_000
ROUNDS = 5
SYNC_CALLS = 20_000
SYNC_ROUNDS = 3
IDLE_TIMEOUT = 1.0
GOAL = 0.8
LIMITS = NO_BREAKER
COUNTERS = ("received", "kept", "dropped", "sampled_out")


@dataclass
class Consumed:
    delivered: int = 0
    seconds: float = 0.0
    out_of_order: int = 0
    foreign: int = 0


@dataclass
class Accounts:
    """The agent's counters over the measured rounds, and what Python saw."""

    agent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0))
    delivered: int = 0
    lost_batches: int = 0
    python_dropped: int = 0
    out_of_order: int = 0
    foreign: int = 0

    def add(self, before: dict[str, int], after: dict[str, int], consumed: Consumed) -> None:
        for key in COUNTERS:
            self.agent[key] += after[key] - before[key]
        self.delivered += consumed.delivered
        self.out_of_order += consumed.out_of_order
        self.foreign += consumed.foreign


@dataclass
class Run:
    label: str
    bare: list[float] = field(default_factory=list)
    agent: list[float] = field(default_factory=list)
    accounts: Accounts = field(default_factory=Accounts)
    stopped: str | None = None
    stats: str = ""

    @property
    def ratio(self) -> float:
        return median(self.agent) / median(self.bare)


EXPECTED_MFA = (Atom(MODULE), Atom(FUNCTION), ARITY)


class _Reader:
    """Reads the hot fields of each event, as a consumer filtering them would; the
    checks on what was read (order per pid, foreign events) run after the clock stops,
    so they are not counted as delivery cost."""

    def __init__(self) -> None:
        self.consumed = Consumed()
        self.seen: list[tuple[str, Pid, Any, int]] = []
        self.end = 0.0

    def read(self, kind: str, pid: Pid, mfa: Any, timestamp: int) -> None:
        self.seen.append((kind, pid, mfa, timestamp))

    def finish(self, started: float, idle: float) -> None:
        """Stops the clock (at ``end``, or ``idle`` seconds before now when the events
        stopped coming) and checks what was read."""
        if not self.end:
            self.end = time.perf_counter() - idle
        consumed = self.consumed
        consumed.seconds = self.end - started
        last: dict[Pid, int] = {}
        for kind, pid, mfa, timestamp in self.seen:
            consumed.delivered += 1
            if kind != "call" or mfa != EXPECTED_MFA:
                consumed.foreign += 1
            if timestamp < last.get(pid, timestamp):
                consumed.out_of_order += 1
            last[pid] = timestamp


def _counters(status: dict[Any, Any]) -> dict[str, int]:
    counters = {str(key): value for key, value in status[Atom("counters")].items()}
    return {key: int(counters[key]) for key in COUNTERS}


def _bare_rate(result: dict[Any, Any], calls: int) -> float:
    fields = {str(key): value for key, value in result.items()}
    if fields["counted"] != calls or not isinstance(fields["delivery_ns"], int):
        raise RuntimeError(f"the counting tracer saw {fields['counted']} of {calls} calls")
    return calls / (int(fields["delivery_ns"]) / 1e9)


# --- the asyncio consumer ---------------------------------------------------------------


async def _async_agent_round(anode: AsyncNode, scope: AsyncScope, calls: int,
                             accounts: Accounts | None) -> float:
    before = _counters(await scope.status())
    ref = await scope.trace_function(MODULE, FUNCTION, ARITY, capture=("args",))
    worker = await anode.rpc(WORKLOAD, "spawn_worker", [calls])
    reader = _Reader()
    started = time.perf_counter()
    await anode.send(worker, Atom("go"))
    seen = reader.seen
    async for event in scope.events(timeout=IDLE_TIMEOUT):
        reader.read(event.kind, event.pid, event.mfa, event.timestamp)
        if len(seen) >= calls:
            reader.end = time.perf_counter()
            break
    reader.finish(started, IDLE_TIMEOUT)
    await anode.rpc(WORKLOAD, "await_worker", [worker, 60000])
    await scope.stop_trace(ref)
    leftover = _Reader()
    async for event in scope.events(timeout=0.2):  # anything left (should be nothing)
        leftover.read(event.kind, event.pid, event.mfa, event.timestamp)
    leftover.finish(started, 0.0)
    reader.consumed.delivered += leftover.consumed.delivered
    reader.consumed.foreign += leftover.consumed.foreign
    after = _counters(await scope.status())
    if accounts is not None:
        accounts.add(before, after, reader.consumed)
    return reader.consumed.delivered / reader.consumed.seconds if reader.consumed.seconds else 0.0


async def _async_rounds(anode: AsyncNode, scope: AsyncScope) -> Run:
    """Runs on the connection's own asyncio loop, as code using ``attach_async`` does."""
    run = Run("AsyncScope.events (asyncio)")
    await anode.rpc(WORKLOAD, "bare_round", [CALLS], timeout=120)
    await _async_agent_round(anode, scope, CALLS, None)  # warm-up
    lost, dropped = scope.lost_batches, scope.python_dropped
    for round_number in range(ROUNDS):
        ways = ["bare", "agent"] if round_number % 2 == 0 else ["agent", "bare"]
        for way in ways:
            state = await trace_state_async(anode)
            require_clean(state, f"before the {way} tracer, round {round_number}")
            if way == "bare":
                result = await anode.rpc(WORKLOAD, "bare_round", [CALLS], timeout=120)
                run.bare.append(_bare_rate(result, CALLS))
            else:
                run.agent.append(await _async_agent_round(anode, scope, CALLS, run.accounts))
    run.accounts.lost_batches = scope.lost_batches - lost
    run.accounts.python_dropped = scope.python_dropped - dropped
    run.stopped = None if scope.stopped is None else scope.stopped.reason
    run.stats = str(scope.stats)
    return run


# --- the synchronous consumer -----------------------------------------------------------


def _sync_agent_round(scope: Scope, calls: int, accounts: Accounts) -> float:
    node = scope.node
    before = _counters(node.run(scope.ascope.status()))
    ref = scope.trace_function(MODULE, FUNCTION, ARITY, capture=("args",))
    worker = node.rpc(WORKLOAD, "spawn_worker", [calls])
    reader = _Reader()
    started = time.perf_counter()
    node.send(worker, Atom("go"))
    seen = reader.seen
    for event in scope.events(timeout=IDLE_TIMEOUT):
        reader.read(event.kind, event.pid, event.mfa, event.timestamp)
        if len(seen) >= calls:
            reader.end = time.perf_counter()
            break
    reader.finish(started, IDLE_TIMEOUT)
    node.rpc(WORKLOAD, "await_worker", [worker, 60000])
    scope.stop_trace(ref)
    leftover = _Reader()
    for event in scope.events(timeout=0.2):  # anything left (should be nothing)
        leftover.read(event.kind, event.pid, event.mfa, event.timestamp)
    leftover.finish(started, 0.0)
    reader.consumed.delivered += leftover.consumed.delivered
    reader.consumed.foreign += leftover.consumed.foreign
    accounts.add(before, _counters(node.run(scope.ascope.status())), reader.consumed)
    return reader.consumed.delivered / reader.consumed.seconds if reader.consumed.seconds else 0.0


def _sync_rounds(scope: Scope) -> Run:
    run = Run("Scope.events (sync iterator)")
    node = scope.node
    lost, dropped = scope.ascope.lost_batches, scope.ascope.python_dropped
    for _ in range(SYNC_ROUNDS):
        require_clean(trace_state(node), "before the sync round")
        result = node.rpc(WORKLOAD, "bare_round", [SYNC_CALLS], timeout=120)
        run.bare.append(_bare_rate(result, SYNC_CALLS))
        run.agent.append(_sync_agent_round(scope, SYNC_CALLS, run.accounts))
    run.accounts.lost_batches = scope.ascope.lost_batches - lost
    run.accounts.python_dropped = scope.ascope.python_dropped - dropped
    run.stopped = None if scope.stopped is None else scope.stopped.reason
    run.stats = str(scope.ascope.stats)
    require_clean(trace_state(node), "after the sync rounds")
    return run


# --- report -----------------------------------------------------------------------------


def _reconciliation(run: Run) -> tuple[list[str], bool]:
    acc = run.accounts
    kept, dropped = acc.agent["kept"], acc.agent["dropped"]
    balanced = kept == acc.delivered + dropped
    row = [run.label, str(acc.agent["received"]), str(kept), str(dropped),
           str(acc.agent["sampled_out"]), str(acc.delivered),
           f"{kept - acc.delivered - dropped:+d}", str(acc.lost_batches),
           str(acc.python_dropped)]
    return row, balanced


def report(runs: list[Run]) -> None:
    main_run = runs[0]
    print(f"calls of {MODULE}:{FUNCTION}/{ARITY} traced with arguments; "
          f"{CALLS} per round, median of {ROUNDS} rounds for the asyncio consumer, "
          f"{SYNC_CALLS} x {SYNC_ROUNDS} for the sync iterator (each against its own "
          "baseline rounds)")
    rows = []
    for run in runs:
        bare, agent = median(run.bare), median(run.agent)
        rows.append([run.label, f"{agent:,.0f}", spread(run.agent), f"{bare:,.0f}",
                     spread(run.bare), f"{agent / bare:.2f}x"])
    print(table(["consumer", "events/s to Python", "rounds", "counting tracer events/s",
                 "rounds", "ratio"], rows))
    print("every kept event accounted for (agent counters over the measured rounds):")
    recon = [_reconciliation(run) for run in runs]
    print(table(["consumer", "received", "kept", "dropped", "sampled_out", "delivered",
                 "kept-delivered-dropped", "lost_batches", "python_dropped"],
                [row for row, _ in recon]))
    for run, (_, balanced) in zip(runs, recon, strict=True):
        print(f"{run.label}: kept == delivered + dropped: {'yes' if balanced else 'NO'}; "
              f"events not a call of work/1: {run.accounts.foreign}; timestamps out of "
              f"order per pid: {run.accounts.out_of_order}; breaker: "
              f"{'did not trip' if run.stopped is None else 'TRIPPED ' + run.stopped}; "
              f"last batch stats: {run.stats}")
    ratio = main_run.ratio
    ok = ratio >= GOAL and all(balanced for _, balanced in recon)
    print(f"goal: AsyncScope events/s at least {GOAL:.2f}x the counting tracer, with every "
          f"event accounted for: {ratio:.2f}x, {verdict(ok)}")


def main() -> None:
    # One session for both consumers: the async one runs on the connection's loop.
    with start_bare("erl", name_prefix="bench_throughput") as target, \
            elixirscope.connect(target.name, target.cookie) as node:
        load_workload(node)
        with elixirscope.attach(node, None, **LIMITS) as scope:
            runs = [node.run(_async_rounds(node.anode, scope.ascope)), _sync_rounds(scope)]
        require_clean(trace_state(node), "after the scope closed")
    report(runs)


if __name__ == "__main__":
    main()
