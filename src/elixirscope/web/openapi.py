"""The OpenAPI 3.1 description of the UI's JSON API (served at ``/api/openapi.json``)."""

from __future__ import annotations

from typing import Any

from elixirscope.version import __version__

_SECONDS = {"type": "number", "description": "seconds from the recording's start"}


def _param(name: str, where: str, schema: dict[str, Any], text: str,
           required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": where, "required": required or where == "path",
            "schema": schema, "description": text}


_PATHS: dict[str, tuple[str, str, list[dict[str, Any]]]] = {
    "/api/info": ("info", "Facts about the recording: path, live or finished, duration, "
                  "nodes and versions, counts, losses (drops), session events (breaker "
                  "trips), what was traced, limits, sampling.", []),
    "/api/rate": ("rate", "Events over the whole recording in at most `bins` bins "
                  "(b: bin numbers, n: events, e: exceptions and exits) plus crash marks.",
                  [_param("bins", "query", {"type": "integer", "default": 800},
                          "how many bins at most")]),
    "/api/lanes": ("lanes", "Every process in timeline order (by node, then a tree of "
                   "who spawned whom): pid, names, initial call, parent, depth in the "
                   "tree, first/last seen, spawned, exited, exit reason, crashed, events.",
                   []),
    "/api/timeline": ("timeline", "A window of the timeline at the level of detail it "
                      "needs. mode=bins: `bins` per lane (b bin numbers of width `bin` "
                      "seconds from 0, n events, e errors) and the spans long enough to "
                      "see; mode=detail: `events` [seq, pid_id, kind, time, mfa_id], "
                      "`spans` [span_id, pid_id, depth, start, end, outcome, mfa_id], "
                      "`messages` [message_id, sender, receiver, sent, received, "
                      "send_seq, receive_seq, to_dead]. Both: `marks` [seq, pid_id, kind, "
                      "time, crash] (spawns, exits, crashes), `functions` {mfa_id: name}, "
                      "`server_ms`.",
                      [_param("t0", "query", _SECONDS, "window start", True),
                       _param("t1", "query", _SECONDS, "window end (after t0)", True),
                       _param("px", "query", {"type": "integer", "default": 1200},
                              "width of the canvas in pixels"),
                       _param("lanes", "query", {"type": "string"},
                              "pid_ids separated by commas (default: all)")]),
    "/api/events/{seq}": ("event", "One event: kind, process, function, time, payload "
                          "printed Elixir-style (`text`), its span, message (sender, "
                          "receiver, times) and causal chain (`causes`, nearest first).",
                          [_param("seq", "path", {"type": "integer"}, "the event's seq")]),
    "/api/spans/{span_id}": ("span", "One traced call: function, arguments, result, "
                             "start, duration, outcome, depth, parent span, call and end "
                             "events, the message that triggered it.",
                             [_param("span_id", "path", {"type": "integer"},
                                     "the span's id (its call event's seq)")]),
    "/api/messages/{message_id}": ("message", "One message: text, sender, receiver, sent, "
                                   "received, handled, queue time, send/receive events, "
                                   "the span that sent it and the one it triggered.",
                                   [_param("message_id", "path", {"type": "integer"},
                                           "the message's id (its send event's seq)")]),
    "/api/search": ("search", "Events matching a search, in time order. The query has "
                    "words `module:M function:F pid:P kind:K text:T`, or bare text: "
                    "`Mod.fun/2` (a function), `#PID<0.1.0>` or a registered name (a "
                    "process), a kind, or else text in the printed payloads.",
                    [_param("q", "query", {"type": "string"}, "the search", True),
                     _param("limit", "query", {"type": "integer", "default": 500},
                            "matches at most (`more` says when there were more)")]),
    "/api/step": ("step", "The next or previous event, message, call or state change "
                  "after `t` (of one process, or of any).",
                  [_param("t", "query", _SECONDS, "from this time", True),
                   _param("pid", "query", {"type": "integer"}, "a pid_id"),
                   _param("what", "query", {"enum": ["event", "message", "call", "state"],
                                            "default": "event"}, "what to step to"),
                   _param("dir", "query", {"enum": ["next", "prev"], "default": "next"},
                          "direction")]),
    "/api/state/{pid_id}/history": ("state_history", "A process's state transitions: "
                                    "index, seq, time, callback, the diff and trigger.",
                                    [_param("pid_id", "path", {"type": "integer"},
                                            "the process")]),
    "/api/state/{pid_id}/at": ("state_at", "A process's state at `t` (Elixir-style), "
                               "the transition that made it and its diff.",
                               [_param("pid_id", "path", {"type": "integer"}, "the process"),
                                _param("t", "query", _SECONDS, "the moment", True)]),
    "/api/state/{pid_id}/diff": ("state_diff", "How a process's state changed between "
                                 "`t1` and `t2`.",
                                 [_param("pid_id", "path", {"type": "integer"},
                                         "the process"),
                                  _param("t1", "query", _SECONDS, "from", True),
                                  _param("t2", "query", _SECONDS, "to", True)]),
    "/api/findings": ("findings", "What is wrong in the recording, worst first: each "
                      "finding's kind, title, severity, time range, processes "
                      "(`pid_ids`), evidence ids, next commands and the window that "
                      "shows it (`focus`).", []),
    "/api/requests": ("requests", "The HTTP requests of a framework trace (record "
                      "--phoenix), in time order: span_id, pid_id, start, duration_ms, "
                      "method, path, route, status, action, queries, query_ms, exception, "
                      "raised_in.", []),
    "/api/requests/{span_id}/waterfall": ("waterfall", "A request and every traced call "
                                          "inside it, depth first: kind (request, "
                                          "dispatch, pipeline, query, live, call), label, "
                                          "offset_ms and duration_ms from its start.",
                                          [_param("span_id", "path", {"type": "integer"},
                                                  "the request's span")]),
    "/api/metrics/{pid_id}": ("metrics", "A process's sampled mailbox length and memory "
                              "over time (`t`, `queue`, `memory`).",
                              [_param("pid_id", "path", {"type": "integer"},
                                      "the process")]),
    "/api/waits": ("waits", "The waits-for graph at `t`: each call to another process "
                   "still waiting then (`from`, `to` pid_ids, `request`, `in_cycle`).",
                   [_param("t", "query", _SECONDS, "the moment", True)]),
    "/api/stream": ("stream", "Server-sent events: `update` {events, duration} while a "
                    "live recording grows, `finished` when it has been finished.", []),
}


