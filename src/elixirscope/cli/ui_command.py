"""``elixirscope ui``: the execution-cinema web UI of a recording; and the options and
serving loop that ``record --ui`` and ``demo`` share."""

from __future__ import annotations

import contextlib
import errno
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from elixirscope.cli import output
from elixirscope.errors import ElixirScopeError
from elixirscope.web.app import Session, UIServer, new_token
from elixirscope.web.model import View

F = TypeVar("F", bound=Callable[..., Any])
_LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class UIOptions:
    host: str = "127.0.0.1"
    port: int = 0
    token: bool = True


def ui_options(command: F) -> F:
    """``--host``, ``--port`` and ``--no-token``."""
    command = click.option(
        "--no-token", is_flag=True,
        help="Serve without the token in the URL (anyone who reaches the port can read "
             "the recording).")(command)
    command = click.option("--port", type=click.IntRange(0, 65535), default=0,
                           help="The port (default: a free one).")(command)
    return click.option("--host", default="127.0.0.1", show_default=True,
                        help="The address to listen on.")(command)


def check_port(options: UIOptions) -> None:
    """A port another program holds, as one sentence, before uvicorn logs it its way."""
    if options.port == 0:
        return
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((options.host, options.port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ElixirScopeError(f"port {options.port} on {options.host} is in use; "
                                       "choose another with --port") from None
            raise ElixirScopeError(f"cannot listen on {options.host}:{options.port}: "
                                   f"{exc.strerror}") from None


def start_server(view: View | None, options: UIOptions) -> UIServer:
    check_port(options)
    if options.host not in _LOOPBACK:
        output.err.print(f"note: serving on {options.host}: other machines can reach it"
                         + ("" if options.token else ", and without a token anyone can "
                            "read the recording"))
    session = Session(view, token=new_token() if options.token else None)
    return UIServer(session, options.host, options.port).start()


def announce(server: UIServer, what: str) -> None:
    output.out.print(f"{what}: {server.url}")


def serve_forever(server: UIServer) -> None:
    """Serves until Ctrl-C, then stops the server."""
    output.err.print("serving the UI; Ctrl-C to stop")
    try:
        while server.server.started and not server.server.should_exit:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        with contextlib.suppress(KeyboardInterrupt):
            server.stop()


@click.command()
@click.argument("recording", type=click.Path(dir_okay=True, path_type=Path))
@ui_options
def ui(recording: Path, host: str, port: int, no_token: bool) -> None:
    """Serves the execution-cinema UI of RECORDING: the timeline of its processes, the
    inspector, process state over time, search; open the printed URL in a browser."""
    options = UIOptions(host, port, not no_token)
    check_port(options)
    view = View.finished(recording)
    try:
        server = start_server(view, options)
    except BaseException:
        view.close()
        raise
    announce(server, "ElixirScope UI")
    serve_forever(server)
