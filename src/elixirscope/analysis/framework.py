"""The framework layer of a recording: HTTP requests, Ecto queries and LiveViews.

A framework trace (``Scope.trace_framework``, ``record --phoenix``) records each
request, router dispatch, LiveView callback, channel callback and Ecto query as a span
whose call event carries the FRAMEWORK flag; this module reads them back as the views
a Phoenix developer thinks in:

* ``requests``: one per HTTP request (the endpoint's ``call/2`` span), with its route,
  controller action, status, params and the queries made inside it;
* ``queries``: one per Ecto query, with the request it ran in;
* ``repeated_queries``: the same query shape run many times inside one request (N+1);
* ``liveviews``: per LiveView process, its callbacks with counts and times.
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from elixirscope.analysis.ranges import call_range
from elixirscope.elixir_format import inspect
from elixirscope.etf import Atom
from elixirscope.recording.results import Span
from elixirscope.recording.results import payload_value_or_none as decoded
from elixirscope.recording.sql import Where
from elixirscope.term_json import to_json
from elixirscope.tracing.events import FRAMEWORK

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

__all__ = ["Broadcast", "ChannelTopic", "LiveViewCallbacks", "LiveViewSummary", "Query",
           "QueryShape", "Request", "broadcasts", "channels", "framework_spans",
           "handled_text", "has_framework_spans", "liveviews", "queries", "repeated_queries",
           "requests", "sql_summary", "waterfall"]

_FRAMEWORK_CALLS = ("span_id IN (SELECT seq FROM events WHERE kind = 1 AND "
                    f"flags & {FRAMEWORK} != 0)")
_LIVE_CALLBACKS = ("mount", "handle_params", "handle_event", "handle_info", "render", "update")


@dataclass(frozen=True)
class Query:
    span_id: int
    pid: str
    start: float
    duration_ms: float | None
    repo: str
    sql: str
    params: Any
    source: str | None
    rows: int | None
    queue_ms: float | None
    query_ms: float | None
    decode_ms: float | None
    outcome: str
    request_span_id: int | None = None
    request: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "params": to_json(self.params)}


@dataclass(frozen=True)
class Request:
    span_id: int
    pid: str
    pid_id: int
    start: float
    duration_ms: float | None
    method: str
    path: str
    route: str | None
    status: int | None
    action: str | None
    params: Any
    outcome: str
    exception: str | None
    queries: list[Query] = field(default_factory=list)
    raised_in: str | None = None  # the innermost application frame of the exception
    stack: tuple[str, ...] = ()  # the exception's stack, innermost first

    @property
    def query_ms(self) -> float:
        return sum(q.duration_ms or 0.0 for q in self.queries)

    @property
    def label(self) -> str:
        return f"{self.method} {self.route or self.path}"

    def as_dict(self) -> dict[str, Any]:
        data = {key: value for key, value in asdict(self).items() if key != "queries"}
        return {**data, "params": to_json(self.params), "query_count": len(self.queries),
                "query_ms": round(self.query_ms, 3),
                "queries": [query.as_dict() for query in self.queries]}


@dataclass(frozen=True)
class QueryShape:
    """One SQL text run several times inside single requests (an N+1)."""

    sql: str
    source: str | None
    runs: int
    requests: int
    most_in_one_request: int
    total_ms: float
    example_request: str | None
    example_request_span_id: int | None
    example_action: str | None = None
    example_request_ms: float | None = None  # the worst request's whole duration
    example_query_ms: float = 0.0  # this text's time inside the worst request
    example_query_spans: tuple[int, ...] = ()
    example_start: float | None = None
    example_pid: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LiveViewCallbacks:
    callback: str
    name: str | None  # the event of handle_event, the message tag of handle_info
    count: int
    total_ms: float
    max_ms: float
    failures: int


@dataclass(frozen=True)
class LiveViewSummary:
    pid: str
    view: str
    connected: bool
    first: float
    last: float
    state_changes: int
    callbacks: list[LiveViewCallbacks]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def has_framework_spans(rec: RecordingQueries) -> bool:
    """Whether the recording holds any span of the framework layer."""
    return bool(rec.scalar(f"SELECT count(*) > 0 FROM (SELECT 1 FROM events WHERE kind = 1 "
                           f"AND flags & {FRAMEWORK} != 0 LIMIT 1)"))


def framework_spans(rec: RecordingQueries, function: str | None = None,
                    arity: int | None = None) -> list[Span]:
    """The framework layer's spans, in time order (of one function name if given)."""
    where = Where()
    where.add(_FRAMEWORK_CALLS)
    if function is not None:
        where.add("s.mfa_id IN (SELECT mfa_id FROM functions WHERE function = ?"
                  + (" AND arity = ?)" if arity is not None else ")"),
                  *([function] if arity is None else [function, arity]))
    return rec.spans_where(where, "s.start_ts, s.span_id", None)


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if value is None or value == Atom("nil"):
        return None
    return str(value)


