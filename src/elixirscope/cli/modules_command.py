"""``elixirscope modules NODE [PATTERN]``: what can be traced, without writing Erlang."""

from __future__ import annotations

import click
from rich.table import Table

from elixirscope.cli import output
from elixirscope.cli.options import json_option, node_options
from elixirscope.dist.node import connect
from elixirscope.tracing.module_glob import loaded_modules

_DEBUG_INFO = {True: "yes", False: "no", None: "?"}


@click.command()
@node_options
@click.argument("pattern", required=False)
@json_option()
def modules(node: str, cookie: str | None, name: str | None, pattern: str | None,
            as_json: bool) -> None:
    """The modules loaded on NODE (those matching PATTERN: MyApp.*, m_*, :gen_*), with
    their application and whether their beam file has debug info."""
    with connect(node, cookie, own_name=name) as conn:
        found = conn.run(loaded_modules(conn.anode, pattern))
    if as_json:
        output.json_rows(found)
        return
    if not found:
        output.err.print(f"no module loaded on {node} matches {pattern}")
        return
    table = Table("module", "application", "debug info", box=None,
                  title=f"{node}: {len(found)} modules" + (f" matching {pattern}"
                                                            if pattern else ""))
    for module in found:
        table.add_row(module.name, module.application, _DEBUG_INFO[module.debug_info])
    output.out.print(table)
