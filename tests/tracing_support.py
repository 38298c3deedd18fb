"""Helpers for the tests that trace real nodes."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import elixirscope
from elixirscope.etf import Atom
from elixirscope.remote_eval import eval_erlang
from elixirscope.sample_nodes import BeamNode, start_bare

BEAM_SOURCES = Path(__file__).parent / "beam"
ALL_MFAS = [("es_traced", "add", 2), ("es_traced", "helper", 1), ("es_traced", "fail", 1),
            ("es_traced", "big", 1), ("es_traced", "countdown", 1),
            ("es_traced", "call_many", 2)]


def compile_fixture(out_dir: Path, name: str = "es_traced") -> bytes:
    subprocess.run(["erlc", "-o", str(out_dir), str(BEAM_SOURCES / f"{name}.erl")],
                   check=True, capture_output=True)
    return (out_dir / f"{name}.beam").read_bytes()


def load_fixture(node: elixirscope.Node, beam: bytes, name: str = "es_traced") -> None:
    loaded = node.rpc("code", "load_binary", [Atom(name), list(f"{name}.erl".encode()), beam])
    assert loaded == (Atom("module"), Atom(name)), loaded


@contextlib.contextmanager
def start_traced(code: bytes, name_prefix: str, extra_args: Sequence[str] = ()
                 ) -> Iterator[BeamNode]:
    """A bare Erlang node with the es_traced module loaded."""
    with start_bare("erl", name_prefix=name_prefix, extra_args=extra_args) as beam:
        with elixirscope.connect(beam.name, beam.cookie) as conn:
            load_fixture(conn, code)
        yield beam


def erl(node: elixirscope.Node, expression: str, **bindings: Any) -> Any:
    return node.run(eval_erlang(node.anode, expression, bindings=bindings))


def collect(scope: elixirscope.Scope, until: Callable[[list[elixirscope.TraceEvent]], bool],
            timeout: float = 10.0) -> list[elixirscope.TraceEvent]:
    """Events until ``until(events)`` holds (or ``timeout`` passes)."""
    events: list[elixirscope.TraceEvent] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        scope.flush()
        events.extend(scope.events(timeout=0.2))
        if until(events):
            break
    return events


def drain(scope: elixirscope.Scope, quiet: float = 0.5) -> list[elixirscope.TraceEvent]:
    scope.flush()
    return list(scope.events(timeout=quiet))


def kinds(events: list[elixirscope.TraceEvent], mfa: tuple[str, str, int] | None = None
          ) -> list[str]:
    return [event.kind for event in events
            if mfa is None or (event.mfa is not None
                               and (str(event.mfa[0]), str(event.mfa[1]), event.mfa[2]) == mfa)]


def trace_state(node: elixirscope.Node, mfas: list[tuple[str, str, int]] = ()) -> dict[str, Any]:
    """What tracing is left on the node: flags of new processes, flags of every
    process, patterns on the given functions, the trace control word (the agent's
    sampling sets a bit of it), and whether the agent is loaded."""
    flagged = erl(node, "[{P, F} || P <- processes(), {flags, F} <- [erlang:trace_info(P, flags)],"
                        " F =/= []]")
    patterns = {f"{m}:{f}/{a}": node.rpc("erlang", "trace_info",
                                          [(Atom(m), Atom(f), a), Atom("traced")])[1]
                for m, f, a in mfas}
    return {
        "new": node.rpc("erlang", "trace_info", [Atom("new"), Atom("flags")])[1],
        "processes": flagged,
        "patterns": patterns,
        "trace_control_word": node.rpc("erlang", "system_info", [Atom("trace_control_word")]),
        "agent_loaded": erl(node, "[M || {M, _} <- code:all_loaded(), "
                                  "lists:prefix(\"elixirscope_agent\", atom_to_list(M))]") != [],
    }


def wait_clean(node: elixirscope.Node, mfas: list[tuple[str, str, int]], timeout: float = 10
               ) -> dict[str, Any]:
    """The node's trace state once nothing of ours is left (or as it is at timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        state = trace_state(node, mfas)
        clean = (state["new"] == [] and state["processes"] == []
                 and all(value is False for value in state["patterns"].values())
                 and state["trace_control_word"] == 0 and not state["agent_loaded"])
        if clean or time.monotonic() > deadline:
            return state
        time.sleep(0.2)


def clean_state(mfas: list[tuple[str, str, int]]) -> dict[str, Any]:
    return {"new": [], "processes": [], "patterns": dict.fromkeys(
        (f"{m}:{f}/{a}" for m, f, a in mfas), False), "trace_control_word": 0,
        "agent_loaded": False}


def values(events: Iterator[elixirscope.TraceEvent] | list[elixirscope.TraceEvent],
           kind: str) -> list[Any]:
    return [event.value for event in events if event.kind == kind]