def _field(value: Any, key: str) -> Any:
    return value.get(Atom(key)) if isinstance(value, dict) else None


def _first_arg(span: Span) -> Any:
    args = decoded(span.args_payload)
    return args[0] if isinstance(args, list) and args else None


def _ms(span: Span) -> float | None:
    return None if span.duration is None else span.duration * 1000


def _query(span: Span) -> Query:
    args = decoded(span.args_payload)
    result = decoded(span.result_payload)
    sql, params = [*args, None, None][:2] if isinstance(args, list) else (None, None)

    def us(key: str) -> float | None:
        value = _field(result, key)
        return value / 1000 if isinstance(value, int) else None

    rows = _field(result, "rows")
    outcome = _field(result, "outcome")
    return Query(span_id=span.span_id, pid=span.pid, start=span.start, duration_ms=_ms(span),
                 repo=span.module, sql=_text(sql) or "", params=params,
                 source=_text(_field(result, "source")),
                 rows=rows if isinstance(rows, int) else None, queue_ms=us("queue_us"),
                 query_ms=us("query_us"), decode_ms=us("decode_us"),
                 outcome=(str(outcome[0]) if isinstance(outcome, tuple) else
                          str(outcome) if outcome is not None else span.outcome))


_RUNTIME_MODULES = (":erlang", ":elixir", ":lists", ":maps", "Kernel", "Enum", "Map")


def _frame_text(frame: Any) -> str | None:
    if not (isinstance(frame, tuple) and len(frame) == 4):
        return None
    module, function, arity, location = frame
    arity = len(arity) if isinstance(arity, list) else arity
    where = f"{inspect(module)}.{function}/{arity}"
    if isinstance(location, list):
        info = {str(k): v for k, v in location if isinstance(k, Atom)}
        file, line = info.get("file"), info.get("line")
        if file is not None and line is not None:
            file = bytes(file).decode() if isinstance(file, list | bytes) else str(file)
            where += f" ({file}:{line})"
    return where


def _failure(span: Span | None) -> tuple[str | None, str | None, tuple[str, ...]]:
    """What an exception span raised (``error: :badarith``), where (the innermost frame
    of its stack outside the runtime: ``Shop.Catalog.place_order/2
    (lib/shop/catalog.ex:93)``) and its whole stack."""
    if span is None or span.outcome != "exception":
        return None, None, ()
    value = decoded(span.result_payload)
    if not (isinstance(value, tuple) and len(value) >= 2):
        return span.result, None, ()
    kind, reason = value[0], value[1]
    if isinstance(reason, dict) and Atom("reason") in reason:  # an unwrapped WrapperError
        reason = reason[Atom("reason")]
    stack = value[2] if len(value) > 2 and isinstance(value[2], list) else []
    frames = tuple(text for text in map(_frame_text, stack) if text is not None)
    raised_in = next((text for text in frames
                      if not text.startswith(tuple(m + "." for m in _RUNTIME_MODULES))), None)
    return f"{kind}: {inspect(reason)}", raised_in, frames


