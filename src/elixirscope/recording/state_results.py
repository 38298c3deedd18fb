"""What the time-travel queries return: transitions, field changes, replays.

States are rebuilt on access (``state``), from the nearest whole state before them
and the deltas after it; everything else a transition says is read with it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from elixirscope.elixir_format import inspect
from elixirscope.recording.results import CauseStep, Event
from elixirscope.recording.state_diff import MISSING, StateDiff


@dataclass(frozen=True)
class StateTransition:
    """One entry of a process's state history.

    ``callback`` is the function that produced it (``handle_call``, ``init``, a
    gen_statem state function...), or ``initial`` (read when tracing started),
    ``exit`` (the process ended; ``reason`` says why). ``kind`` is how the recording
    holds it: whole, delta, same, terminate, too_large, unavailable or exit.
    ``known`` is false where records were lost or a state was too large: ``delta``
    still says what changed, ``state`` raises ``QueryError``."""

    index: int
    seq: int
    pid: str
    pid_id: int
    pid_name: str | None
    time: float
    ts: int
    callback: str
    mfa: str | None
    kind: str
    known: bool
    span_id: int | None
    _state: Callable[[], Any] = field(repr=False, compare=False)
    _delta: Callable[[], StateDiff] = field(repr=False, compare=False)
    _trigger: Callable[[], Event | None] = field(repr=False, compare=False)
    _reason: Any = field(default=MISSING, repr=False, compare=False)

    @cached_property
    def state(self) -> Any:
        """The whole state after this transition."""
        return self._state()

    @cached_property
    def state_text(self) -> str:
        return inspect(self.state, limit=None, printable_limit=None)

    @cached_property
    def delta(self) -> StateDiff:
        """What this transition changed, against the transition before it."""
        return self._delta()

    @cached_property
    def trigger(self) -> Event | None:
        """What led to the callback: the receive of the message it served (``text``
        prints it), or, where the process's messages were not traced, the callback's
        call (its arguments hold the request); ``None`` for a state read at the start."""
        return self._trigger()

    @property
    def reason(self) -> Any:
        """The exit reason of a terminate or exit entry (``None`` otherwise)."""
        return None if self._reason is MISSING else self._reason

    def as_dict(self, *, with_state: bool = False) -> dict[str, Any]:
        trigger = self.trigger
        out: dict[str, Any] = {
            "index": self.index, "seq": self.seq, "pid": self.pid, "pid_name": self.pid_name,
            "time": self.time, "callback": self.callback, "mfa": self.mfa, "kind": self.kind,
            "known": self.known, "span_id": self.span_id,
            "trigger": None if trigger is None else trigger.text,
            "trigger_seq": None if trigger is None else trigger.seq,
            "delta": [change.as_dict() for change in self.delta.changes],
            "reason": None if self._reason is MISSING else inspect(self._reason, limit=None),
        }
        if with_state:
            out["state"] = self.state_text if self.known else None
        return out


@dataclass(frozen=True)
class FieldChange:
    """One change of a field: its value before and after (``MISSING`` where the
    field did not exist or was not known), and the transition that made it."""

    path: tuple[Any, ...]
    old: Any = field(repr=False)
    new: Any = field(repr=False)
    transition: StateTransition = field(repr=False)

    @property
    def time(self) -> float:
        return self.transition.time

    def as_dict(self) -> dict[str, Any]:
        transition = self.transition
        trigger = transition.trigger
        return {
            "path": inspect(list(self.path)), "time": transition.time, "seq": transition.seq,
            "pid": transition.pid, "callback": transition.callback,
            "old": None if self.old is MISSING else inspect(self.old, limit=None),
            "new": None if self.new is MISSING else inspect(self.new, limit=None),
            "trigger": None if trigger is None else trigger.text,
            "trigger_seq": None if trigger is None else trigger.seq,
        }


@dataclass(frozen=True)
class Replay:
    """The state of a process at a moment, the transition that made it, and how that
    came about: its causal chain, nearest first."""

    state: Any = field(repr=False)
    transition: StateTransition
    causes: tuple[CauseStep, ...]

    def as_dict(self) -> dict[str, Any]:
        return {"state": inspect(self.state, limit=None, printable_limit=None),
                "transition": self.transition.as_dict(),
                "causes": [step.as_dict() for step in self.causes]}
