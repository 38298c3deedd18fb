"""A recording as a Chrome Trace Event Format JSON file, for the Perfetto UI
(ui.perfetto.dev) and chrome://tracing.

Each node is a process (``pid`` = node id) and each BEAM process a thread (``tid`` =
pid id) named by its pid and registered names. Spans are complete events (``X``);
spans that never ended are drawn to their process's last event. Exits, spawns and
sends to dead processes are instant events (``i``). A message that was both sent and
received is a flow from the sender's track at the send to the receiver's track at the
receive. Times are microseconds (nanosecond decimals) since the recording's first
event, in wall-clock terms so several nodes line up.

The file is written as it is read, one chunk of rows at a time.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

from elixirscope.recording.export import (
    SPAN_COLUMNS,
    SPAN_ENDS,
    SPAN_JOINS,
    Source,
    Texts,
    cut,
    is_crash,
    mfa_text,
)
from elixirscope.tracing.events import KIND_CODES
from elixirscope.version import __version__

MESSAGE_NAME_CHARS = 80

_EXIT = KIND_CODES["exit"]
_SPAWN = KIND_CODES["spawn"]
_SEND_TO_DEAD = KIND_CODES["send_to_dead"]
_EXCEPTION = KIND_CODES["exception"]
_RETURN = KIND_CODES["return"]

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"),
                           check_circular=False).encode


def write_perfetto(source: Source, target: Path, *, text: bool = True) -> dict[str, int]:
    """Writes the trace to ``target``; returns how many events of each kind it holds."""
    texts = Texts(source.nodes, enabled=text)
    origin = source.one("SELECT COALESCE(MIN(ts + wall_offset), 0) FROM events")[0]
    counts: Counter[str] = Counter()
    with target.open("w", encoding="utf-8") as out:
        out.write('{"traceEvents":[\n')
        first = True
        for part, events in (("tracks", _tracks(source)), ("spans", _spans(source, texts, origin)),
                             ("instants", _instants(source, texts, origin)),
                             ("flows", _flows(source, texts, origin))):
            for event in events:
                if not first:
                    out.write(",\n")
                out.write(_encode(event))
                first = False
                counts[part] += 1
        out.write("\n],\n")
        _trailer(out, source, origin, counts)
    counts["flows"] //= 2
    return dict(counts)


def _trailer(out: TextIO, source: Source, origin: int, counts: Counter[str]) -> None:
    metadata = {
        "exporter": f"elixirscope {__version__}",
        "recording": source.path.name,
        "nodes": sorted(source.nodes.values()),
        "origin_wall_ns": origin,
        "time": "microseconds since origin_wall_ns (Unix nanoseconds)",
        "spans": counts["spans"],
        "instants": counts["instants"],
        "messages": counts["flows"] // 2,
    }
    out.write('"displayTimeUnit":"ns",\n"metadata":')
    out.write(_encode(metadata))
    out.write("}\n")


def _tracks(source: Source) -> Iterator[dict[str, Any]]:
    for node_id, name in sorted(source.nodes.items()):
        yield {"ph": "M", "name": "process_name", "pid": node_id, "tid": 0,
               "args": {"name": name}}
    # The node of a track is the node whose events it shows.
    sql = """
        SELECT t.pid_id, t.node_id, COALESCE(p.pid, '#PID<?>'), p.names
        FROM (SELECT DISTINCT node_id, pid_id FROM events) t
        LEFT JOIN processes p ON p.pid_id = t.pid_id
        ORDER BY t.pid_id, t.node_id"""
    for chunk in source.rows(sql):
        for pid_id, node_id, pid, names in chunk:
            label = " ".join([pid, *(names or [])])
            yield {"ph": "M", "name": "thread_name", "pid": node_id, "tid": pid_id,
                   "args": {"name": label}}


def _spans(source: Source, texts: Texts, origin: int) -> Iterator[dict[str, Any]]:
    sql = f"{SPAN_ENDS} SELECT {SPAN_COLUMNS} {SPAN_JOINS} ORDER BY s.span_id"
    for chunk in source.rows(sql):
        for (span_id, node_id, pid_id, module, function, arity, _depth, _parent, start,
             end, outcome, wall_offset, call_payload, call_flags, end_kind, end_payload,
             end_flags, _trigger, _correlation) in chunk:
            args: dict[str, Any] = {"span_id": span_id, "outcome": outcome}
            call_args = texts.args(call_payload, node_id, call_flags)
            if call_args:
                args["args"] = call_args
            if end_kind is not None:
                key = ("result" if end_kind == _RETURN else
                       "exception" if end_kind == _EXCEPTION else "exit_reason")
                _put(args, key, texts.term(end_payload, node_id, end_flags))
            yield {"ph": "X", "name": mfa_text(module, function, arity), "cat": "call",
                   "pid": node_id, "tid": pid_id,
                   "ts": (start + wall_offset - origin) / 1000, "dur": (end - start) / 1000,
                   "args": args}


def _instants(source: Source, texts: Texts, origin: int) -> Iterator[dict[str, Any]]:
    sql = f"""
        SELECT e.seq, e.node_id, e.pid_id, e.kind, e.flags, e.ts + e.wall_offset, e.payload,
               e.target, o.pid, f.module, f.function, f.arity
        FROM events e
        LEFT JOIN pids o ON o.pid_id = e.other_pid_id
        LEFT JOIN functions f ON f.mfa_id = e.mfa_id
        WHERE e.kind IN ({_EXIT}, {_SPAWN}, {_SEND_TO_DEAD})
        ORDER BY e.seq"""
    for chunk in source.rows(sql):
        for (seq, node_id, pid_id, kind, flags, wall, payload, target, other, module,
             function, arity) in chunk:
            args: dict[str, Any] = {"seq": seq}
            if kind == _EXIT:
                name = "crash" if is_crash(payload) else "exit"
                _put(args, "reason", texts.term(payload, node_id, flags))
            elif kind == _SPAWN:
                name = f"spawn {other}"
                args["child"] = other
                if module is not None:
                    args["mfa"] = mfa_text(module, function, arity)
                _put(args, "args", texts.args(payload, node_id, flags))
            else:
                to = other or target
                name = f"send to dead {to}"
                args["to"] = to
                _put(args, "message", texts.term(payload, node_id, flags))
            yield {"ph": "i", "s": "t", "name": name, "cat": "process", "pid": node_id,
                   "tid": pid_id, "ts": (wall - origin) / 1000, "args": args}


def _flows(source: Source, texts: Texts, origin: int) -> Iterator[dict[str, Any]]:
    sql = """
        SELECT m.message_id, se.node_id, se.pid_id, se.ts + se.wall_offset,
               re.node_id, re.pid_id, re.ts + re.wall_offset, se.payload, se.flags
        FROM messages m
        JOIN events se ON se.seq = m.send_seq
        JOIN events re ON re.seq = m.receive_seq
        ORDER BY m.message_id"""
    for chunk in source.rows(sql):
        for (message_id, send_node, sender, sent, receive_node, receiver, received, payload,
             flags) in chunk:
            text = texts.term(payload, send_node, flags)
            name = cut(text, MESSAGE_NAME_CHARS) if text is not None else "message"
            yield {"ph": "s", "id": message_id, "name": name, "cat": "message",
                   "pid": send_node, "tid": sender, "ts": (sent - origin) / 1000}
            # Without "bp": "e" the arrow ends on the next slice of the receiver, the
            # handler, rather than on a slice open at delivery (usually none: the
            # receive happens in the untraced loop of the process).
            yield {"ph": "f", "id": message_id, "name": name, "cat": "message",
                   "pid": receive_node, "tid": receiver, "ts": (received - origin) / 1000}


def _put(args: dict[str, Any], key: str, text: str | None) -> None:
    if text is not None:
        args[key] = text
