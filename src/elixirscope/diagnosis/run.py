"""Running the detectors over a recording: every finding, worst first, numbered."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from elixirscope.diagnosis.detectors import DETECTORS
from elixirscope.diagnosis.finding import Finding
from elixirscope.errors import QueryError

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries


def diagnose(rec: RecordingQueries, kinds: set[str] | None = None) -> list[Finding]:
    """The findings of every detector (of those in ``kinds``), worst first, numbered
    from 1. A detector that needs what the recording does not hold finds nothing."""
    found: list[Finding] = []
    for kind, detect in DETECTORS:
        if kinds is not None and kind not in kinds:
            continue
        try:
            found.extend(detect(rec))
        except QueryError:
            continue
    found.sort(key=Finding.rank)
    return [dataclasses.replace(finding, finding_id=number)
            for number, finding in enumerate(found, start=1)]
