"""The UI's ASGI app (Starlette) and the server that runs it (uvicorn, in a thread).

Every ``/api/...`` request needs the session's token, as the ``token`` query
parameter (what the printed URL carries, and what ``EventSource`` can send) or the
``X-ElixirScope-Token`` header, compared in constant time; ``--no-token`` turns the
check off. The static assets (the page, its ES modules and CSS) carry no data and are
served to anyone who can reach the port. uvicorn's access log is off: it would write
the token with every URL.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from elixirscope.errors import ElixirScopeError
from elixirscope.web.model import UIError, View
from elixirscope.web.openapi import openapi

STATIC = Path(__file__).parent / "static"
TOKEN_HEADER = "x-elixirscope-token"


class Session:
    """What the server shows: one ``View`` at a time (a live recording's view is
    replaced by the finished recording's when the recorder stops)."""

    def __init__(self, view: View | None, *, token: str | None) -> None:
        self._view = view
        self.token = token
        self.version = 0
        self.finishing = False
        self._lock = threading.Lock()

    @property
    def view(self) -> View:
        with self._lock:
            view = self._view
        if view is None or self.finishing:
            raise UIError("the recording is being finished; try again in a moment", 503)
        return view

    def begin_finishing(self) -> None:
        """The recorder is about to close its file: stop reading it."""
        with self._lock:
            self.finishing = True
            if self._view is not None:
                self._view.closed = True

    def replace(self, view: View) -> None:
        with self._lock:
            old, self._view = self._view, view
            self.finishing = False
            self.version += 1
        if old is not None and old is not view:
            old.close()

    def close(self) -> None:
        with self._lock:
            view, self._view = self._view, None
        if view is not None:
            view.close()


def new_token() -> str:
    return secrets.token_urlsafe(24)


class TokenGate:
    """ASGI middleware: ``/api/`` requests without the right token get a 401."""

    def __init__(self, app: ASGIApp, session: Session) -> None:
        self.app = app
        self.session = session

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/api/") \
                and self.session.token is not None:
            request = Request(scope)
            given = request.headers.get(TOKEN_HEADER) or request.query_params.get("token")
            if not given or not hmac.compare_digest(given.encode(),
                                                    self.session.token.encode()):
                response = JSONResponse({"error": "this request needs the token from the "
                                                  "URL the server printed"}, status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _finite(value: Any) -> Any:
    """NaN and infinities (JSON has none) as null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _json(value: Any, status: int = 200) -> Response:
    try:
        body = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str,
                          allow_nan=False)
    except ValueError:
        body = json.dumps(_finite(value), ensure_ascii=False, separators=(",", ":"),
                          default=str, allow_nan=False)
    return Response(body, status_code=status, media_type="application/json",
                    headers={"cache-control": "no-store"})


def _error(message: str, status: int) -> Response:
    return _json({"error": message}, status)


def _float(request: Request, name: str, default: float | None = None) -> float:
    raw = request.query_params.get(name)
    if raw is None:
        if default is None:
            raise UIError(f"the parameter {name} is missing")
        return default
    try:
        value = float(raw)
    except ValueError:
        raise UIError(f"{name} must be a number of seconds, not {raw!r}") from None
    if not math.isfinite(value):
        raise UIError(f"{name} must be a finite number, not {raw!r}")
    return value


def _int(request: Request, name: str, default: int | None = None, *,
         source: str = "query") -> int:
    raw = (request.path_params.get(name) if source == "path"
           else request.query_params.get(name))
    if raw is None:
        if default is None:
            raise UIError(f"the parameter {name} is missing")
        return default
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise UIError(f"{name} must be an integer, not {raw!r}") from None


def _lanes(request: Request) -> list[int] | None:
    raw = request.query_params.get("lanes")
    if raw is None or raw == "":
        return None
    try:
        return [int(x) for x in raw.split(",") if x]
    except ValueError:
        raise UIError("lanes must be pid_ids separated by commas") from None


def _handler(work: Callable[[Request, View], Any]) -> Callable[[Request], Response]:
    """A sync endpoint (Starlette runs it in its thread pool) answering JSON, with
    ``UIError``s as one-sentence JSON errors."""
    def endpoint(request: Request) -> Response:
        session: Session = request.app.state.session
        started = time.perf_counter()
        try:
            result = work(request, session.view)
        except UIError as exc:
            return _error(str(exc), exc.status)
        except ElixirScopeError as exc:
            return _error(str(exc), 400)
        response = _json(result)
        response.headers["server-timing"] = \
            f"app;dur={(time.perf_counter() - started) * 1000:.2f}"
        return response
    endpoint.__name__ = work.__name__
    endpoint.__doc__ = work.__doc__
    return endpoint


def api_info(request: Request, view: View) -> Any:
    """Facts about the recording: nodes, counts, duration, losses, breaker trips."""
    return view.info() | {"version": request.app.state.session.version}


def api_rate(request: Request, view: View) -> Any:
    """Events over the whole recording in at most ``bins`` bins (minimap, facts)."""
    return view.rate(_int(request, "bins", 800))


def api_lanes(request: Request, view: View) -> Any:
    """Processes in timeline order, with lifecycle, activity and exit reasons."""
    view.refresh()
    return {"lanes": view.lanes()}


def api_timeline(request: Request, view: View) -> Any:
    """A window of the timeline at the level of detail its width calls for."""
    return view.timeline(_float(request, "t0"), _float(request, "t1"),
                         _int(request, "px", 1200), _lanes(request))


def api_event(request: Request, view: View) -> Any:
    """One event printed Elixir-style, its links and its causal chain."""
    return view.event(_int(request, "seq", source="path"))


def api_span(request: Request, view: View) -> Any:
    """One span: arguments, result, duration, outcome, parent, trigger."""
    return view.span(_int(request, "span_id", source="path"))


def api_message(request: Request, view: View) -> Any:
    """One message: text, sender, receiver, times, handler."""
    return view.message(_int(request, "message_id", source="path"))


def api_search(request: Request, view: View) -> Any:
    """Events matching a search (see the OpenAPI description for the syntax)."""
    query = request.query_params.get("q", "").strip()
    return view.search(query, limit=_int(request, "limit", 500))


def api_step(request: Request, view: View) -> Any:
    """The next or previous event, message or state change after a time."""
    pid = request.query_params.get("pid")
    return view.step(_float(request, "t"), None if not pid else _int(request, "pid"),
                     request.query_params.get("what", "event"),
                     request.query_params.get("dir", "next"))


def api_state_history(request: Request, view: View) -> Any:
    """A process's state transitions."""
    return view.state_history(_int(request, "pid_id", source="path"))


def api_state_at(request: Request, view: View) -> Any:
    """A process's state at a time, with the diff that made it."""
    return view.state_at(_int(request, "pid_id", source="path"), _float(request, "t"))


def api_state_diff(request: Request, view: View) -> Any:
    """How a process's state changed between two times."""
    return view.state_diff(_int(request, "pid_id", source="path"), _float(request, "t1"),
                           _float(request, "t2"))


def api_findings(request: Request, view: View) -> Any:
    """What is wrong in the recording, worst first (elixirscope diagnose)."""
    return view.findings()


def api_requests(request: Request, view: View) -> Any:
    """The HTTP requests of a framework trace (record --phoenix), in time order."""
    return view.requests()


def api_waterfall(request: Request, view: View) -> Any:
    """A request and the traced calls inside it: offsets and durations from its start."""
    return view.waterfall(_int(request, "span_id", source="path"))


def api_metrics(request: Request, view: View) -> Any:
    """A process's sampled mailbox length and memory over time."""
    return view.metrics(_int(request, "pid_id", source="path"))


def api_waits(request: Request, view: View) -> Any:
    """Who waits on whom at a time (calls to other processes), and the cycles."""
    return view.waits_at(_float(request, "t"))


def api_openapi(request: Request) -> Response:
    return _json(openapi())


async def api_stream(request: Request) -> Response:
    """Server-sent events: ``update`` when a live recording grows (at most twice a
    second), ``finished`` when it has been finished, a comment every 15 s otherwise."""
    session: Session = request.app.state.session

    async def events() -> AsyncIterator[str]:
        version = session.version
        last_sent = 0.0
        last_count = -1
        yield "retry: 2000\n\n"
        while not await request.is_disconnected():
            if session.version != version:
                version = session.version
                yield f"event: finished\ndata: {json.dumps({'version': version})}\n\n"
            try:
                view = session.view
            except UIError:
                view = None
            if view is not None and view.live:
                with contextlib.suppress(UIError):
                    await asyncio.to_thread(view.refresh)
                count = view.pyramid.events
                if count != last_count:
                    last_count = count
                    data = {"events": count, "duration": view.sec(view.duration_ns),
                            "live": True}
                    yield f"event: update\ndata: {json.dumps(data)}\n\n"
                    last_sent = time.monotonic()
            if time.monotonic() - last_sent > 15:
                last_sent = time.monotonic()
                yield ": still here\n\n"
            await asyncio.sleep(0.5)

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"cache-control": "no-store",
                                      "x-accel-buffering": "no"})


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-store"})


