"""A trace flood far above the limits: does the agent keep the node's memory within
the configured bound, and does its breaker trip in time and leave nothing behind?

Several worker processes on the node call the traced ``es_bench_workload:work/1`` in
tight loops (together about a million trace messages a second on two cores), against
limits of 20 000 events/s, a relay queue of 20 000 messages and a relay heap of 64 MB.
A high-priority sampler process on the node records ``erlang:memory(total)``, the
relay's queue length and memory, and whether work/1 still has a trace pattern, every
10 ms before, during and after the flood. Python consumes the events meanwhile.
Several trials, each on a fresh node.

Printed per trial: the peak growth of the node's memory over its level before the
flood, against the relay heap bound; the time from the flood's start to the breaker
removing the pattern (seen by the sampler on the node) and to ``TraceStopped``
reaching Python; the trace flags and patterns left after the trip (checked while the
workers still run, and after); the agent's counters, reconciled with what Python
received; and the timeline of the slowest trial. Goal, on the worst trial: memory
growth within the bound, trip within 1 s, nothing left traced.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import elixirscope
from benchmarks._beam_workload import (
    ARITY,
    FUNCTION,
    MODULE,
    WORKLOAD,
    TraceState,
    load_workload_async,
    table,
    trace_state_async,
    verdict,
)
from elixirscope.dist.async_node import AsyncNode
from elixirscope.elixir_format import inspect
from elixirscope.errors import ElixirScopeError
from elixirscope.etf import Atom
from elixirscope.sample_nodes import BeamNode, start_bare
from elixirscope.tracing.scope import AsyncScope, TraceStopped

WORKERS = 4
TRIALS = 3
SAMPLE_MS = 10
BEFORE_S = 0.5
FLOOD_LIMIT_S = 5.0  # the workers are stopped after this long if nothing tripped
AFTER_TRIP_S = 0.5  # the workers keep calling (untraced) this long after the trip
AFTER_S = 1.5  # sampling goes on this long after the workers stop
TRIP_GOAL_S = 1.0
LIMITS: dict[str, float | None] = {
    "max_events_per_second": 20_000,
    "max_queue_len": 20_000,
    "max_relay_heap_mb": 64,
}
BOUND_BYTES = int(LIMITS["max_relay_heap_mb"] or 0) * 1024 * 1024


@dataclass(frozen=True)
class Sample:
    us: int  # node monotonic time
    total: int  # erlang:memory(total)
    relay_queue: int
    relay_memory: int
    traced: bool


@dataclass
class Consumer:
    delivered: int = 0
    stopped: TraceStopped | None = None
    stop_seen_at: float | None = None  # perf_counter when the consumer got TraceStopped
    ended: str = "still running"


@dataclass
class Outcome:
    samples: list[Sample]
    flood_start_us: int
    flood_end_us: int
    started: float  # perf_counter just before the flood started
    pump_stopped_at: float | None  # perf_counter when scope.stopped was first set
    consumer: Consumer
    state_after_trip: TraceState | None
    state_after_flood: TraceState
    status: dict[str, Any] | str
    lost_batches: int
    python_dropped: int
    stats: str
    notes: list[str] = field(default_factory=list)


async def _consume(scope: AsyncScope, consumer: Consumer) -> None:
    """Reads the hot fields of every event until the breaker's TraceStopped arrives."""
    try:
        async for event in scope.events(timeout=None):
            consumer.delivered += 1
            _ = (event.kind, event.pid, event.mfa, event.timestamp)
        consumer.ended = "the event stream ended without TraceStopped"
    except TraceStopped as stop:
        consumer.stop_seen_at = time.perf_counter()
        consumer.stopped = stop
        consumer.ended = f"TraceStopped ({stop.reason})"


async def _watch_stopped(scope: AsyncScope) -> float:
    """When the session's ``stopped`` is first set (the pump got es_stopped)."""
    while scope.stopped is None:
        await asyncio.sleep(0.002)
    return time.perf_counter()


async def _flood(target: BeamNode) -> Outcome:
    anode = await AsyncNode.connect(target.name, target.cookie)
    try:
        await load_workload_async(anode)
        scope = await elixirscope.attach_async(anode, None, **LIMITS)
        try:
            return await _flood_session(anode, scope)
        finally:
            with contextlib.suppress(ElixirScopeError):
                await scope.close()
    finally:
        await anode.close()


