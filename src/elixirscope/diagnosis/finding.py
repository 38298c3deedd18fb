"""A finding: one thing wrong in a recording, said in one sentence, with its evidence
and the commands that show it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# Worst first; a finding's severity is one of these.
SEVERITIES = ("critical", "error", "warning", "info")


@dataclass(frozen=True)
class Evidence:
    """Ids in the recording: events (seq), spans (span_id), messages (message_id) and
    waits (the span_id of the wait's call)."""

    events: tuple[int, ...] = ()
    spans: tuple[int, ...] = ()
    messages: tuple[int, ...] = ()
    waits: tuple[int, ...] = ()

    def as_dict(self) -> dict[str, list[int]]:
        return {"events": list(self.events), "spans": list(self.spans),
                "messages": list(self.messages), "waits": list(self.waits)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        return cls(**{key: tuple(int(v) for v in data.get(key, ()))
                      for key in ("events", "spans", "messages", "waits")})


@dataclass(frozen=True)
class Finding:
    """``kind`` names the detector (``deadlock``, ``crash_cascade`` ...); ``title`` is
    one sentence that names the modules, functions and message shapes; ``start`` and
    ``end`` are seconds from the recording's start; ``details`` are the supporting
    facts, one per line; ``next_commands`` what to run to see the evidence (``REC``
    stands for the recording's path). ``weight`` orders findings of one severity:
    the time or the number of processes at stake."""

    kind: str
    title: str
    severity: str
    start: float | None
    end: float | None
    processes: tuple[str, ...]
    evidence: Evidence
    next_commands: tuple[str, ...] = ()
    details: tuple[str, ...] = ()
    weight: float = 0.0
    finding_id: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity is one of {', '.join(SEVERITIES)}, not "
                             f"{self.severity!r}")

    def rank(self) -> tuple[int, float, float]:
        """Sort key: worst first, then the heaviest, then the earliest."""
        return (SEVERITIES.index(self.severity), -self.weight,
                self.start if self.start is not None else 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {"finding_id": self.finding_id, "kind": self.kind, "title": self.title,
                "severity": self.severity, "start": self.start, "end": self.end,
                "processes": list(self.processes), "evidence": self.evidence.as_dict(),
                "next_commands": list(self.next_commands), "details": list(self.details),
                "weight": self.weight}
