"""``call_range``: everything between a call and its return (or exception, or its
process's exit) as a tree of the traced calls inside it, optionally with the messages
sent and received in each. Calls on other processes are not part of a range (follow
messages with ``traceback`` or ``next_event(by="message")``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from elixirscope.analysis.results import RangeNode
from elixirscope.errors import QueryError
from elixirscope.recording import sql
from elixirscope.recording.results import Event, Span
from elixirscope.tracing.events import KIND_CODES

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

MESSAGE_KINDS = ("send", "send_to_dead", "receive")
# Always shown: what changes a process's relations.
LIFE_KINDS = ("spawn", "spawned", "exit", "link", "unlink", "getting_linked",
              "getting_unlinked", "register", "unregister")


def call_range(rec: RecordingQueries, span: Span | int, max_depth: int | None = None,
               messages: bool = False, limit: int = 10_000) -> RangeNode:
    """The tree under ``span`` (a ``Span`` or its id): calls at most ``max_depth``
    levels below it, at most ``limit`` of them (in call order); with ``messages`` the
    sends and receives too. Spawns, exits, links and registrations are always there."""
    root = span if isinstance(span, Span) else rec.span(span)
    if max_depth is not None and max_depth < 0:
        raise QueryError(f"max_depth must be 0 or more, not {max_depth}")
    row = rec.con.execute("SELECT end_seq FROM spans WHERE span_id = ?",
                          [root.span_id]).fetchone()
    end = row[0] if row else None
    where = sql.Where()
    where.add("s.pid_id = ?", root.pid_id)
    where.add("s.span_id > ?", root.span_id)
    if end is not None:
        where.add("s.span_id < ?", end)
    if max_depth is not None:
        where.add("s.depth <= ?", root.depth + max_depth)
    spans = rec.spans_where(where, "s.span_id", limit + 1)
    over_limit = len(spans) > limit
    spans = [root, *spans[:limit]]
    ends = _ends(rec, [s.span_id for s in spans])
    kinds = [*LIFE_KINDS, *(MESSAGE_KINDS if messages else ())]
    clauses = ["pid_id = ?", "seq > ?", "kind IN (SELECT unnest(?::INTEGER[]))"]
    params: list[object] = [root.pid_id, root.span_id, [KIND_CODES[k] for k in kinds]]
    if end is not None:
        clauses.append("seq < ?")
        params.append(end)
    events = [rec.event_of_row(r) for r in rec.event_rows(sql.Where(), "ASC", None, *clauses,
                                                     params=params)]
    return _tree(rec, spans, ends, events, root.depth + max_depth
                 if max_depth is not None else None, over_limit)


def _ends(rec: RecordingQueries, span_ids: list[int]) -> dict[int, int | None]:
    where = sql.Where()
    where.within("span_id", span_ids)
    rows = rec.con.execute(f"SELECT span_id, end_seq FROM spans {where.sql()}",
                           where.params).fetchall()
    return dict(rows)


def _tree(rec: RecordingQueries, spans: list[Span], ends: dict[int, int | None],
          events: list[Event], deepest: int | None, over_limit: bool) -> RangeNode:
    """Each event goes to the innermost span that holds it (by seq); nodes are built
    from the last call to the first, so every child exists before its parent."""
    children: dict[int, list[RangeNode]] = {s.span_id: [] for s in spans}
    inside: dict[int, list[Event]] = {s.span_id: [] for s in spans}
    stack: list[Span] = []
    pending = iter(events)
    event = next(pending, None)

    def settle(until_seq: int | None) -> Event | None:
        nonlocal event
        while event is not None and (until_seq is None or event.seq < until_seq):
            while stack and (ends[stack[-1].span_id] or 1 << 62) < event.seq:
                stack.pop()
            inside[stack[-1].span_id].append(event)
            event = next(pending, None)
        return event

    for span in spans:
        settle(span.span_id)
        while stack and (ends[stack[-1].span_id] or 1 << 62) < span.span_id:
            stack.pop()
        stack.append(span)
    settle(None)
    cut = _has_hidden_children(rec, [s.span_id for s in spans if s.depth == deepest])
    nodes: dict[int, RangeNode] = {}
    for span in reversed(spans):
        node = RangeNode(span, tuple(reversed(children[span.span_id])),
                         tuple(inside[span.span_id]),
                         span.span_id in cut or (over_limit and span is spans[0]))
        nodes[span.span_id] = node
        if span is not spans[0] and span.parent_span_id in children:
            children[span.parent_span_id].append(node)
    return nodes[spans[0].span_id]


def _has_hidden_children(rec: RecordingQueries, span_ids: list[int]) -> set[int]:
    if not span_ids:
        return set()
    where = sql.Where()
    where.within("parent_span_id", span_ids)
    rows = rec.con.execute(f"SELECT DISTINCT parent_span_id FROM spans {where.sql()}",
                           where.params).fetchall()
    return {row[0] for row in rows}
