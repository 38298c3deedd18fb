"""A recording's spans as OpenTelemetry traces: OTLP/JSON, one
``ExportTraceServiceRequest`` per line (the layout the Collector's ``otlpjsonfile``
receiver reads; each line can also be POSTed to an OTLP/HTTP ``/v1/traces``).

One BEAM process is one resource (``service.name`` is its node). A trace is one causal
tree: the trace id holds the span's ``correlation_id`` after eight bytes that stand
for the recording, so exporting the same recording twice gives the same ids and two
recordings never share one. Span ids are the spans' own ids (the ``seq`` of their
call). A span's parent is its caller; a process's outermost span whose triggering
message was sent from a span of the same trace has that span as parent, so a request
reads as one tree across processes. The triggering message is also a link to the
span that sent it.

The JSON is put together from pieces encoded once (a function's attributes, a
process's resource), which is most of the speed of this export.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from elixirscope.beam_names import module_display
from elixirscope.elixir_format import inspect
from elixirscope.errors import ElixirScopeError
from elixirscope.etf import Atom, decode
from elixirscope.recording.export import (
    SPAN_COLUMNS,
    SPAN_ENDS,
    SPAN_JOINS,
    Source,
    Texts,
    is_crash,
    mfa_text,
)
from elixirscope.tracing.events import KIND_CODES
from elixirscope.version import __version__

SPANS_PER_REQUEST = 1000
SPAN_KIND_INTERNAL = 1
STATUS_CODE_ERROR = 2

_RETURN = KIND_CODES["return"]
_EXCEPTION = KIND_CODES["exception"]
_EXIT = KIND_CODES["exit"]
_EXCEPTION_KEY = Atom("__exception__")
_STRUCT_KEY = Atom("__struct__")
_MESSAGE_KEY = Atom("message")
_CACHE_ENTRIES = 1 << 16

_SQL = f"""{SPAN_ENDS}
SELECT {SPAN_COLUMNS},
       caller.correlation_id, caller.span_id,
       m.send_span_id, sender.correlation_id, me.payload, me.flags, me.node_id
{SPAN_JOINS}
LEFT JOIN spans caller ON caller.span_id = s.parent_span_id
LEFT JOIN messages m ON m.message_id = s.trigger_message_id
LEFT JOIN spans sender ON sender.span_id = m.send_span_id
LEFT JOIN events me ON me.seq = COALESCE(m.send_seq, m.receive_seq)
ORDER BY s.pid_id, s.node_id, s.span_id"""

_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def write_otlp(source: Source, target: Path, *, text: bool = True) -> dict[str, int]:
    """Writes the traces to ``target``; returns how many spans and requests it holds."""
    exporter = _Exporter(source, Texts(source.nodes, enabled=text))
    spans = requests = 0
    with target.open("w", encoding="utf-8") as out:
        for line, count in exporter.requests():
            out.write(line)
            out.write("\n")
            requests += 1
            spans += count
    return {"spans": spans, "requests": requests}


def trace_tag(source: Source) -> int:
    """64 bits that stand for the recording in its trace ids."""
    first = source.one("SELECT MIN(hlc) FROM events")[0]
    identity = json.dumps([source.meta.get("created_wall_ns"), sorted(source.nodes.values()),
                           first])
    tag = int.from_bytes(hashlib.blake2b(identity.encode(), digest_size=8).digest(), "big")
    return tag or 1


class _Exporter:
    def __init__(self, source: Source, texts: Texts) -> None:
        self.source = source
        self.texts = texts
        self.tag = f"{trace_tag(source):016x}"
        self.resources = self._resources()
        self.scope = _json({"name": "elixirscope", "version": __version__})
        self._heads: dict[tuple[Any, ...], tuple[str, str]] = {}

    def requests(self) -> Iterator[tuple[str, int]]:
        """Request lines of about ``SPANS_PER_REQUEST`` spans, grouped by process, with
        the number of spans in each."""
        groups: list[str] = []
        spans: list[str] = []
        pending = 0
        current: tuple[int, int] | None = None
        for chunk in self.source.rows(_SQL):
            for row in chunk:
                process = (row[2], row[1])
                if process != current or pending >= SPANS_PER_REQUEST:
                    if spans:
                        groups.append(self._group(current, spans))
                        spans = []
                    if pending >= SPANS_PER_REQUEST:
                        yield '{"resourceSpans":[' + ",".join(groups) + "]}", pending
                        groups, pending = [], 0
                    current = process
                spans.append(self._span(row))
                pending += 1
        if spans:
            groups.append(self._group(current, spans))
        if groups:
            yield '{"resourceSpans":[' + ",".join(groups) + "]}", pending

    def _group(self, process: tuple[int, int] | None, spans: list[str]) -> str:
        resource = self.resources.get(process, "[]") if process is not None else "[]"
        return ('{"resource":{"attributes":' + resource + '},"scopeSpans":[{"scope":'
                + self.scope + ',"spans":[' + ",".join(spans) + "]}]}")

    def _resources(self) -> dict[tuple[int, int], str]:
        """The resource attributes of each (pid id, node id) that has spans; the node is
        the one the spans were recorded on."""
        runtime = {node_id: release for chunk in self.source.rows(
            "SELECT node_id, otp_release FROM nodes WHERE otp_release IS NOT NULL")
            for node_id, release in chunk}
        resources = {}
        sql = """
            SELECT t.pid_id, t.node_id, COALESCE(p.pid, '#PID<?>'), p.names, p.initial_call
            FROM (SELECT DISTINCT pid_id, node_id FROM spans) t
            LEFT JOIN processes p ON p.pid_id = t.pid_id"""
        for chunk in self.source.rows(sql):
            for pid_id, node_id, pid, names, initial_call in chunk:
                attributes = [_attr("service.name", self.source.nodes.get(node_id, "")),
                              _attr("beam.pid", pid),
                              _attr("process.runtime.name", "BEAM")]
                if node_id in runtime:
                    attributes.append(_attr("process.runtime.version", runtime[node_id]))
                if names:
                    attributes.append({"key": "beam.registered_names", "value": {
                        "arrayValue": {"values": [{"stringValue": n} for n in names]}}})
                if initial_call:
                    attributes.append(_attr("beam.initial_call", initial_call))
                resources[(pid_id, node_id)] = _json(attributes)
        return resources

    def _head(self, module: str, function: str, arity: int, depth: int,
              outcome: str) -> tuple[str, str]:
        """The span's name and kind, and the attributes that come from its function,
        depth and outcome: JSON encoded once for each combination."""
        key = (module, function, arity, depth, outcome)
        head = self._heads.get(key)
        if head is None:
            attributes = _json([_attr("code.namespace", module),
                                _attr("code.function", function),
                                _attr("beam.arity", arity), _attr("beam.depth", depth),
                                _attr("beam.outcome", outcome)])
            head = (f',"name":{_json(mfa_text(module, function, arity))},'
                    f'"kind":{SPAN_KIND_INTERNAL}', attributes[1:-1])
            if len(self._heads) >= _CACHE_ENTRIES:
                self._heads.clear()
            self._heads[key] = head
        return head

    def _span(self, row: tuple[Any, ...]) -> str:
        (span_id, node_id, _pid_id, module, function, arity, depth, _parent, start, end,
         outcome, wall_offset, call_payload, call_flags, end_kind, end_payload, end_flags,
         trigger, correlation, caller_correlation, caller_id, send_span_id,
         sender_correlation, message_payload, message_flags, message_node) = row
        key = correlation if correlation is not None else span_id
        name_kind, static = self._head(module, function, arity, depth, outcome)
        parent = _same_trace(caller_id, caller_correlation, key)
        if parent is None and depth == 1:
            parent = _same_trace(send_span_id, sender_correlation, key)
        parts = [f'{{"traceId":"{self.tag}{key:016x}","spanId":"{span_id:016x}"']
        if parent is not None:
            parts.append(f',"parentSpanId":"{parent:016x}"')
        parts.append(f'{name_kind},"startTimeUnixNano":"{start + wall_offset}",'
                     f'"endTimeUnixNano":"{end + wall_offset}","attributes":[{static}')
        extra: dict[str, Any] = {}
        attributes = self._text_attributes(extra, node_id, call_payload, call_flags,
                                           end_kind, end_payload, end_flags, end + wall_offset)
        if trigger is not None:
            message = self.texts.term(message_payload, message_node, message_flags or 0)
            if message is not None:
                attributes.append(_attr("beam.trigger_message", message))
            if send_span_id is not None:
                sender_key = (sender_correlation if sender_correlation is not None
                              else send_span_id)
                link: dict[str, Any] = {"traceId": f"{self.tag}{sender_key:016x}",
                                        "spanId": f"{send_span_id:016x}"}
                if message is not None:
                    link["attributes"] = [_attr("beam.message", message)]
                extra["links"] = [link]
        if attributes:
            parts.append("," + _json(attributes)[1:-1])
        parts.append("]")
        if extra:
            parts.append("," + _json(extra)[1:-1])
        parts.append("}")
        return "".join(parts)

    def _text_attributes(self, extra: dict[str, Any], node_id: int, call_payload: bytes,
                         call_flags: int, end_kind: int | None, end_payload: bytes | None,
                         end_flags: int | None, end_wall: int) -> list[dict[str, Any]]:
        """The attributes with the call's text, and the exception event and status
        (into ``extra``) of a call that raised or whose process crashed."""
        attributes: list[dict[str, Any]] = []
        call_args = self.texts.args(call_payload, node_id, call_flags)
        if call_args:
            attributes.append(_attr("beam.args", call_args))
        end_text = self.texts.term(end_payload, node_id, end_flags or 0)
        if end_kind == _RETURN and end_text is not None:
            attributes.append(_attr("beam.result", end_text))
        elif end_kind == _EXCEPTION:
            kind, message = _exception(end_payload, self.source.nodes.get(node_id))
            extra["events"] = [{"timeUnixNano": str(end_wall), "name": "exception",
                                "attributes": [_attr("exception.type", kind),
                                               _attr("exception.message", message)]}]
            extra["status"] = {"code": STATUS_CODE_ERROR, "message": message}
        elif end_kind == _EXIT:
            if end_text is not None:
                attributes.append(_attr("beam.exit_reason", end_text))
            if is_crash(end_payload):
                extra["status"] = {"code": STATUS_CODE_ERROR, "message": "the process exited"
                                   + (f": {end_text}" if end_text is not None else "")}
        return attributes


def _same_trace(span_id: int | None, correlation: int | None, key: int) -> int | None:
    if span_id is None:
        return None
    return span_id if (correlation if correlation is not None else span_id) == key else None


def _exception(payload: bytes | None, node: str | None) -> tuple[str, str]:
    """``exception.type`` and ``exception.message`` of a ``{class, reason}`` payload:
    the exception's module and message for an Elixir exception, else the class and
    the reason."""
    try:
        value = decode(payload) if payload else None
    except ElixirScopeError:
        return "error", "undecodable exception"
    if not (isinstance(value, tuple) and len(value) == 2):
        return "error", inspect(value, local_node=node)
    kind, reason = value
    if isinstance(reason, dict) and reason.get(_EXCEPTION_KEY) is True:
        module = reason.get(_STRUCT_KEY)
        message = reason.get(_MESSAGE_KEY)
        return (module_display(str(module)) if module else str(kind),
                message.decode(errors="replace") if isinstance(message, bytes)
                else inspect(reason, local_node=node))
    return str(kind), inspect(reason, local_node=node)


def _attr(key: str, value: str | int) -> dict[str, Any]:
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": value}}