def openapi() -> dict[str, Any]:
    error = {"description": "a request the API cannot answer",
             "content": {"application/json": {"schema": {"$ref": "#/components/schemas/"
                                                                 "Error"}}}}
    paths: dict[str, Any] = {}
    for path, (name, text, params) in _PATHS.items():
        media = "text/event-stream" if name == "stream" else "application/json"
        paths[path] = {"get": {
            "operationId": name, "summary": text.split(". ")[0].rstrip("."),
            "description": text, "parameters": params,
            "responses": {"200": {"description": "OK", "content": {media: {}}},
                          "400": error, "401": error, "404": error, "409": error,
                          "501": error, "503": error}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ElixirScope UI API", "version": __version__,
                 "description": "The JSON API behind ElixirScope's execution-cinema UI. "
                                "Times are seconds from the recording's start. Errors "
                                "are {\"error\": one sentence} with a 4xx or 5xx status."},
        "components": {
            "securitySchemes": {
                "token": {"type": "apiKey", "in": "query", "name": "token"},
                "tokenHeader": {"type": "apiKey", "in": "header",
                                "name": "X-ElixirScope-Token"}},
            "schemas": {"Error": {"type": "object", "required": ["error"],
                                  "properties": {"error": {"type": "string"}}}}},
        "security": [{"token": []}, {"tokenHeader": []}],
        "paths": paths,
    }
