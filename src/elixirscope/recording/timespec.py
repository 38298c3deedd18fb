"""Points in time as queries take them, turned into wall-clock nanoseconds.

A time is either relative to the start of the recording or absolute:

* a number (``1.5``), or a string holding one with an optional unit (``"1.5"``,
  ``"1.5s"``, ``"250ms"``, ``"40us"``): seconds (or that unit) from the start;
* a ``datetime``, or an ISO-8601 string (``"2024-05-01T12:00:03.250"``,
  ``"2024-05-01 12:00:03Z"``): that wall-clock moment. A time without a zone is local
  time, as ``datetime.timestamp`` takes it.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TypeAlias

from elixirscope.errors import ElixirScopeError

TimeSpec: TypeAlias = float | int | datetime | str

_RELATIVE = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*(s|ms|us|µs|ns)?\s*$")
_UNIT_NS = {None: 1e9, "s": 1e9, "ms": 1e6, "us": 1e3, "µs": 1e3, "ns": 1.0}


class TimeSpecError(ElixirScopeError):
    """A time that is neither a number of seconds nor an ISO-8601 date and time."""


def wall_ns(spec: TimeSpec, start_wall_ns: int) -> int:
    """The wall-clock nanoseconds ``spec`` stands for, in a recording that started at
    ``start_wall_ns``."""
    if isinstance(spec, bool):
        raise TimeSpecError(f"{spec!r} is not a time")
    if isinstance(spec, int | float):
        return start_wall_ns + round(spec * 1e9)
    if isinstance(spec, datetime):
        return _datetime_ns(spec)
    if not isinstance(spec, str):
        raise TimeSpecError(f"{spec!r} is not a time")
    relative = duration_seconds(spec)
    if relative is not None:
        return start_wall_ns + round(relative * 1e9)
    try:
        moment = datetime.fromisoformat(spec.strip())
    except ValueError:
        raise TimeSpecError(f"{spec!r} is not a time: give seconds from the start (1.5, "
                            "250ms) or an ISO-8601 date and time") from None
    return _datetime_ns(moment)


def duration_seconds(text: str) -> float | None:
    """The seconds ``"1.5"``, ``"1.5s"``, ``"250ms"`` or ``"40us"`` stand for; ``None``
    if ``text`` is not a number with an optional unit."""
    match = _RELATIVE.match(text)
    if match is None:
        return None
    return float(match.group(1)) * _UNIT_NS[match.group(2)] / 1e9


def seconds(wall: int | None, start_wall_ns: int) -> float | None:
    """Seconds from the start of the recording to ``wall`` (nanoseconds)."""
    return None if wall is None else (wall - start_wall_ns) / 1e9


def _datetime_ns(moment: datetime) -> int:
    whole = int(moment.replace(microsecond=0).timestamp())
    return whole * 1_000_000_000 + moment.microsecond * 1000
