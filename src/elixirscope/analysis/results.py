"""What the analysis queries return. Times are seconds, as in ``recording.results``;
``as_dict()`` gives a JSON-ready dict (payloads as Elixir prints them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from elixirscope.elixir_format import inspect
from elixirscope.recording.results import Event, Message, Span


@dataclass(frozen=True)
class FunctionStats:
    """Calls of one function. ``acc_time`` adds up the calls' durations, leaving out
    calls made directly by the same function (a direct recursion counts once);
    ``own_time`` is the time not spent in traced callees. ``open`` counts calls that
    never ended in the recording (not in the times)."""

    module: str
    function: str
    arity: int
    count: int
    open: int
    acc_time: float
    own_time: float
    min: float
    mean: float
    p50: float
    p95: float
    p99: float
    max: float
    pid: str | None = None  # with by="process": the process these calls ran in
    pid_name: str | None = None  # with by="name": the name (or pid) they ran under
    processes: int = 1  # how many processes made these calls

    @property
    def mfa(self) -> str:
        return f"{self.module}.{self.function}/{self.arity}"

    def as_dict(self) -> dict[str, Any]:
        return {"mfa": self.mfa, **{key: getattr(self, key) for key in (
            "module", "function", "arity", "count", "open", "acc_time", "own_time", "min",
            "mean", "p50", "p95", "p99", "max", "pid", "pid_name", "processes")}}


@dataclass(frozen=True)
class RepeatedTree:
    """A call subtree (the same function with the same arguments and result, and the
    same callees, each with the same arguments, results and callees) that ran
    ``count`` times. ``size`` is the number of calls in one copy; ``wasted`` is
    ``(count - 1) * mean``: the time the repeats took. ``example`` is the first copy;
    ``span_ids`` every copy's root span (at most ``max_span_ids`` of them)."""

    example: Span
    count: int
    size: int
    mean: float
    total: float
    wasted: float
    span_ids: tuple[int, ...]

    @property
    def mfa(self) -> str:
        return self.example.mfa

    def as_dict(self) -> dict[str, Any]:
        return {"mfa": self.mfa, "count": self.count, "size": self.size, "mean": self.mean,
                "total": self.total, "wasted": self.wasted, "span_ids": list(self.span_ids),
                "args": self.example.args, "result": self.example.result,
                "example": self.example.as_dict()}


@dataclass(frozen=True)
class TracebackLink:
    """One process's part of a traceback: ``event`` (the event asked about, or the
    send of the message that the previous link's handler served), the traced calls it
    happened in, innermost first, and the message that started the outermost of them
    (``None``: the origin, or a process that was not traced for messages)."""

    event: Event
    stack: tuple[Span, ...]
    message: Message | None
    cause: str | None = None  # for an exit: what made the process exit, in words

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.event.as_dict(),
                "stack": [span.as_dict() for span in self.stack],
                "message": None if self.message is None else self.message.as_dict(),
                "cause": self.cause}


@dataclass(frozen=True)
class Traceback:
    """The calls and messages that led to ``links[0].event``, nearest first. ``origin``
    says in words where the chain starts."""

    links: tuple[TracebackLink, ...]
    origin: str

    def as_dict(self) -> dict[str, Any]:
        return {"links": [link.as_dict() for link in self.links], "origin": self.origin}


@dataclass(frozen=True)
class RangeNode:
    """A traced call and what happened inside it: the calls it made (``children``, in
    order) and the other events it saw directly (``events``: sends, receives, spawns
    ...). ``cut`` is true when ``max_depth`` or ``limit`` left callees out."""

    span: Span
    children: tuple[RangeNode, ...] = ()
    events: tuple[Event, ...] = ()
    cut: bool = False

    def walk(self) -> list[RangeNode]:
        """This node and every node under it, depth first, in call order."""
        found = [self]
        for child in self.children:
            found.extend(child.walk())
        return found

    def as_dict(self) -> dict[str, Any]:
        return {"span": self.span.as_dict(), "cut": self.cut,
                "events": [event.as_dict() for event in self.events],
                "children": [child.as_dict() for child in self.children]}


@dataclass(frozen=True)
class RerunResult:
    """A recorded call run again on a live node. ``status``: ``equal`` (the same result
    as recorded, or the same exception), ``differs`` (another result; ``differences``
    says where) or ``raised`` (an exception now, where the recording has a result or
    another exception; ``error`` says which)."""

    span: Span
    status: str
    recorded: Any = field(repr=False)
    result: Any = field(repr=False)
    differences: tuple[str, ...] = ()
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"span_id": self.span.span_id, "mfa": self.span.mfa, "status": self.status,
                "args": self.span.args, "recorded": inspect(self.recorded),
                "result": None if self.status == "raised" else inspect(self.result),
                "differences": list(self.differences), "error": self.error}
