"""``elixirscope mcp``: the MCP server, for coding agents."""

from __future__ import annotations

import hmac
import secrets
from pathlib import Path
from typing import Any

import click
import uvicorn

from elixirscope.cli import output
from elixirscope.dist.cookie import Cookie, resolve_cookie
from elixirscope.errors import CookieNotFound
from elixirscope.mcp_server import ToolBox, build_server


@click.command()
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              default=Path("elixirscope-recordings"), show_default=True,
              help="Where recordings and plans are kept (and looked up by id).")
@click.option("--cookie", default=None, metavar="COOKIE",
              help="The cookie for the nodes (default: $ERLANG_COOKIE, then "
                   "~/.erlang.cookie). Never shown to the agent.")
@click.option("--allow-eval", is_flag=True,
              help="Let the agent evaluate expressions on nodes (the eval tool).")
@click.option("--http", "http", is_flag=True,
              help="Serve streamable HTTP on loopback instead of stdio.")
@click.option("--port", type=click.IntRange(min=0, max=65535), default=8765, show_default=True,
              help="With --http: the port.")
@click.option("--no-token", is_flag=True,
              help="With --http: no bearer token (anyone on this machine can connect).")
def mcp(directory: Path, cookie: str | None, allow_eval: bool, http: bool, port: int,
        no_token: bool) -> None:
    """Serves ElixirScope to AI agents over MCP: list nodes and processes, analyse code,
    plan and record traces under limits, diagnose recordings and query their spans,
    events, values, tracebacks, states, waits and messages. Stdio by default (what
    coding agents launch); --http serves streamable HTTP on 127.0.0.1 with a bearer
    token printed at start."""
    try:
        found: Cookie | None = resolve_cookie(cookie)
    except CookieNotFound:
        found = None  # recordings can still be queried; node tools will say so
    tools = ToolBox(directory, cookie=found, allow_eval=allow_eval)
    server = build_server(tools)
    if not http:
        server.run("stdio")
        return
    token = None if no_token else secrets.token_urlsafe(24)
    app: Any = server.streamable_http_app(host="127.0.0.1")
    if token is not None:
        app = BearerGate(app, token)
    output.err.print(f"MCP over streamable HTTP at http://127.0.0.1:{port}/mcp"
                     + (f"\n  header: Authorization: Bearer {token}" if token else ""))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class BearerGate:
    """Lets through only requests carrying ``Authorization: Bearer <token>``."""

    def __init__(self, app: Any, token: str) -> None:
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers", [])).get(b"authorization", b"")
            if not hmac.compare_digest(given, self.expected):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain")]})
                await send({"type": "http.response.body",
                            "body": b"a bearer token is needed (printed when the server started)"})
                return
        await self.app(scope, receive, send)