async def _flood_session(anode: AsyncNode, scope: AsyncScope) -> Outcome:
    notes: list[str] = []
    sampler = await anode.rpc(WORKLOAD, "sampler_start", [SAMPLE_MS, scope.relay])
    consumer = Consumer()
    consuming = asyncio.create_task(_consume(scope, consumer))
    watching = asyncio.create_task(_watch_stopped(scope))
    await asyncio.sleep(BEFORE_S)
    await scope.trace_function(MODULE, FUNCTION, ARITY, capture=("args",))
    started = time.perf_counter()
    flood_start_us, workers = await anode.rpc(WORKLOAD, "flood_start", [WORKERS])
    state_after_trip: TraceState | None = None
    done, _ = await asyncio.wait({watching}, timeout=FLOOD_LIMIT_S)
    if done:
        # The workers are still calling work/1: nothing may trace them any more.
        state_after_trip = await trace_state_async(anode, workers)
        await asyncio.sleep(AFTER_TRIP_S)
    else:
        notes.append(f"the breaker had not stopped the trace {FLOOD_LIMIT_S:g} s into the "
                     "flood; the workers were stopped then")
    flood_end = await anode.rpc("erlang", "monotonic_time", [Atom("microsecond")])
    await anode.rpc(WORKLOAD, "flood_stop", [workers])
    await asyncio.sleep(AFTER_S)
    raw_samples = await anode.rpc(WORKLOAD, "sampler_stop", [sampler], timeout=30)
    state_after_flood = await trace_state_async(anode)
    await asyncio.wait({consuming, watching}, timeout=5.0)
    pump_stopped_at = watching.result() if watching.done() else None
    consuming.cancel()
    watching.cancel()
    status: dict[str, Any] | str
    try:
        reply = await scope.status()
        status = {str(key): value for key, value in reply.items()}
    except ElixirScopeError as exc:
        status = f"the relay did not answer ({exc})"
    if not isinstance(raw_samples, list):
        raise RuntimeError(f"the sampler failed: {inspect(raw_samples)}")
    samples = [Sample(int(us), int(total), int(queue), int(memory), bool(traced))
               for us, total, queue, memory, traced in raw_samples]
    return Outcome(samples, int(flood_start_us), int(flood_end), started, pump_stopped_at,
                   consumer, state_after_trip, state_after_flood, status,
                   scope.lost_batches, scope.python_dropped, str(scope.stats), notes)


# --- report -----------------------------------------------------------------------------


def _mb(value: float) -> str:
    return f"{value / 1024 / 1024:.1f}"


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.3f}"


@dataclass
class Figures:
    """What one trial measured."""

    outcome: Outcome
    baseline: float
    growth: float
    settled: float
    peak_queue: int
    peak_relay: int
    node_trip_s: float | None  # flood start -> first sample without the pattern
    pump_trip_s: float | None  # flood start -> scope.stopped set
    consumer_trip_s: float | None  # flood start -> TraceStopped raised to the consumer
    balanced: bool | None

    @classmethod
    def of(cls, outcome: Outcome) -> Figures:
        samples = outcome.samples
        start, end = outcome.flood_start_us, outcome.flood_end_us
        baseline = statistics.median(s.total for s in samples if s.us < start)
        during = [s for s in samples if start <= s.us <= end]
        after = [s for s in samples if s.us > end + 1_000_000]
        untraced = next((s for s in samples if s.us >= start and not s.traced), None)
        consumer = outcome.consumer
        balanced = None
        if isinstance(outcome.status, dict):
            counters = {str(k): v for k, v in outcome.status["counters"].items()}
            balanced = int(counters["kept"]) == consumer.delivered + int(counters["dropped"])
        return cls(
            outcome, baseline, max(s.total for s in during) - baseline,
            statistics.median(s.total for s in after) if after else float("nan"),
            max(s.relay_queue for s in samples), max(s.relay_memory for s in samples),
            None if untraced is None else (untraced.us - start) / 1e6,
            None if outcome.pump_stopped_at is None
            else outcome.pump_stopped_at - outcome.started,
            None if consumer.stop_seen_at is None else consumer.stop_seen_at - outcome.started,
            balanced)

    @property
    def clean(self) -> bool:
        after_trip = self.outcome.state_after_trip
        return (after_trip is not None and after_trip.clean
                and self.outcome.state_after_flood.clean)

    @property
    def trip_key(self) -> float:
        return float("inf") if self.node_trip_s is None else self.node_trip_s


