"""Latency outliers: calls of a function far slower than its own median in the same
recording, and what each waited on (the slowest call it made inside).

A function needs ``MIN_CALLS`` finished calls to have a median worth comparing with;
a call is an outlier when it took at least ``FACTOR`` times the median,
``TAIL_FACTOR`` times the 95th percentile (a heavy tail is how the function is, not an
outlier) and ``MIN_EXCESS`` more than the median, and outliers are at most
``MAX_SHARE`` of the calls. Calls to other processes (``:gen.call``)
are the waits of their caller, which is reported instead. A call still open when the
recording stopped counts with the time it had run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elixirscope.diagnosis.finding import Evidence, Finding
from elixirscope.recording.results import Span, duration_text, shorten

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

_MEDIANS = """
WITH finished AS (
    SELECT mfa_id, pid_id, duration_ns FROM spans
    WHERE duration_ns IS NOT NULL AND mfa_id NOT IN (SELECT unnest(?::INTEGER[]))
), spread AS (
    SELECT mfa_id, count(DISTINCT pid_id) AS pids FROM finished GROUP BY mfa_id
)
SELECT f.mfa_id, CASE WHEN s.pids > ? THEN NULL ELSE f.pid_id END AS pid_id, count(*),
       quantile_cont(f.duration_ns, 0.5), quantile_cont(f.duration_ns, 0.95),
       quantile_cont(f.duration_ns, 0.99)
FROM finished f JOIN spread s USING (mfa_id)
GROUP BY 1, 2 HAVING count(*) >= ?
"""


def detect(rec: RecordingQueries) -> list[Finding]:
    excluded = [mfa_id for mfa_id, (module, function, arity) in rec.dims.functions.items()
                if (module, function, arity) == (":gen", "call", 4)]
    findings = []
    for mfa_id, pid_id, calls, p50, p95, p99 in rec.con.execute(
            _MEDIANS, [excluded, MANY_PROCESSES, MIN_CALLS]).fetchall():
        threshold = max(p50 * FACTOR, p95 * TAIL_FACTOR, p50 + MIN_EXCESS * 1e9)
        module, function, arity = rec.dims.functions[mfa_id]
        slow = [span for span in rec.spans(module=module, function=f"{function}/{arity}",
                                           pid=pid_id, slowest=int(calls * MAX_SHARE) + 2,
                                           limit=None)
                if (span.duration or span.running_for or 0.0) * 1e9 >= threshold]
        if slow and len(slow) <= calls * MAX_SHARE:
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
