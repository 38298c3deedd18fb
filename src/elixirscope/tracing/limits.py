"""Safety limits the agent enforces inside the traced node.

A limit left as ``None`` keeps the agent's default (``default_limits/0`` in the agent
source, safe for production: a trace nobody bounded still stops by itself). Use
``UNLIMITED`` to lift one."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from elixirscope.etf import Atom

INFINITY = Atom("infinity")
UNLIMITED = float("inf")


@dataclass(frozen=True)
class Limits:
    max_events_per_second: float | None = None
    max_events: float | None = None
    max_duration_s: float | None = None
    max_queue_len: float | None = None
    max_term_bytes: float | None = None
    elide_arg_bytes: float | None = None
    max_node_memory_mb: float | None = None
    max_cpu_percent: float | None = None
    max_relay_memory_mb: float | None = None
    max_relay_heap_mb: float | None = None
    flush_interval_ms: float | None = None
    batch_events: float | None = None
    min_sample_rate: float | None = None
    max_state_bytes: float | None = None
    max_state_memory_mb: float | None = None
    state_keyframe_every: float | None = None
    state_probe_timeout_ms: float | None = None

    @classmethod
    def names(cls) -> list[str]:
        return [field.name for field in fields(cls)]

    def to_term(self) -> dict[Atom, Any]:
        """The limits that are set, as the agent reads them."""
        term: dict[Atom, Any] = {}
        for name in self.names():
            value = getattr(self, name)
            if value is None:
                continue
            if value == UNLIMITED:
                term[Atom(name)] = INFINITY
            elif name == "min_sample_rate":
                term[Atom(name)] = float(value)
            else:
                term[Atom(name)] = int(value)
        return term

    @classmethod
    def from_term(cls, term: dict[Any, Any]) -> Limits:
        known = set(cls.names())
        values = {str(key): (UNLIMITED if value == INFINITY else value)
                  for key, value in term.items() if str(key) in known}
        return cls(**values)
