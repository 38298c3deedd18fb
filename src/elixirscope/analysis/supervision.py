"""A recording's supervisors: each child across its generations, and the restarts.

The recording knows who spawned whom, when processes started and exited and why, and
their names (registered names and labels). A child is known by its first name, else
by its initial call; the processes a supervisor spawned under the same one are the
generations of one child, oldest first, and each generation after the first is a
restart. Children without a name that share an initial call (a DynamicSupervisor's
workers) are one row: the recording has no child ids.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from elixirscope.recording.results import Process

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

_SUPERVISOR_CALLS = (":supervisor.", ":supervisor2.")


@dataclass(frozen=True, slots=True)
class Generation:
    pid: str
    spawned: float | None  # seconds from the recording's start
    exited: float | None
    exit_reason: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "spawned": self.spawned, "exited": self.exited,
                "exit_reason": self.exit_reason}


@dataclass(frozen=True, slots=True)
class ChildHistory:
    child: str
    generations: tuple[Generation, ...]

    @property
    def restarts(self) -> int:
        return len(self.generations) - 1

    def as_dict(self) -> dict[str, Any]:
        return {"child": self.child, "restarts": self.restarts,
                "generations": [generation.as_dict() for generation in self.generations]}


@dataclass(frozen=True, slots=True)
class SupervisorHistory:
    pid: str
    name: str
    children: tuple[ChildHistory, ...] = field(default=())

    def restart_history(self) -> list[tuple[float | None, str, str | None]]:
        """``(when, child, why the generation before ended)`` for every restart, in order."""
        restarts = [(later.spawned, child.child, earlier.exit_reason)
                    for child in self.children
                    for earlier, later in zip(child.generations, child.generations[1:],
                                              strict=False)]
        return sorted(restarts, key=lambda item: (item[0] is None, item[0] or 0.0))

    def as_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "name": self.name,
                "children": [child.as_dict() for child in self.children],
                "restarts": [{"at": at, "child": child, "after": reason}
                             for at, child, reason in self.restart_history()]}


def recorded_supervisors(rec: RecordingQueries, name: str | None = None) -> list[SupervisorHistory]:
    """The supervisors whose children the recording saw start (the one ``name`` names:
    a name, label or pid), with each child's generations."""
    processes = rec.processes()
    by_pid = {process.pid: process for process in processes}
    children: dict[str, list[Process]] = defaultdict(list)
    for process in processes:
        if process.parent is not None:
            children[process.parent].append(process)
    # A child that was running before the recording began has no recorded parent: it is
    # the first generation of the child of the same name.
    orphans = {process.name: process for process in processes
               if process.parent is None and process.name is not None}
    found = []
    for parent_pid, spawned in children.items():
        parent = by_pid.get(parent_pid)
        names = parent.names if parent is not None else ()
        if name is not None:
            if name not in names and parent_pid not in (name, f"#PID{name}"):
                continue
        elif parent is None or not (parent.initial_call or "").startswith(_SUPERVISOR_CALLS):
            continue
        earlier = [orphans[child] for child in {process.name for process in spawned}
                   if child in orphans]
        found.append(SupervisorHistory(parent_pid, names[0] if names else "",
                                       _children(earlier + spawned)))
    return found


def _children(spawned: list[Process]) -> tuple[ChildHistory, ...]:
    groups: dict[str, list[Process]] = defaultdict(list)
    for process in spawned:
        groups[process.name or process.initial_call or "?"].append(process)
    return tuple(
        ChildHistory(child, tuple(
            Generation(process.pid, process.spawned, process.exited, process.exit_reason)
            for process in sorted(members, key=_started)))
        for child, members in groups.items())


def _started(process: Process) -> float:
    """When a generation started; one running before the recording comes first."""
    return float("-inf") if process.spawned is None else process.spawned
