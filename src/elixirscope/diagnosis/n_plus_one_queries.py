"""N+1 queries: one HTTP request that runs the same SQL text once per row of an
earlier query (``SELECT ... FROM reviews WHERE product_id = $1`` twelve times in
``GET /api/products``). Read from a framework trace (``record --phoenix``): Ecto
queries are parameterized, so one text with different parameters is one shape."""

from __future__ import annotations

from typing import TYPE_CHECKING

from elixirscope.analysis.framework import QueryShape, repeated_queries, sql_summary
from elixirscope.diagnosis.finding import Evidence, Finding

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

MIN_RUNS = 5


def detect(rec: RecordingQueries) -> list[Finding]:
    return [_finding(shape) for shape in repeated_queries(rec, min_runs=MIN_RUNS)]


def _finding(shape: QueryShape) -> Finding:
    where = shape.example_request or "one request"
    if shape.example_action:
        where += f" ({shape.example_action})"
    share = ""
    if shape.example_request_ms:
        share = f", {shape.example_query_ms:.1f} ms of its {shape.example_request_ms:.1f} ms"
    table = f" on {shape.source}" if shape.source else ""
    title = (f"N+1 queries: {where} ran the same query{table} {shape.most_in_one_request} "
             f"times in one request{share}; {shape.runs} runs in {shape.requests} "
             f"request{'s' if shape.requests != 1 else ''} in all")
    span = shape.example_request_span_id
    return Finding(
        kind="n_plus_one_queries", title=title, severity="warning",
        start=shape.example_start, end=None,
        processes=(shape.example_pid,) if shape.example_pid else (),
        evidence=Evidence(spans=((span,) if span is not None else ())
                          + shape.example_query_spans[:20]),
        next_commands=("elixirscope queries REC --repeated",
                       *((f"elixirscope range REC {span} --max-depth 3",)
                         if span is not None else ())),
        details=(f"query: {sql_summary(shape.sql)}",
                 "each run fetches what one query could fetch for all rows "
                 "(a preload, a join or WHERE ... IN)"),
        weight=shape.total_ms / 1000)
