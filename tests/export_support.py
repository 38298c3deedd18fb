"""Format checks shared by the export tests: the Trace Event Format's rules, OTLP
requests parsed by the protobuf JSON mapping, span parents."""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def check_chrome_trace(doc: dict[str, Any]) -> None:
    """The Trace Event Format's rules that the Perfetto and chrome://tracing importers
    rely on, and proper nesting of complete events on each track."""
    assert doc["displayTimeUnit"] == "ns"
    assert isinstance(doc["metadata"], dict)
    events = doc["traceEvents"]
    processes = {e["pid"] for e in events if e["ph"] == "M" and e["name"] == "process_name"}
    threads = {(e["pid"], e["tid"]) for e in events
               if e["ph"] == "M" and e["name"] == "thread_name"}
    flows: dict[int, list[dict[str, Any]]] = defaultdict(list)
    tracks: dict[tuple[int, int], list[tuple[int, int]]] = defaultdict(list)
    for event in events:
        ph = event["ph"]
        assert isinstance(event["pid"], int)
        assert isinstance(event["tid"], int)
        if ph == "M":
            assert event["name"] in ("process_name", "thread_name")
            assert isinstance(event["args"]["name"], str) and event["args"]["name"]
            continue
        assert isinstance(event["ts"], (int, float)) and event["ts"] >= 0
        assert isinstance(event["name"], str) and isinstance(event["cat"], str)
        assert event["pid"] in processes
        assert (event["pid"], event["tid"]) in threads
        if ph == "X":
            assert isinstance(event["dur"], (int, float)) and event["dur"] >= 0
            # Importers read microseconds and round to whole nanoseconds.
            tracks[(event["pid"], event["tid"])].append(
                (round(event["ts"] * 1000), round(event["dur"] * 1000)))
        elif ph == "i":
            assert event["s"] in ("g", "p", "t")
        elif ph in ("s", "f"):
            flows[event["id"]].append(event)
        else:
            raise AssertionError(f"unexpected phase {ph}")
    for pair in flows.values():
        assert [e["ph"] for e in pair] == ["s", "f"]
        start, finish = pair
        assert "bp" not in finish
        assert (start["cat"], start["name"]) == (finish["cat"], finish["name"])
        assert finish["ts"] >= start["ts"]
    for slices in tracks.values():
        stack: list[int] = []
        for ts, dur in sorted(slices, key=lambda s: (s[0], -s[1])):
            while stack and ts >= stack[-1]:
                stack.pop()
            if stack:
                assert ts + dur <= stack[-1], "a slice overlaps its parent's end"
            stack.append(ts + dur)


def check_otlp_request(request: dict[str, Any]) -> None:
    """Parses as an ExportTraceServiceRequest once the hex ids are base64 (the protobuf
    JSON mapping of bytes; OTLP/JSON writes them as hex)."""
    converted = json.loads(json.dumps(request))
    for resource in converted["resourceSpans"]:
        for scope in resource["scopeSpans"]:
            for span in scope["spans"]:
                assert len(span["traceId"]) == 32 and len(span["spanId"]) == 16
                assert int(span["traceId"], 16) and int(span["spanId"], 16)
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
                for link in span.get("links", []):
                    for key in ("traceId", "spanId"):
                        link[key] = base64.b64encode(bytes.fromhex(link[key])).decode()
    message = json_format.Parse(json.dumps(converted), ExportTraceServiceRequest())
    assert len(message.resource_spans) == len(request["resourceSpans"])


def all_spans(lines: list[dict[str, Any]]) -> dict[int, tuple[dict[str, Any], dict[str, Any]]]:
    """span id -> (span, resource attributes as a dict)."""
    found = {}
    for line in lines:
        for resource in line["resourceSpans"]:
            attributes = attribute_dict(resource["resource"]["attributes"])
            assert resource["scopeSpans"][0]["scope"]["name"] == "elixirscope"
            for span in resource["scopeSpans"][0]["spans"]:
                found[int(span["spanId"], 16)] = (span, attributes)
    return found


def attribute_dict(attributes: list[dict[str, Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for attribute in attributes:
        (kind, value), = attribute["value"].items()
        if kind == "arrayValue":
            value = [v["stringValue"] for v in value["values"]]
        values[attribute["key"]] = int(value) if kind == "intValue" else value
    return values


def check_parents(spans: dict[int, tuple[dict[str, Any], dict[str, Any]]]) -> None:
    for span, _ in spans.values():
        if "parentSpanId" in span:
            parent, _ = spans[int(span["parentSpanId"], 16)]
            assert parent["traceId"] == span["traceId"]
