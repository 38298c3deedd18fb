"""What the agent benchmarks share: the Erlang workload (``es_bench_workload.erl``,
compiled with ``erlc`` and loaded on the node by ``code:load_binary/3``), checks that
no tracing is left behind, and the printing of figures."""

from __future__ import annotations

import functools
import statistics
import subprocess
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from elixirscope.dist.async_node import AsyncNode
from elixirscope.dist.node import Node
from elixirscope.elixir_format import inspect
from elixirscope.etf import Atom, Pid

WORKLOAD = Atom("es_bench_workload")
SOURCE = Path(__file__).with_name("es_bench_workload.erl")
MODULE = "es_bench_workload"
FUNCTION = "work"
ARITY = 1


@functools.cache
def compiled(source: Path) -> bytes:
    """An Erlang module compiled by the local ``erlc`` (the same OTP as the nodes)."""
    with tempfile.TemporaryDirectory(prefix="es-bench-") as out:
        done = subprocess.run(["erlc", "-o", out, str(source)], capture_output=True,
                              text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"erlc failed on {source.name}:\n{done.stdout}{done.stderr}")
        return (Path(out) / f"{source.stem}.beam").read_bytes()


def workload_beam() -> bytes:
    return compiled(SOURCE)


def load_module(node: Node, source: Path) -> None:
    """Loads a benchmark module (``benchmarks/NAME.erl``) on the node."""
    # The file name is a charlist: OTP 25's code:load_binary/3 takes no binary there.
    reply = node.rpc("code", "load_binary",
                     [Atom(source.stem), [ord(char) for char in str(source)], compiled(source)])
    if reply != (Atom("module"), Atom(source.stem)):
        raise RuntimeError(f"loading {source.stem} failed: {inspect(reply)}")


def _load_args() -> list[Any]:
    return [WORKLOAD, [ord(char) for char in str(SOURCE)], workload_beam()]


def _check_loaded(reply: Any) -> None:
    if reply != (Atom("module"), WORKLOAD):
        raise RuntimeError(f"loading {MODULE} failed: {inspect(reply)}")


def load_workload(node: Node) -> None:
    _check_loaded(node.rpc("code", "load_binary", _load_args()))


async def load_workload_async(node: AsyncNode) -> None:
    _check_loaded(await node.rpc("code", "load_binary", _load_args()))


# --- what tracing is left ------------------------------------------------------------


@dataclass(frozen=True)
class TraceState:
    """What ``es_bench_workload:trace_state/1`` found on the node."""

    new_flags: list[Any]
    live_flags: list[Any]
    traced: Any
    match_spec: Any

    @classmethod
    def from_term(cls, term: dict[Any, Any]) -> TraceState:
        get = {str(key): value for key, value in term.items()}
        return cls(get["new_flags"], get["live_flags"], get["traced"], get["match_spec"])

    @property
    def clean(self) -> bool:
        return (not self.new_flags and not self.live_flags and self.traced is False
                and self.match_spec is False)

    def describe(self) -> str:
        if self.clean:
            return "clean (no flags on new or live processes, no pattern on work/1)"
        return (f"LEFT BEHIND: new-process flags {inspect(self.new_flags)}, live-process "
                f"flags {inspect(self.live_flags)}, work/1 traced={inspect(self.traced)} "
                f"match_spec={inspect(self.match_spec)}")


def trace_state(node: Node, pids: Sequence[Pid] = ()) -> TraceState:
    return TraceState.from_term(node.rpc(WORKLOAD, "trace_state", [list(pids)]))


async def trace_state_async(node: AsyncNode, pids: Sequence[Pid] = ()) -> TraceState:
    return TraceState.from_term(await node.rpc(WORKLOAD, "trace_state", [list(pids)]))


def require_clean(state: TraceState, when: str) -> None:
    """Stops the benchmark when tracing from one phase would leak into the next."""
    if not state.clean:
        raise RuntimeError(f"{when}: {state.describe()}")


# --- printing ------------------------------------------------------------------------


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def number(value: float) -> str:
    """A figure with as many digits as its size deserves: 4.37, 95.2, 1,234."""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def spread(values: Sequence[float]) -> str:
    """min..max of the rounds, for the reader to judge the noise."""
    return f"{number(min(values))}..{number(max(values))}"


def verdict(met: bool) -> str:
    return "goal met" if met else "goal missed"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        cells = [str(cell).ljust(widths[0]) if i == 0 else str(cell).rjust(widths[i])
                 for i, cell in enumerate(row)]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), *(line(row) for row in rows)])


# Limits lifted so the breaker cannot trip while events are timed: every traced call is
# an event the pipeline must carry (the relay may lag behind a fast worker for a while).
NO_BREAKER: dict[str, float | None] = {
    "max_events_per_second": float("inf"),
    "max_events": float("inf"),
    "max_queue_len": float("inf"),
    "max_relay_heap_mb": 4096,
}
