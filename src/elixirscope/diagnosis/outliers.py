"""Latency outliers: calls of a function far slower than its own median in the same
recording, and what each waited on (the slowest call it made inside).

A function needs ``MIN_CALLS`` finished calls to have a median worth comparing with;
a call is an outlier when it took at least ``FACTOR`` times the median,
``TAIL_FACTOR`` times the 95th percentile (a heavy tail is how the function is, not an
outlier) and ``MIN_EXCESS`` more than the median, and outliers are at most
``MAX_SHARE`` of the calls. Calls to other processes (``:gen.call``)
are the waits of their caller, which is reported instead; Ecto queries of a framework
trace are compared per SQL text (``slow_queries``). A call still open when the
recording stopped counts with the time it had run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elixirscope.diagnosis.finding import Evidence, Finding
from elixirscope.recording.results import Span, duration_text, shorten
from elixirscope.recording.sql import Where
from elixirscope.tracing.events import FRAMEWORK

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

MIN_CALLS = 20
FACTOR = 10.0
TAIL_FACTOR = 3.0
MIN_EXCESS = 0.05
MAX_SHARE = 0.05
MAX_FINDINGS = 5

# A function is compared with itself per process (a callback of one server), or over
# all processes when many run it (a function each request's process calls).
MANY_PROCESSES = 10

_OUTLIERS = """
WITH finished AS (
    SELECT mfa_id, pid_id, duration_ns FROM spans
    WHERE duration_ns IS NOT NULL AND mfa_id NOT IN (SELECT unnest(?::INTEGER[]))
), spread AS (
    SELECT mfa_id, count(DISTINCT pid_id) AS pids FROM finished GROUP BY mfa_id
), stats AS (
    SELECT f.mfa_id, CASE WHEN s.pids > {many} THEN NULL ELSE f.pid_id END AS grp,
           count(*) AS calls, quantile_cont(f.duration_ns, 0.5) AS p50,
           quantile_cont(f.duration_ns, 0.95) AS p95,
           quantile_cont(f.duration_ns, 0.99) AS p99
    FROM finished f JOIN spread s USING (mfa_id)
    GROUP BY 1, 2 HAVING count(*) >= {min_calls}
)
SELECT t.mfa_id, t.grp, t.calls, t.p50, t.p99, s.span_id, {lasted} AS took
FROM spans s JOIN stats t ON s.mfa_id = t.mfa_id AND (t.grp IS NULL OR s.pid_id = t.grp)
WHERE {lasted} >= greatest(t.p50 * {factor}, t.p95 * {tail}, t.p50 + {excess})
ORDER BY t.mfa_id, t.grp, took DESC
"""


def detect(rec: RecordingQueries) -> list[Finding]:
    excluded = [mfa_id for mfa_id, (module, function, arity) in rec.dims.functions.items()
                if (module, function, arity) == (":gen", "call", 4)]
    # An Ecto query of a framework trace stands for every SQL text of its repo: its
    # slow runs are compared per text by the slow-query detector instead.
    excluded += [row[0] for row in rec.con.execute(
        f"SELECT DISTINCT e.mfa_id FROM events e JOIN functions f USING (mfa_id) "
        f"WHERE e.kind = 1 AND e.flags & {FRAMEWORK} != 0 AND f.function = 'query' "
        f"AND f.arity = 2").fetchall()]
    sql = _OUTLIERS.format(many=MANY_PROCESSES, min_calls=MIN_CALLS,
                           lasted=rec.lasted_sql(), factor=FACTOR, tail=TAIL_FACTOR,
                           excess=MIN_EXCESS * 1e9)
    groups: dict[tuple[int, int | None], list[int]] = {}
    figures: dict[tuple[int, int | None], tuple[int, float, float]] = {}
    for mfa_id, grp, calls, p50, p99, span_id, _ in rec.con.execute(sql, [excluded]
                                                                     ).fetchall():
        groups.setdefault((mfa_id, grp), []).append(span_id)
        figures[(mfa_id, grp)] = (calls, p50, p99)
    findings = []
    for key, span_ids in groups.items():
        calls, p50, p99 = figures[key]
        if len(span_ids) > calls * MAX_SHARE:
            continue  # that many slow calls are how the function is
        where = Where()
        where.within("s.span_id", span_ids[:50])
        slow = sorted(rec.spans_where(where, "s.span_id", None),
                      key=lambda span: -(span.duration or span.running_for or 0.0))
        findings.append(_finding(rec, slow, calls, p50 / 1e9, p99 / 1e9))
    # The functions whose outliers cost the most time, not a list of every tail.
    return sorted(findings, key=lambda finding: -finding.weight)[:MAX_FINDINGS]


def _finding(rec: RecordingQueries, slow: list[Span], calls: int, p50: float,
             p99: float) -> Finding:
    first = slow[0]
    took = [span.duration or span.running_for or 0.0 for span in slow]
    times = "once" if len(slow) == 1 else f"{len(slow)} times"
    waited = _waited_on(rec, first)
    where = f" on {first.pid_name or first.pid}" if len({s.pid_id for s in slow}) == 1 else ""
    title = (f"{first.mfa}{where} took {duration_text(max(took))} {times} in {calls:,} calls, "
             f"{max(took) / p50 if p50 else 0:,.0f}x its median of {duration_text(p50)}"
             + (f"; the slowest waited {waited}" if waited else ""))
    details = [f"span {span.span_id} at {span.start:.3f} s on {span.pid_name or span.pid}: "
               f"{duration_text(duration)}" + ("" if span.outcome != "open" else
                                                " (still running at the end)")
               for span, duration in zip(slow[:10], took, strict=False)]
    details.append(f"median {duration_text(p50)}, p99 {duration_text(p99)}")
    return Finding(
        kind="latency_outlier", title=title,
        severity="warning", start=min(span.start for span in slow),
        end=max(span.start + duration for span, duration in zip(slow, took, strict=True)),
        processes=tuple(dict.fromkeys(span.pid_name or span.pid for span in slow)),
        evidence=Evidence(spans=tuple(span.span_id for span in slow[:50])),
        next_commands=(f"elixirscope range REC {first.span_id} --max-depth 3",
                       f"elixirscope spans REC --module {first.module} "
                       f"--function {first.function}/{first.arity} --slowest 10"),
        details=tuple(details), weight=sum(took))


def _waited_on(rec: RecordingQueries, span: Span) -> str | None:
    """The slowest call made inside ``span``, as ``320 ms in :gen.call(...)``."""
    inner = rec.con.execute(
        "SELECT span_id FROM spans WHERE parent_span_id = ? "
        "ORDER BY coalesce(duration_ns, 9e18) DESC LIMIT 1", [span.span_id]).fetchone()
    if inner is None:
        return None
    child = rec.span(inner[0])
    took = child.duration or child.running_for or 0.0
    if took < 0.5 * (span.duration or span.running_for or 0.0):
        return None
    return f"{duration_text(took)} in {shorten(child.call, 120)}"
