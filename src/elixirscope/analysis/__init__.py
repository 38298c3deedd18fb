"""Analysis queries on a finished recording, in the manner of Erlang Doctor's ``tr``:
tracebacks across processes, call ranges, call statistics with own time, repeated call
trees, value search, stepping and re-running a recorded call.

Each query is a function of one module taking the recording's stored queries
(``RecordingQueries``) first, and importing nothing above them; the public ``Recording``
(``elixirscope.recordings``) has a thin method for each (``rec.call_stats(...)`` and so
on). They work set-based in
the recording's DuckDB tables, so they scale to recordings of millions of events.
"""

from elixirscope.analysis.results import (
    FunctionStats,
    RangeNode,
    RepeatedTree,
    RerunResult,
    Traceback,
    TracebackLink,
)

__all__ = [
    "FunctionStats",
    "RangeNode",
    "RepeatedTree",
    "RerunResult",
    "Traceback",
    "TracebackLink",
]
