"""Real systems nobody here wrote, traced at the default level: RabbitMQ, ejabberd and
Yaws from Debian, each driven by a real client on loopback (``real_systems``).

For each: the client's throughput untraced, traced with ``elixirscope record --trace
M`` (the command a user runs, in a subprocess), and untraced again, all in the same
run; the ratio is traced against the mean of the two untraced runs (goal: at least
0.8x). Then what the recording holds (events, dropped, sampled out, whether a limit
stopped it) and whether anything of ours is left on the node: trace patterns on the
traced modules' functions, trace flags on any process or on new ones, an agent module.

    ./dev try-real                  # all three
    ./dev try-real rabbitmq yaws    # some
    ./dev try-real --src DIR        # the same, with the elixirscope of another checkout
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import elixirscope
from benchmarks import real_systems
from benchmarks._beam_workload import table
from elixirscope.etf import Atom

SYSTEMS: dict[str, Callable[[], AbstractContextManager[real_systems.System]]] = {
    "rabbitmq": real_systems.rabbitmq,
    "ejabberd": real_systems.ejabberd,
    "yaws": real_systems.yaws,
}
SECONDS = 8.0


def record_during(system: real_systems.System, seconds: float, path: Path,
                  src: str | None) -> tuple[float, dict[str, Any], str]:
    """Runs the load while ``elixirscope record`` traces the system's modules; the
    load's throughput, the recorder's JSON stats and its stderr."""
    command = [sys.executable, "-m", "elixirscope", "record", system.node, "--cookie",
               system.cookie, "--duration", str(seconds + 2), "-o", str(path), "--json"]
    for module in system.modules:
        command += ["--trace", module]
    env = {**os.environ, **({"PYTHONPATH": src} if src else {})}
    recorder = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
    assert recorder.stderr is not None
    lines = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # until the traces are on
        line = recorder.stderr.readline()
        lines.append(line)
        if not line or "tracing" in line or "recording" in line:
            break
    rate = system.load(seconds)
    out, err = recorder.communicate(timeout=600)
    try:
        stats = json.loads(out.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        stats = {"error": (err.strip().splitlines() or ["no output"])[-1]}
    return rate, stats, "".join(lines) + err


def leftovers(system: real_systems.System) -> str:
    """What of ours is left on the node, in words ("nothing" when clean)."""
    with elixirscope.connect(system.node, system.cookie) as node:
        found = []
        loaded = [m for m, _ in node.rpc("code", "all_loaded", [])
                  if str(m).startswith("elixirscope_agent")]
        if loaded:
            found.append(f"agent modules {loaded}")
        new = node.rpc("erlang", "trace_info", [Atom("new"), Atom("flags")])[1]
        if new:
            found.append(f"flags on new processes {new}")
        flagged = sum(1 for pid in node.rpc("erlang", "processes", [])
                      if (info := node.rpc("erlang", "trace_info", [pid, Atom("flags")]))
                      and isinstance(info, tuple) and info[1])
        if flagged:
            found.append(f"flags on {flagged} processes")
        patterns = 0
        for module in system.modules:
            functions = node.rpc(module, "module_info", [Atom("functions")])
            patterns += sum(1 for f, a in functions if node.rpc(
                "erlang", "trace_info", [(Atom(module), f, a), Atom("traced")])[1] is not False)
        if patterns:
            found.append(f"patterns on {patterns} functions")
        return "; ".join(found) or "nothing"


def measure(name: str, seconds: float, src: str | None) -> list[str]:
    try:
        with SYSTEMS[name]() as system, tempfile.TemporaryDirectory() as folder:
            system.load(2)  # warm up: connections, queues, page compilation
            before = system.load(seconds)
            traced, stats, log = record_during(system, seconds,
                                               Path(folder) / f"{name}.duckdb", src)
            time.sleep(1)
            left = leftovers(system)
            after = system.load(seconds)
    except Exception as exc:  # a system that cannot start here: one line, then the next
        print(f"{name}: not measured: {exc}")
        return [name, "-", "-", "-", "-", "-", "-", "-", str(exc)[:60]]
    baseline = (before + after) / 2
    if "error" in stats:
        print(f"{name}: the recording failed: {stats['error']}\n{log}")
    return [system.name, f"{baseline:,.0f}", f"{traced:,.0f}",
            f"{traced / baseline:.2f}x" if baseline else "-",
            f"{stats.get('events', 0):,}", f"{stats.get('dropped', 0):,}",
            f"{stats.get('agent_sampled_out', 0):,}", str(stats.get("breaker") or "none"),
            left]


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(prog="bench_real_systems")
    parser.add_argument("systems", nargs="*", metavar="SYSTEM",
                        help=f"any of {', '.join(SYSTEMS)} (default: all)")
    parser.add_argument("--seconds", type=float, default=SECONDS)
    parser.add_argument("--src", help="the src folder of another elixirscope checkout")
    args = parser.parse_args(list(argv))
    unknown = [name for name in args.systems if name not in SYSTEMS]
    if unknown:
        parser.error(f"unknown system {unknown[0]}; choose from {', '.join(SYSTEMS)}")
    rows = [measure(name, args.seconds, args.src) for name in args.systems or SYSTEMS]
    print(f"\nthroughput of a real client, untraced (mean of before and after) and while "
          f"elixirscope record traces at the default level, {args.seconds:g} s each; "
          "goal traced/untraced >= 0.8x and nothing left")
    print(table(["system", "untraced/s", "traced/s", "ratio", "events", "dropped",
                 "sampled out", "stopped by", "left on the node"], rows))


if __name__ == "__main__":
    main(sys.argv[1:])