def _timeline(figures: Figures) -> list[list[str]]:
    """One row per 250 ms: the largest figures of the samples in that slot."""
    outcome = figures.outcome
    rows: list[list[str]] = []
    slot_us = 250_000
    slots: dict[int, list[Sample]] = {}
    for sample in outcome.samples:
        slots.setdefault((sample.us - outcome.flood_start_us) // slot_us, []).append(sample)
    for slot in sorted(slots):
        group = slots[slot]
        phase = ("before" if slot < 0 else
                 "flood" if slot * slot_us < outcome.flood_end_us - outcome.flood_start_us
                 else "after")
        top = max(s.total for s in group)
        rows.append([f"{slot * slot_us // 1000:+d}", phase, _mb(top),
                     f"{(top - figures.baseline) / 1024 / 1024:+.1f}",
                     str(max(s.relay_queue for s in group)),
                     _mb(max(s.relay_memory for s in group)),
                     "yes" if any(s.traced for s in group) else "no"])
    return rows


def report(trials: list[Figures]) -> None:
    print(f"{WORKERS} workers calling {MODULE}:{FUNCTION}/{ARITY} in tight loops; limits "
          + ", ".join(f"{key}={value:g}" for key, value in LIMITS.items() if value)
          + f"; node sampled every {SAMPLE_MS} ms; {TRIALS} trials, each on a fresh node")
    rows = []
    for number, fig in enumerate(trials, 1):
        consumer = fig.outcome.consumer
        rows.append([
            str(number), _mb(fig.baseline), _mb(fig.growth), _mb(fig.settled - fig.baseline),
            str(fig.peak_queue), _mb(fig.peak_relay), _seconds(fig.node_trip_s),
            _seconds(fig.pump_trip_s), _seconds(fig.consumer_trip_s),
            consumer.stopped.reason if consumer.stopped else "-",
            "no" if fig.clean else "YES",
            {True: "yes", False: "NO", None: "?"}[fig.balanced]])
    print(table(["trial", "before MB", "growth MB", "after MB", "relay queue",
                 "relay MB", "trip (node) s", "stopped s", "TraceStopped s", "reason",
                 "left traced", "accounts balance"], rows))
    print(f"bounds: node memory growth <= {_mb(BOUND_BYTES)} MB (max_relay_heap_mb); relay "
          f"queue checked against max_queue_len {LIMITS['max_queue_len']:g} every 100 ms; "
          f"trip <= {TRIP_GOAL_S:g} s after the flood starts")
    worst = max(trials, key=lambda fig: (fig.trip_key, fig.growth))
    print(f"\nslowest trial ({trials.index(worst) + 1}), max per 250 ms slot "
          "(ms from flood start):")
    print(table(["ms", "phase", "memory MB", "vs before", "relay queue", "relay MB",
                 "traced"], _timeline(worst)))
    after_trip = worst.outcome.state_after_trip
    print("after the trip, workers still calling: "
          + ("not checked (no trip)" if after_trip is None else after_trip.describe()))
    print(f"after the flood: {worst.outcome.state_after_flood.describe()}")
    _print_accounts(worst.outcome)
    for number, fig in enumerate(trials, 1):
        for note in fig.outcome.notes:
            print(f"note (trial {number}): {note}")
    growth = max(fig.growth for fig in trials)
    trip = max(fig.trip_key for fig in trials)
    met = growth <= BOUND_BYTES and trip <= TRIP_GOAL_S and all(fig.clean for fig in trials)
    print(f"goal: memory growth within {_mb(BOUND_BYTES)} MB (worst {_mb(growth)} MB), trip "
          f"within {TRIP_GOAL_S:g} s (worst {_seconds(worst.node_trip_s)} s), nothing left "
          f"traced: {verdict(met)}")


def _print_accounts(outcome: Outcome) -> None:
    consumer = outcome.consumer
    status = outcome.status
    print(f"python: {consumer.delivered} events iterated, consumer ended with "
          f"{consumer.ended}; lost_batches {outcome.lost_batches}, python_dropped "
          f"{outcome.python_dropped}; last batch stats {outcome.stats}")
    if consumer.stopped is not None:
        stop = {key: consumer.stopped.counters.get(key)
                for key in ("received", "kept", "dropped", "sampled_out")}
        print(f"agent counters in TraceStopped: {stop}")
    if isinstance(status, str):
        print(f"agent: {status}")
        return
    counters = {str(key): value for key, value in status["counters"].items()}
    print("agent status at the end: tripped " + inspect(status.get("tripped")) + "; "
          + ", ".join(f"{key} {counters.get(key)}" for key in
                      ("received", "kept", "dropped", "sampled_out", "batches", "rate",
                       "adaptive_rate")))
    kept, dropped = int(counters["kept"]), int(counters["dropped"])
    print(f"reconciliation: kept {kept} == delivered {consumer.delivered} + dropped "
          f"{dropped}: {'yes' if kept == consumer.delivered + dropped else 'NO'} "
          f"(difference {kept - consumer.delivered - dropped:+d})")


def main() -> None:
    trials = []
    for _ in range(TRIALS):
        with start_bare("erl", name_prefix="bench_flood") as target:
            trials.append(Figures.of(asyncio.run(_flood(target))))
    report(trials)


if __name__ == "__main__":
    main()
