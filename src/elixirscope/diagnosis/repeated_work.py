"""N+1 and repeated work: one call that makes the same call to another process over and
over, one round trip per item (``Store.fetch/1`` called 80 times per
``Catalog.page/1``). Calls are compared by function, their arguments by shape
(``{:fetch, _}``), so the fresh ref and the id of every call do not hide the
repetition."""

from __future__ import annotations

from typing import TYPE_CHECKING

from elixirscope.analysis.shapes import payload_shape, shape
from elixirscope.diagnosis.finding import Evidence, Finding
from elixirscope.elixir_format import inspect
from elixirscope.errors import ETFDecodeError
from elixirscope.recording.results import duration_text, payload_value

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

MIN_FAN_OUT = 10

_FAN_OUT = """
WITH waits AS (
    SELECT span_id, parent_span_id FROM spans WHERE mfa_id IN (SELECT unnest(?::INTEGER[]))
), fan AS (
    SELECT c.parent_span_id AS parent, c.mfa_id AS child_mfa, count(*) AS n,
           sum(coalesce(c.duration_ns, 0)) AS cost, min(c.span_id) AS example
    FROM spans c
    WHERE c.parent_span_id IS NOT NULL
      AND (c.mfa_id IN (SELECT unnest(?::INTEGER[]))
           OR c.span_id IN (SELECT parent_span_id FROM waits))
    GROUP BY 1, 2 HAVING count(*) >= ?
)
SELECT p.mfa_id, f.child_mfa, count(*) AS parents, avg(f.n), max(f.n), sum(f.n),
       sum(f.cost), sum(coalesce(p.duration_ns, 0)), min(f.example),
       list(p.span_id ORDER BY p.span_id)[1:5], min(p.start_ts), max(p.end_ts),
       any_value(p.node_id)
FROM fan f JOIN spans p ON p.span_id = f.parent
GROUP BY 1, 2 ORDER BY sum(f.cost) DESC
"""


def detect(rec: RecordingQueries) -> list[Finding]:
    calls = [mfa_id for mfa_id, (module, function, arity) in rec.dims.functions.items()
             if (module, function, arity) == (":gen", "call", 4)]
    if not calls:
        return []
    rows = rec.con.execute(_FAN_OUT, [calls, calls, MIN_FAN_OUT]).fetchall()
    return [_finding(rec, calls, *row) for row in rows]


def _finding(rec: RecordingQueries, calls: list[int], parent_mfa: int, child_mfa: int,
             parents: int, mean: float, most: int, total: int, cost_ns: int,
             parent_ns: int, example: int, parent_spans: list[int], first_ts: int,
             last_ts: int | None, node_id: int) -> Finding:
    dims = rec.dims
    parent, child = rec.dims.mfa(parent_mfa), rec.dims.mfa(child_mfa)
    callee, request = _round_trip(rec, calls, example)
    per = f"{mean:.0f}" if parents == 1 or most == round(mean) else f"{mean:.0f} (up to {most})"
    cost, whole = cost_ns / 1e9, parent_ns / 1e9
    share = (f"{duration_text(cost)} of the {duration_text(whole)} in {parent}" if whole
             else duration_text(cost))
    title = (f"N+1: {child} called {per} times per {parent} ({parents} call"
             f"{'s' if parents != 1 else ''}), each a call to {callee} with {request}: "
             f"{total:,} round trips, {share}")
    start = dims.at(first_ts, node_id)
    end = dims.at(last_ts, node_id) if last_ts is not None else None
    example_span = rec.span(parent_spans[0])
    return Finding(
        kind="repeated_work", title=title,
        severity="error" if whole and cost >= 0.5 * whole and cost >= 0.1 else "warning",
        start=start, end=end, processes=(example_span.pid_name or example_span.pid,),
        evidence=Evidence(spans=(*parent_spans, example)),
        next_commands=(f"elixirscope range REC {parent_spans[0]} --max-depth 2",
                       f"elixirscope stats REC --module {child.rsplit('.', 1)[0]}"),
        details=(f"{parents} call{'s' if parents != 1 else ''} of {parent}: {total:,} calls "
                 f"of {child}, {duration_text(cost / max(total, 1))} each",),
        weight=cost)


def _round_trip(rec: RecordingQueries, calls: list[int], span_id: int) -> tuple[str, str]:
    """Whom the repeated call calls, and the shape of its request."""
    span = rec.span(span_id)
    if (span.module, span.function, span.arity) != (":gen", "call", 4):
        inner = rec.con.execute(
            "SELECT span_id FROM spans WHERE parent_span_id = ? AND mfa_id IN "
            "(SELECT unnest(?::INTEGER[])) ORDER BY span_id LIMIT 1", [span_id, calls]
        ).fetchone()
        if inner is None:
            return "another process", payload_shape(span.args_payload)
        span = rec.span(inner[0])
    try:
        args = payload_value(span.args_payload)
    except ETFDecodeError:
        return "another process", "_"
    if isinstance(args, list) and len(args) == 4:
        return inspect(args[0], local_node=span.node), shape(args[2])
    return "another process", "_"


