"""Trace events as Python sees them: hot fields decoded, payload kept as raw ETF."""

from __future__ import annotations

from typing import Any

from elixirscope.etf import Atom, Pid, decode

# Record kinds, as the agent numbers them.
KINDS = {
    1: "call", 2: "return", 3: "exception", 4: "send", 5: "send_to_dead", 6: "receive",
    7: "spawn", 8: "spawned", 9: "exit", 10: "link", 11: "unlink", 12: "getting_linked",
    13: "getting_unlinked", 14: "register", 15: "unregister", 16: "return_to",
    17: "state", 18: "mailbox", 19: "metrics",
}
KIND_CODES = {name: code for code, name in KINDS.items()}
# Process metrics samples travel as records of this kind and are stored apart.
METRICS = KIND_CODES["metrics"]
KIND_NAMES = tuple(KINDS.get(code, f"kind{code}") for code in range(max(KINDS) + 1))

TRUNCATED = 1
TARGET_NOT_PID = 2
OTHER_IS_CALLER = 4
RETURN_EXPECTED = 8
STATE_WHOLE = 16  # a state record holding a whole state (not a delta)
ENDED_BY_TIME = 32  # a return whose value was not shipped: only when the call ended
FRAMEWORK = 64  # a call standing for a framework span read from :telemetry

Mfa = tuple[Atom, Atom, int]


class TraceEvent:
    """One thing a traced process did.

    ``timestamp`` is the node's monotonic clock in nanoseconds; ``wall_time_ns`` adds
    the node's offset to wall-clock time. ``payload`` holds the raw ETF of the
    arguments, return value, ``{class, reason}``, message or exit reason, and
    ``value`` decodes it on first access."""

    __slots__ = ("_value", "flags", "kind", "mfa", "node", "offset_ns", "original_size",
                 "other", "payload", "pid", "timestamp")

    def __init__(self, kind: str, node: str, pid: Pid, timestamp: int, mfa: Mfa | None,
                 other: Pid | Mfa | None, payload: bytes, flags: int, original_size: int,
                 offset_ns: int) -> None:
        self.kind = kind
        self.node = node
        self.pid = pid
        self.timestamp = timestamp
        self.mfa = mfa
        self.other = other
        self.payload = payload
        self.flags = flags
        self.original_size = original_size
        self.offset_ns = offset_ns
        self._value: Any = _UNDECODED

    @property
    def wall_time_ns(self) -> int:
        return self.timestamp + self.offset_ns

    @property
    def truncated(self) -> bool:
        """The payload was over ``max_term_bytes``; ``value`` keeps its outer shape."""
        return bool(self.flags & TRUNCATED)

    @property
    def value(self) -> Any:
        if self._value is _UNDECODED:
            self._value = decode(self.payload) if self.payload else None
        return self._value

    @property
    def ended_by_time(self) -> bool:
        """A return that says only when the call ended, not how: the function's values
        were too large to ship (``elide_arg_bytes``), so neither a value nor an
        exception was recorded."""
        return bool(self.flags & ENDED_BY_TIME) and self.kind == "return"

    @property
    def caller(self) -> Mfa | None:
        if self.flags & OTHER_IS_CALLER and isinstance(self.other, tuple):
            return self.other
        return None

    @property
    def peer(self) -> Any:
        """The other process of a send, spawn or link (a pid, or a registered name)."""
        if self.flags & TARGET_NOT_PID:
            value = self.value
            return value[0] if isinstance(value, tuple) else None
        return self.other if isinstance(self.other, Pid) else None

    def __repr__(self) -> str:
        where = f" {self.mfa[0]}.{self.mfa[1]}/{self.mfa[2]}" if self.mfa else ""
        return f"<TraceEvent {self.kind} #PID<0.{self.pid.id}.{self.pid.serial}>{where}>"


class _Undecoded:
    pass


_UNDECODED: Any = _Undecoded()
