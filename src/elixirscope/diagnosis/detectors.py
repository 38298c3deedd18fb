"""The detectors, in one list: a new detector is one module of this package with a
``detect(rec) -> list[Finding]`` function, and one line here."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from elixirscope.diagnosis import (
    cascade,
    deadlock,
    failed_requests,
    hotspots,
    lost_update,
    n_plus_one_queries,
    outliers,
    overload,
    repeated_work,
    slow_queries,
)
from elixirscope.diagnosis.finding import Finding

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

Detector = Callable[["RecordingQueries"], list[Finding]]

DETECTORS: tuple[tuple[str, Detector], ...] = (
    ("deadlock", deadlock.detect),
    ("crash_cascade", cascade.detect),
    ("failed_request", failed_requests.detect),
    ("overload", overload.detect),
    ("lost_update", lost_update.detect),
    ("repeated_work", repeated_work.detect),
    ("n_plus_one_queries", n_plus_one_queries.detect),
    ("slow_query", slow_queries.detect),
    ("latency_outlier", outliers.detect),
    ("hot_function", hotspots.detect),
)


def version() -> str:
    """Changes whenever the code of the detectors (or of what they import from this
    package) changes: stored findings of another version are recomputed."""
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]