async def not_found(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith("/api/"):
        return _error(f"there is no API endpoint {request.url.path}", 404)
    return _error("not found", 404)


ROUTES: list[tuple[str, Callable[[Request, View], Any]]] = [
    ("/api/info", api_info),
    ("/api/rate", api_rate),
    ("/api/lanes", api_lanes),
    ("/api/timeline", api_timeline),
    ("/api/events/{seq}", api_event),
    ("/api/spans/{span_id}", api_span),
    ("/api/messages/{message_id}", api_message),
    ("/api/search", api_search),
    ("/api/step", api_step),
    ("/api/state/{pid_id}/history", api_state_history),
    ("/api/state/{pid_id}/at", api_state_at),
    ("/api/state/{pid_id}/diff", api_state_diff),
    ("/api/findings", api_findings),
    ("/api/requests", api_requests),
    ("/api/requests/{span_id}/waterfall", api_waterfall),
    ("/api/metrics/{pid_id}", api_metrics),
    ("/api/waits", api_waits),
]


def create_app(session: Session) -> Starlette:
    routes: list[Route | Mount] = [Route(path, _handler(work), methods=["GET"])
                                   for path, work in ROUTES]
    routes += [
        Route("/api/openapi.json", api_openapi, methods=["GET"]),
        Route("/api/stream", api_stream, methods=["GET"]),
        Route("/", index, methods=["GET"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(TokenGate, session=session)],
                    exception_handlers={404: not_found})
    app.state.session = session
    return app


class UIServer:
    """uvicorn serving ``create_app(session)`` on a thread of its own."""

    def __init__(self, session: Session, host: str = "127.0.0.1", port: int = 0) -> None:
        self.session = session
        self.host = host
        config = uvicorn.Config(create_app(session), host=host, port=port,
                                log_level="warning", access_log=False, lifespan="off",
                                timeout_graceful_shutdown=1, ws="none")
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run, name="elixirscope-ui",
                                        daemon=True)

    def start(self, timeout: float = 10.0) -> UIServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive():
                raise ElixirScopeError(f"the UI server could not listen on "
                                       f"{self.host}:{self.server.config.port}")
            if time.monotonic() > deadline:
                raise ElixirScopeError("the UI server did not start in time")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        for server in self.server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self.server.config.port)

    @property
    def url(self) -> str:
        host = self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1"
        if ":" in host:
            host = f"[{host}]"
        query = f"?token={self.session.token}" if self.session.token else ""
        return f"http://{host}:{self.port}/{query}"

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=5)
        self.session.close()

    def __enter__(self) -> UIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