def requests(rec: RecordingQueries, *, route: str | None = None, status: int | None = None,
             slowest: int | None = None) -> list[Request]:
    """The HTTP requests, in time order (the ``slowest`` N, slowest first, if given);
    ``route`` matches the route pattern or the path (``*`` as a wildcard), ``status``
    the response status (``5`` for every 5xx)."""
    found = list(rec.cached("framework.requests", lambda: _all_requests(rec)))
    if route is not None:
        pattern = re.compile("^" + ".*".join(map(re.escape, route.split("*"))) + "$")
        found = [r for r in found if pattern.match(r.route or "") or pattern.match(r.path)]
    if status is not None:
        found = [r for r in found if r.status is not None and
                 (r.status == status or (status < 10 and r.status // 100 == status))]
    if slowest is not None:
        found = sorted(found, key=lambda r: -(r.duration_ms or float("inf")))[:slowest]
    return found


def _all_requests(rec: RecordingQueries) -> list[Request]:
    if not has_framework_spans(rec):
        return []
    spans = framework_spans(rec)
    children: dict[int, list[Span]] = defaultdict(list)
    for span in spans:
        if span.parent_span_id is not None:
            children[span.parent_span_id].append(span)
    by_pid: dict[str, list[Query]] = defaultdict(list)
    for span in spans:
        if span.function == "query" and span.arity == 2:
            by_pid[span.pid].append(_query(span))
    query_starts = {pid: [query.start for query in queries] for pid, queries in by_pid.items()}
    found = []
    for span in spans:
        if span.function != "call" or span.arity != 2:
            continue
        info = _first_arg(span)
        if not (isinstance(info, dict) and Atom("method") in info):
            continue
        dispatch = next((child for child in children.get(span.span_id, [])
                         if child.function != "query"), None)
        fields = _first_arg(dispatch) if dispatch is not None else None
        result = decoded(span.result_payload)
        code = _field(result, "status")
        if code is None and dispatch is not None:
            code = _field(decoded(dispatch.result_payload), "status")
        end = span.end if span.end is not None else float("inf")
        failure = _failure(dispatch) if dispatch is not None and \
            dispatch.outcome == "exception" else _failure(span)
        # Queries in time order per process (the spans come sorted by start).
        of_pid = by_pid.get(span.pid, [])
        starts = query_starts.get(span.pid, [])
        inside = of_pid[bisect.bisect_left(starts, span.start):
                        bisect.bisect_right(starts, end)]
        request = Request(
            span_id=span.span_id, pid=span.pid, pid_id=span.pid_id, start=span.start,
            duration_ms=_ms(span),
            method=_text(_field(info, "method")) or "?", path=_text(_field(info, "path")) or "?",
            route=_text(_field(fields, "route")),
            status=code if isinstance(code, int) else None,
            action=(f"{dispatch.module}.{dispatch.function}" if dispatch is not None else None),
            params=_field(fields, "params"),
            outcome=span.outcome,
            exception=failure[0], raised_in=failure[1], stack=failure[2],
            queries=[])
        label = request.label
        request.queries.extend(replace(q, request_span_id=span.span_id, request=label)
                               for q in inside)
        found.append(request)
    return found


_PIPELINE_ARGS = [Atom("$conn"), Atom("$opts")]


def waterfall(rec: RecordingQueries, span_id: int, *, max_rows: int = 500
              ) -> list[dict[str, Any]]:
    """A request (or any span) as a waterfall: it and every traced call inside it,
    depth first, each with its offset and duration (ms) from the request's start, its
    kind (request, dispatch, pipeline, query, live, call) and a label (the SQL of a
    query, the route of a dispatch)."""
    tree = call_range(rec, span_id, 8, False, max_rows)
    root = tree.span
    rows = []
    for node in tree.walk()[:max_rows]:
        span = node.span
        framework = span.span_id in _framework_ids(rec, [n.span.span_id for n in tree.walk()])
        if span.function == "query" and span.arity == 2 and framework:
            query = _query(span)
            kind, label = "query", f"{query.source or 'sql'}: {sql_summary(query.sql, 120)}"
        elif span.span_id == root.span_id and span.function == "call" and framework:
            info = _first_arg(span)
            kind = "request"
            label = f"{_text(_field(info, 'method'))} {_text(_field(info, 'path'))}"
        elif framework and span.depth == root.depth + 1 and _field(_first_arg(span), "route"):
            kind, label = "dispatch", (f"{_short_module(span.module)}.{span.function} "
                                       f"{_text(_field(_first_arg(span), 'route'))}")
        elif decoded(span.args_payload) == _PIPELINE_ARGS:
            kind, label = "pipeline", (f"{_short_module(span.module)}.{span.function} "
                                       "(plug pipeline)")
        elif framework:
            name = handled_text(span.function, _handled_name(span))
            kind, label = "live", f"{span.module}.{span.function}" + (f" {name}" if name
                                                                     else "")
        else:
            kind, label = "call", span.mfa
        end = span.end if span.end is not None else None
        rows.append({"span_id": span.span_id, "pid_id": span.pid_id,
                     "depth": span.depth - root.depth, "kind": kind, "label": label,
                     "offset_ms": (span.start - root.start) * 1000,
                     "duration_ms": None if end is None else (end - span.start) * 1000,
                     "outcome": span.outcome})
    return rows


def _short_module(module: str) -> str:
    """``ShopWeb.ProductController`` -> ``ProductController`` (a waterfall is narrow)."""
    return module.rsplit(".", 1)[-1] if not module.startswith(":") else module


def _framework_ids(rec: RecordingQueries, span_ids: list[int]) -> set[int]:
    if not span_ids:
        return set()
    rows = rec.con.execute(
        f"SELECT seq FROM events WHERE seq IN (SELECT unnest(?::BIGINT[])) AND kind = 1 "
        f"AND flags & {FRAMEWORK} != 0", [span_ids]).fetchall()
    return {row[0] for row in rows}


def _context(span: Span, around: list[Span]) -> str | None:
    """What a query ran for: the outermost framework span of its process around it (a
    LiveView callback with its event, a channel's handle_in ...)."""
    enclosing = [other for other in around if other.span_id != span.span_id
                 and other.function != "query" and other.start <= span.start
                 and (other.end is None or other.end >= span.start)]
    if not enclosing:
        return None
    top = min(enclosing, key=lambda other: (other.depth, other.start))
    name = handled_text(top.function, _handled_name(top))
    return f"{top.module}.{top.function}" + (f" {name}" if name else "")


def queries(rec: RecordingQueries, *, slowest: int | None = None) -> list[Query]:
    """Every Ecto query, in time order, with the request (or the LiveView or channel
    callback) it ran in (the ``slowest`` N, slowest first, if given)."""
    found = list(rec.cached("framework.queries", lambda: _all_queries(rec)))
    if slowest is not None:
        found = sorted(found, key=lambda q: -(q.duration_ms or 0.0))[:slowest]
    return found


def _all_queries(rec: RecordingQueries) -> list[Query]:
    inside = {query.span_id: query for request in requests(rec) for query in request.queries}
    spans = framework_spans(rec) if inside or has_framework_spans(rec) else []
    by_pid: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        by_pid[span.pid].append(span)
    found = []
    for span in spans:
        if span.function != "query" or span.arity != 2:
            continue
        query = inside.get(span.span_id)
        if query is None:
            query = _query(span)
            context = _context(span, by_pid[span.pid])
            if context is not None:
                query = replace(query, request=context)
        found.append(query)
    return found


def repeated_queries(rec: RecordingQueries, *, min_runs: int = 3) -> list[QueryShape]:
    """Query texts run at least ``min_runs`` times inside one request: the N+1 pattern
    (one query per row of an earlier one), the worst first."""
    runs: dict[str, list[tuple[Request, Query]]] = defaultdict(list)
    for request in requests(rec):
        for query in request.queries:
            runs[query.sql].append((request, query))
    shapes = []
    for sql_text, pairs in runs.items():
        per_request: dict[int, int] = defaultdict(int)
        for request, _ in pairs:
            per_request[request.span_id] += 1
        most = max(per_request.values())
        if most < min_runs:
            continue
        worst = max(per_request, key=lambda span_id: per_request[span_id])
        example = next(request for request, _ in pairs if request.span_id == worst)
        mine = [query for request, query in pairs if request.span_id == worst]
        shapes.append(QueryShape(
            sql=sql_text, source=pairs[0][1].source, runs=len(pairs),
            requests=len(per_request), most_in_one_request=most,
            total_ms=sum(query.duration_ms or 0.0 for _, query in pairs),
            example_request=example.label, example_request_span_id=example.span_id,
            example_action=example.action, example_request_ms=example.duration_ms,
            example_query_ms=sum(query.duration_ms or 0.0 for query in mine),
            example_query_spans=tuple(query.span_id for query in mine),
            example_start=example.start, example_pid=example.pid))
    return sorted(shapes, key=lambda shape: (-shape.most_in_one_request, -shape.total_ms))


def _handled_name(span: Span) -> str | None:
    args = decoded(span.args_payload)
    if not isinstance(args, list) or not args:
        return None
    first = args[0]
    if span.function == "handle_event":
        return _text(first)
    if span.function == "handle_info":
        tag = first[0] if isinstance(first, tuple) and first else first
        return str(tag) if isinstance(tag, Atom) else None
    return None


_SELECT_LIST = re.compile(r"^(SELECT )(.{40,}?)( FROM )", re.IGNORECASE | re.DOTALL)


def sql_summary(sql: str, width: int = 160) -> str:
    """A query on one line, a long select list elided (what it reads and filters on
    is what tells queries apart), cut to ``width``."""
    text = _SELECT_LIST.sub(r"\1…\3", " ".join(sql.split()), count=1)
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass(frozen=True)
class Broadcast:
    span_id: int
    pid: str
    start: float
    topic: str
    message: Any
    reached: tuple[str, ...]  # at most 50 named
    count: int

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "message": to_json(self.message)}


@dataclass(frozen=True)
class ChannelTopic:
    """One topic: who joined it, what they pushed, what was broadcast on it."""

    topic: str
    channel: str | None
    joins: list[tuple[str, float, str]]  # pid, time, result
    handled: dict[str, int]  # handle_in event -> count
    broadcasts: list[Broadcast]
    replies: list[tuple[str, str, Any]] = field(default_factory=list)  # event, status, payload

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "channel": self.channel,
                "joins": [{"pid": p, "at": t, "result": r} for p, t, r in self.joins],
                "handled": self.handled,
                "broadcasts": [b.as_dict() for b in self.broadcasts],
                "replies": [{"event": e, "status": st, "payload": to_json(p)}
                            for e, st, p in self.replies]}


def broadcasts(rec: RecordingQueries) -> list[Broadcast]:
    """Every Phoenix.PubSub broadcast, with the processes subscribed to its topic then
    (those it reached)."""
    found = []
    for span in framework_spans(rec):
        if span.module != "Phoenix.PubSub":
            continue
        args, result = decoded(span.args_payload), decoded(span.result_payload)
        if not (isinstance(args, list) and len(args) == 2):
            continue
        reached = _field(result, "reached")
        count = _field(result, "count")
        found.append(Broadcast(
            span_id=span.span_id, pid=span.pid, start=span.start,
            topic=_text(args[0]) or "?", message=args[1],
            reached=tuple(inspect(pid) for pid in reached) if isinstance(reached, list) else (),
            count=count if isinstance(count, int) else 0))
    return found


def channels(rec: RecordingQueries) -> list[ChannelTopic]:
    """Per channel topic: the joins (process, time, result), the handle_in events
    and the broadcasts with whom they reached; PubSub topics with broadcasts only
    (a LiveView's subscriptions) are listed too."""
    topics: dict[str, dict[str, Any]] = {}

    def entry(topic: str) -> dict[str, Any]:
        return topics.setdefault(topic, {"channel": None, "joins": [], "handled": {},
                                         "broadcasts": [], "replies": []})

    last_pushed: dict[str, str] = {}  # pid -> the event of its last handle_in
    for span in framework_spans(rec):
        args = decoded(span.args_payload)
        if (span.module, span.function) == ("Phoenix.Channel.Server", "reply") \
                and isinstance(args, list) and args:
            reply = decoded(span.result_payload)
            status, payload = reply if isinstance(reply, tuple) and len(reply) == 2 \
                else (reply, None)
            entry(_text(args[0]) or "?")["replies"].append(
                (last_pushed.get(span.pid, "?"), str(status), payload))
            continue
        if span.function == "join" and span.arity == 3 and isinstance(args, list) and args:
            topic = entry(_text(args[0]) or "?")
            topic["channel"] = span.module
            topic["joins"].append((span.pid, span.start, inspect(decoded(span.result_payload))))
        elif span.function == "handle_in" and span.arity == 3 and isinstance(args, list):
            result = decoded(span.result_payload)
            topic = entry(_text(_field(result, "topic")) or "?")
            topic["channel"] = span.module
            event = _text(args[0]) or "?"
            topic["handled"][event] = topic["handled"].get(event, 0) + 1
            last_pushed[span.pid] = event
    for broadcast in broadcasts(rec):
        entry(broadcast.topic)["broadcasts"].append(broadcast)
    return [ChannelTopic(topic=name, **fields) for name, fields in sorted(topics.items())]


def handled_text(callback: str, name: str | None) -> str | None:
    """What a callback handled as Elixir writes it: an event ``"add"``, a message
    tag ``:price_changed``."""
    if name is None:
        return None
    return f":{name}" if callback.endswith("handle_info") else f'"{name}"'


def liveviews(rec: RecordingQueries) -> list[LiveViewSummary]:
    """Each LiveView process: its view, whether it was connected (a websocket) or a
    first render over HTTP, its callbacks (counts and times per event) and how often
    its assigns changed."""
    where = Where()
    where.add(f"({_FRAMEWORK_CALLS} OR s.mfa_id IN (SELECT mfa_id FROM functions "
              "WHERE function = 'handle_info' AND arity = 2))")
    spans = rec.spans_where(where, "s.start_ts, s.span_id", None)
    views: dict[str, dict[str, Any]] = {}
    for span in spans:
        if span.function == "mount" and span.arity == 3:
            views.setdefault(span.pid, {"view": span.module, "spans": [], "http": False})
    for span in spans:
        entry = views.get(span.pid)
        if entry is None or span.function not in _LIVE_CALLBACKS:
            continue
        if span.function == "call":
            continue
        entry["spans"].append(span)
        if span.depth > 1 and span.function == "mount":
            entry["http"] = True
    summaries = []
    for pid, entry in views.items():
        groups: dict[tuple[str, str | None], list[Span]] = defaultdict(list)
        for span in entry["spans"]:
            callback = (span.function if span.module == entry["view"]
                        else f"{span.module}.{span.function}")
            groups[(callback, _handled_name(span))].append(span)
        callbacks = [LiveViewCallbacks(
            callback=callback, name=name, count=len(group),
            total_ms=sum(_ms(s) or 0.0 for s in group),
            max_ms=max((_ms(s) or 0.0) for s in group),
            failures=sum(1 for s in group if s.outcome == "exception"))
            for (callback, name), group in groups.items()]
        changes = rec.scalar(
            "SELECT count(*) FROM events WHERE kind = 17 AND pid_id = "
            f"(SELECT pid_id FROM pids WHERE pid = '{pid}' LIMIT 1)") or 0
        spans_of = entry["spans"]
        summaries.append(LiveViewSummary(
            pid=pid, view=entry["view"], connected=not entry["http"],
            first=min(s.start for s in spans_of), last=max(s.start for s in spans_of),
            state_changes=int(changes),
            callbacks=sorted(callbacks, key=lambda c: (_LIVE_CALLBACKS.index(c.callback)
                                                       if c.callback in _LIVE_CALLBACKS
                                                       else 99, -c.total_ms))))
    return summaries
