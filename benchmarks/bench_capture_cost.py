"""What tracing a call costs when its arguments carry a large process state.

The VM copies into a call's trace message whatever the pattern ships, before any cap
of the agent applies. The agent ships a behaviour callback's request, not its state,
and stops shipping any argument or return value that turns out large.

1. Cost per traced ``GenServer.call`` at the default level (``detailed``) for the same
   callback module with a 1,000-entry and a 30,000-entry map state, both traced in one
   run; the same calls traced the way every argument and result used to be shipped
   (a raw match specification with ``exception_trace``) are the same-run baseline.
   Goal: large/small at most 1.5x.
2. Throughput of two shapes seen on real brokers, traced at the default level against
   untraced, same node, same run: a callback process with a ~50 KB state offered 20 k
   casts/s, and a queue-like process holding 100 k messages. Goal: at least 0.8x.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import elixirscope
from benchmarks._beam_workload import load_module, table
from elixirscope.etf import Atom, Pid
from elixirscope.sample_nodes import start_bare

WORKLOAD = Path(__file__).with_name("es_capture_workload.erl")
MODULE = "es_capture_workload"
# The cost per call: the gen_server of the state benchmark, a map of Keys 40-byte entries.
CALL_WORKLOAD = Path(__file__).with_name("es_state_workload.erl")
CALL_MODULE = "es_state_workload"
CALLS, QUICK_CALLS = 5_000, 1_000
CASTS, QUICK_CASTS = 100_000, 30_000
CAST_RATE = 20_000
# Every argument and every result whole, as traces were shipped before.
WHOLE = [(Atom("_"), [], [(Atom("exception_trace"),)])]


def call_cost(scope: elixirscope.Scope, folder: Path, calls: int, rounds: int) -> None:
    node = scope.node
    servers = {"1 k entries": node.rpc(CALL_MODULE, "start", [1_000])[1],
               "30 k entries": node.rpc(CALL_MODULE, "start", [30_000])[1]}
    sizes = {label: node.rpc("erlang", "external_size", [node.rpc("sys", "get_state", [pid])])
             for label, pid in servers.items()}
    modes: dict[str, Callable[[], int] | None] = {
        "untraced": None,
        "default level (detailed)": lambda: scope.trace(CALL_MODULE, "detailed", force=True),
        "whole arguments and results (before)": lambda: scope.trace_function(
            CALL_MODULE, "handle_call", 3, match=WHOLE, force=True),
    }
    micros: dict[tuple[str, str], list[float]] = {}
    for round_ in range(rounds):
        for mode, start in modes.items():
            ref = start() if start else None
            recorder = scope.record(folder / f"calls-{round_}-{len(mode)}.duckdb") \
                if ref is not None else None
            for label, pid in servers.items():
                spent = node.rpc(CALL_MODULE, "run", [pid, calls], timeout=900)
                micros.setdefault((mode, label), []).append(spent / calls)
            if recorder is not None:
                recorder.stop()
            if ref is not None:
                scope.stop_trace(ref)
    for pid in servers.values():
        node.rpc(CALL_MODULE, "stop", [pid])

    def med(mode: str, label: str) -> float:
        return statistics.median(micros[(mode, label)])

    small, large = servers
    rows = [[mode, f"{med(mode, small):,.1f}", f"{med(mode, large):,.1f}",
             f"{med(mode, large) / med(mode, small):.2f}x"] for mode in modes]
    print(f"\nµs per GenServer.call, median of {rounds} rounds of {calls:,} calls "
          f"(states {sizes[small]:,} and {sizes[large]:,} bytes as ETF)")
    print(table(["", small, large, "large/small"], rows))
    ratio = med("default level (detailed)", large) / med("default level (detailed)", small)
    before = med("whole arguments and results (before)", large)
    print(f"default level, large/small: {ratio:.2f}x (goal <= 1.5x: "
          f"{'met' if ratio <= 1.5 else 'missed'}); 30 k-entry call vs shipping it whole: "
          f"{med('default level (detailed)', large) / before:.3f}x")


def throughput(scope: elixirscope.Scope, folder: Path, casts: int, rounds: int) -> None:
    node = scope.node
    shapes: dict[str, Callable[[], Pid]] = {
        "~50 KB state, 20 k casts/s offered": lambda: node.rpc(MODULE, "start_map", [790])[1],
        "queue holding 100 k messages": lambda: node.rpc(MODULE, "start_queue", [100_000])[1],
    }
    rows = []
    for shape, (label, start) in enumerate(shapes.items()):
        server = start()
        size = node.rpc("erlang", "external_size", [node.rpc("sys", "get_state", [server])])
        rates: dict[str, list[float]] = {"untraced": [], "traced": []}
        for round_ in range(rounds):
            for mode in ("untraced", "traced"):
                ref = scope.trace(MODULE, "detailed", force=True) if mode == "traced" else None
                recorder = scope.record(folder / f"casts-{shape}-{round_}.duckdb") \
                    if ref is not None else None
                spent = node.rpc(MODULE, "casts", [server, casts, CAST_RATE], timeout=900)
                rates[mode].append(casts / (spent / 1e6))
                if recorder is not None:
                    recorder.stop()
                if ref is not None:
                    scope.stop_trace(ref)
        node.rpc(MODULE, "stop", [server])
        untraced, traced = (statistics.median(rates[m]) for m in ("untraced", "traced"))
        ratio = traced / untraced
        rows.append([label, f"{size:,}", f"{untraced:,.0f}", f"{traced:,.0f}",
                     f"{ratio:.2f}x", "met" if ratio >= 0.8 else "missed"])
    print(f"\ncasts handled per second, {casts:,} casts offered at up to {CAST_RATE:,}/s, "
          f"median of {rounds} rounds; goal traced/untraced >= 0.8x")
    print(table(["shape", "state bytes", "untraced/s", "traced/s", "ratio", "goal"], rows))


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(prog="bench_capture_cost")
    parser.add_argument("--quick", action="store_true", help="fewer calls and casts")
    args = parser.parse_args(list(argv))
    rounds = 3
    with start_bare("erl", name_prefix="bench_capture") as beam, \
            elixirscope.attach(beam.name, beam.cookie, max_events=float("inf"),
                               max_events_per_second=float("inf"),
                               # The baseline ships 2 MB states whole: let it.
                               max_relay_memory_mb=float("inf"),
                               max_queue_len=float("inf")) as scope, \
            tempfile.TemporaryDirectory(prefix="es-bench-capture-") as folder:
        load_module(scope.node, WORKLOAD)
        load_module(scope.node, CALL_WORKLOAD)
        call_cost(scope, Path(folder), QUICK_CALLS if args.quick else CALLS, rounds)
        throughput(scope, Path(folder), QUICK_CASTS if args.quick else CASTS, rounds)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
