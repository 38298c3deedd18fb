"""Options several commands share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def node_options(command: F) -> F:
    """NODE, ``--cookie`` and ``--name``: how to reach a node."""
    command = click.option(
        "--name", default=None, metavar="NAME",
        help="Our hidden node's name (default: a random elixirscope_... name).")(command)
    command = click.option(
        "--cookie", default=None, metavar="COOKIE",
        help="The cookie (default: $ERLANG_COOKIE, then ~/.erlang.cookie).")(command)
    return click.argument("node")(command)


def json_option(help: str = "JSON lines instead of a table.") -> Callable[[F], F]:
    return click.option("--json", "as_json", is_flag=True, help=help)
