"""``call_stats``: per function, how often it was called and where the time went.

One SQL statement over ``spans``, each call joined with its caller (``parent_span_id``):
own time is the calls' durations minus the durations of the traced calls made directly
inside them; accumulated time adds up the calls' durations except those whose caller
is the same function (a direct recursion counts once, from its outermost call; a
recursion through other traced functions is added at each level); percentiles are
``quantile_cont`` (interpolated).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elixirscope.analysis.results import FunctionStats
from elixirscope.errors import QueryError
from elixirscope.recording import sql

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries
    from elixirscope.recording.timespec import TimeSpec

SORTS = ("acc", "own", "count", "mean", "p50", "p95", "p99", "max")

# {key} is mfa_id; or mfa_id and pid_id for one row per function and process; or mfa_id
# and who (the process's first registered name, else its pid) for one row per function
# and name, every holder of a name together. A call's callees run in its own process,
# so the callees' time groups the same way.
_SQL = """
WITH s AS (
    SELECT s.span_id, s.mfa_id, s.pid_id, s.duration_ns, s.parent_span_id,
           coalesce(pr.names[1], pr.pid) AS who
    FROM spans s LEFT JOIN nodes n USING (node_id)
    LEFT JOIN processes pr ON pr.pid_id = s.pid_id {where}
), up AS (
    SELECT s.mfa_id, s.pid_id, s.who, s.duration_ns, p.mfa_id AS parent_mfa,
           p.duration_ns IS NOT NULL AS parent_closed
    FROM s LEFT JOIN spans p ON p.span_id = s.parent_span_id
), down AS ({children}
), f AS (
    SELECT {key}, count(DISTINCT pid_id) AS processes, count(duration_ns) AS count,
           count(*) - count(duration_ns) AS open,
           coalesce(sum(duration_ns) FILTER (WHERE parent_mfa IS DISTINCT FROM mfa_id), 0)
               AS acc,
           coalesce(sum(duration_ns), 0) AS total,
           min(duration_ns) AS min, avg(duration_ns) AS mean,
           quantile_cont(duration_ns, [0.5, 0.95, 0.99]) AS q, max(duration_ns) AS max
    FROM up GROUP BY {key}
)
SELECT {key}, processes, count, open, acc, total - coalesce(down.child_ns, 0) AS own, min, mean,
       q[1] AS p50, q[2] AS p95, q[3] AS p99, max
FROM f LEFT JOIN down USING ({key}) ORDER BY {sort} DESC NULLS LAST, {key}{limit}
"""
# Time spent in callees, by the caller's function. Without filters every call is in
# ``up`` with its caller; with them, the callees of the chosen calls are read apart.
_ALL_CHILDREN = """
    SELECT parent_mfa AS mfa_id, pid_id, who, sum(duration_ns) AS child_ns FROM up
    WHERE parent_closed AND duration_ns IS NOT NULL GROUP BY parent_mfa, pid_id, who"""
_CHOSEN_CHILDREN = """
    SELECT p.mfa_id, p.pid_id, p.who, sum(c.duration_ns) AS child_ns
    FROM spans c JOIN s p ON p.span_id = c.parent_span_id
    WHERE c.duration_ns IS NOT NULL AND p.duration_ns IS NOT NULL
    GROUP BY p.mfa_id, p.pid_id, p.who"""
_BY = {"function": "mfa_id", "process": "mfa_id, pid_id", "name": "mfa_id, who"}
BYS = tuple(_BY)


def call_stats(rec: RecordingQueries, module: str | None = None, function: str | None = None,
               pid: str | int | None = None, since: TimeSpec | None = None,
               until: TimeSpec | None = None, sort: str = "acc",
               limit: int | None = None, by: str = "function") -> list[FunctionStats]:
    """Per traced function (``by="process"``: per function and process; ``by="name"``:
    per function and registered name, every process that held the name together, and
    per function and pid for processes without one): count,
    accumulated and own time, min/mean/p50/p95/p99/max duration, largest ``sort``
    first (acc, own, count, mean, p50, p95, p99 or max). ``since``/``until`` keep the
    calls that started in the window."""
    if sort not in SORTS:
        raise QueryError(f"sort must be one of {', '.join(SORTS)}, not {sort!r}")
    if by not in _BY:
        raise QueryError(f"by is one of {', '.join(BYS)}, not {by!r}")
    where = sql.Where()
    where.within("s.pid_id", rec.pid_ids(pid) if pid is not None else None)
    where.within("s.mfa_id", rec.mfa_ids(module, function))
    rec.time_range(where, sql.SPAN_START, since, until, raw="s.start_ts")
    children = _CHOSEN_CHILDREN if where.clauses else _ALL_CHILDREN
    if by != "process":
        children = (f"SELECT {_BY[by]}, sum(child_ns) AS child_ns FROM ({children}) "
                    f"GROUP BY {_BY[by]}")
    text = _SQL.format(where=where.sql(), children=children, sort=sort, key=_BY[by],
                       limit=sql.limit_sql(limit))
    dims = rec.dims
    found = []
    for row in rec.con.execute(text, where.params).fetchall():
        keys = 1 if by == "function" else 2
        processes, count, open_, acc, own, low, mean, p50, p95, p99, high = row[keys:]
        module_name, function_name, arity = dims.functions[row[0]]
        pid_id = row[1] if by == "process" else None
        found.append(FunctionStats(processes=processes,
            module=module_name, function=function_name, arity=arity, count=count,
            open=open_, acc_time=acc / 1e9, own_time=own / 1e9, min=_seconds(low),
            mean=_seconds(mean), p50=_seconds(p50), p95=_seconds(p95), p99=_seconds(p99),
            max=_seconds(high), pid=dims.pid(pid_id),
            pid_name=row[1] if by == "name" else dims.name(pid_id)))
    return found


def _seconds(ns: float | None) -> float:
    return 0.0 if ns is None else ns / 1e9
