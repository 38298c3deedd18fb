"""Slow queries: Ecto queries far slower than the recording's typical query, per SQL
text, with what each ran for (the request, or the LiveView or channel callback, that
waited on it). Read from a framework trace (``record --phoenix``).

A query text is slow when one of its runs took at least ``MIN_MS`` and ``FACTOR`` times
the median of all queries; the texts that cost the most time come first."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import TYPE_CHECKING

from elixirscope.analysis.framework import Query, has_framework_spans, queries, sql_summary
from elixirscope.diagnosis.finding import Evidence, Finding
from elixirscope.recording.results import duration_text

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

MIN_MS = 100.0
FACTOR = 10.0
MIN_QUERIES = 5
MAX_FINDINGS = 3


def detect(rec: RecordingQueries) -> list[Finding]:
    if not has_framework_spans(rec):
        return []
    found = [query for query in queries(rec) if query.duration_ms is not None]
    if len(found) < MIN_QUERIES:
        return []
    median = statistics.median(query.duration_ms or 0.0 for query in found)
    bar = max(MIN_MS, FACTOR * median)
    slow: dict[str, list[Query]] = defaultdict(list)
    for query in found:
        if (query.duration_ms or 0.0) >= bar:
            slow[query.sql].append(query)
    findings = [_finding(runs, [q for q in found if q.sql == sql], median)
                for sql, runs in slow.items()]
    return sorted(findings, key=lambda finding: -finding.weight)[:MAX_FINDINGS]


def _finding(slow: list[Query], all_runs: list[Query], median_ms: float) -> Finding:
    slow = sorted(slow, key=lambda query: -(query.duration_ms or 0.0))
    worst = slow[0]
    text = sql_summary(worst.sql, 120)
    table = f" on {worst.source}" if worst.source else ""
    contexts = sorted({query.request for query in slow if query.request})
    where = f", in {contexts[0]}" + (f" and {len(contexts) - 1} more" if len(contexts) > 1
                                     else "") if contexts else ""
    if len(all_runs) == 1:
        times = "it took"
    elif len(slow) == len(all_runs):
        times = f"all {len(slow)} runs took"
    else:
        times = f"{len(slow)} of its {len(all_runs)} runs took"
    worst_ms = worst.duration_ms or 0.0
    title = (f"Slow query{table}: `{text}`: {times} up to "
             f"{duration_text(worst_ms / 1000)}{where}; the median query takes "
             f"{duration_text(median_ms / 1000)}")
    details = [f"at {query.start:.3f} s on {query.pid}: "
               f"{duration_text((query.duration_ms or 0) / 1000)} (queue "
               f"{query.queue_ms or 0:.1f} ms, database {query.query_ms or 0:.1f} ms)"
               for query in slow[:5]]
    return Finding(
        kind="slow_query", title=title, severity="warning", start=worst.start, end=None,
        processes=tuple(sorted({query.pid for query in slow}))[:10],
        evidence=Evidence(spans=tuple(query.span_id for query in slow[:20])),
        next_commands=("elixirscope queries REC --slowest 10",
                       f"elixirscope range REC {worst.span_id}"),
        details=tuple(details),
        weight=sum(query.duration_ms or 0.0 for query in slow) / 1000)
