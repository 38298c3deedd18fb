"""Clients that drive a Phoenix app the way browsers do: HTTP, and the LiveView and
Channel protocols over websockets (serializer V2: ``[join_ref, ref, topic, event,
payload]`` JSON arrays).

Used by the Phoenix demo, its tests and its benchmark; they speak to any Phoenix 1.7
app, the sample shop included::

    with LiveViewSession(url, "/cart") as live:
        live.event("add", {"id": "3"})
        live.event("toggle", {}, cid=1)    # a LiveComponent's event
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import re
import time
import urllib.parse
from collections.abc import Mapping
from typing import Any

from websockets.sync.client import ClientConnection, connect

from elixirscope.errors import ElixirScopeError

__all__ = ["ChannelSession", "HttpClient", "LiveViewSession", "PhoenixProtocolError"]

_TIMEOUT = 30.0
_CSRF_RE = re.compile(r'<meta name="csrf-token" content="([^"]+)"')
_MAIN_RE = re.compile(
    r'<div id="([^"]+)" data-phx-main data-phx-session="([^"]+)" data-phx-static="([^"]+)"')


class PhoenixProtocolError(ElixirScopeError):
    """The app answered something the LiveView or Channel protocol does not expect."""


class HttpClient:
    """One keep-alive HTTP/1.1 connection to ``url`` (``http://host:port``), with cookies."""

    def __init__(self, url: str, timeout: float = _TIMEOUT) -> None:
        parsed = urllib.parse.urlsplit(url)
        self.host = parsed.hostname or "127.0.0.1"
        self.port = parsed.port or 80
        self.timeout = timeout
        self.cookies: dict[str, str] = {}
        self._connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: Mapping[str, Any] | None = None,
                headers: Mapping[str, str] | None = None) -> tuple[int, bytes]:
        """Send one request; the status and the body."""
        sent = {"accept": "application/json, text/html", **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            sent["content-type"] = "application/json"
        if self.cookies:
            sent["cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        for attempt in (1, 2):
            try:
                self._connection.request(method, path, body=payload, headers=sent)
                response = self._connection.getresponse()
                data = response.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed the kept-alive connection (after a 500, say).
                self._connection.close()
                if attempt == 2:
                    raise
        for header in response.headers.get_all("set-cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name.strip()] = rest.split(";", 1)[0]
        if response.getheader("connection", "").lower() == "close":
            self._connection.close()
        return response.status, data

    def get(self, path: str) -> tuple[int, bytes]:
        return self.request("GET", path)

    def post(self, path: str, body: Mapping[str, Any]) -> tuple[int, bytes]:
        return self.request("POST", path, body)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> HttpClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class _Socket:
    """A Phoenix socket (V2 serializer): pushes and waits for replies by ref."""

    def __init__(self, url: str, headers: Mapping[str, str], timeout: float) -> None:
        self.timeout = timeout
        self._refs = itertools.count(1)
        self.pushed: list[list[Any]] = []
        self._stack = contextlib.ExitStack()
        self._ws: ClientConnection = self._stack.enter_context(
            connect(url, additional_headers=dict(headers), open_timeout=timeout,
                    close_timeout=2))

    def push(self, join_ref: str | None, topic: str, event: str,
             payload: Mapping[str, Any]) -> str:
        ref = str(next(self._refs))
        self._ws.send(json.dumps([join_ref, ref, topic, event, payload]))
        return ref

    def reply(self, ref: str) -> dict[str, Any]:
        """Wait for the reply to ``ref``; other messages go to ``pushed``."""
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PhoenixProtocolError(f"No reply to message {ref} in {self.timeout:g} s.")
            message = json.loads(self._ws.recv(timeout=left))
            if message[1] == ref and message[3] == "phx_reply":
                reply: dict[str, Any] = message[4]
                return reply
            self.pushed.append(message)

    def call(self, join_ref: str | None, topic: str, event: str,
             payload: Mapping[str, Any]) -> dict[str, Any]:
        reply = self.reply(self.push(join_ref, topic, event, payload))
        if reply.get("status") != "ok":
            raise PhoenixProtocolError(f"{event} on {topic} answered {reply!r}.")
        response: dict[str, Any] = reply.get("response", {})
        return response

    def close(self) -> None:
        self._stack.close()


def _ws_url(http_url: str, path: str, params: Mapping[str, str]) -> str:
    base = http_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
    return f"{base}{path}?{urllib.parse.urlencode({**params, 'vsn': '2.0.0'})}"


class LiveViewSession:
    """A LiveView opened as a browser opens it: the page over HTTP, then the join."""

    def __init__(self, url: str, path: str, timeout: float = _TIMEOUT) -> None:
        self.http = HttpClient(url, timeout)
        status, body = self.http.get(path)
        page = body.decode("utf-8", "replace")
        csrf, main = _CSRF_RE.search(page), _MAIN_RE.search(page)
        if status != 200 or csrf is None or main is None:
            raise PhoenixProtocolError(f"GET {path} did not return a LiveView page "
                                       f"(status {status}).")
        self.id = main.group(1)
        self.topic = f"lv:{self.id}"
        cookie = "; ".join(f"{k}={v}" for k, v in self.http.cookies.items())
        self.socket = _Socket(_ws_url(url, "/live/websocket", {"_csrf_token": csrf.group(1)}),
                              {"cookie": cookie}, timeout)
        self.join_ref = "0"
        self.rendered = self.socket.call(self.join_ref, self.topic, "phx_join", {
            "url": url + path, "params": {"_csrf_token": csrf.group(1), "_mounts": 0},
            "session": main.group(2), "static": main.group(3)})

    def event(self, name: str, value: Mapping[str, Any], cid: int | None = None
              ) -> dict[str, Any]:
        """A click event (``phx-click``), to the LiveView or to component ``cid``."""
        payload: dict[str, Any] = {"type": "click", "event": name, "value": dict(value)}
        if cid is not None:
            payload["cid"] = cid
        return self.socket.call(self.join_ref, self.topic, "event", payload)

    def close(self) -> None:
        self.socket.close()
        self.http.close()

    def __enter__(self) -> LiveViewSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ChannelSession:
    """A socket on ``path`` (``/socket``) with one joined channel topic."""

    def __init__(self, url: str, topic: str, path: str = "/socket",
                 params: Mapping[str, str] | None = None, timeout: float = _TIMEOUT) -> None:
        self.topic = topic
        self.socket = _Socket(_ws_url(url, path + "/websocket", params or {}), {}, timeout)
        self.join_ref = "1"
        self.joined = self.socket.call(self.join_ref, topic, "phx_join", {})

    def push(self, event: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Push ``event`` and wait for the reply (``{:reply, ...}``) or the ack."""
        return self.socket.call(self.join_ref, self.topic, event, payload)

    def cast(self, event: str, payload: Mapping[str, Any]) -> None:
        """Push ``event`` without waiting (a handler answering ``{:noreply, ...}``)."""
        self.socket.push(self.join_ref, self.topic, event, payload)

    def close(self) -> None:
        self.socket.close()

    def __enter__(self) -> ChannelSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
