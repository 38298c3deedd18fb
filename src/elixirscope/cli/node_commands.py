"""Commands that talk to a live node: ``nodes``, ``ps``, ``eval``."""

from __future__ import annotations

import asyncio

import click
from rich.table import Table

from elixirscope.cli import output
from elixirscope.cli.options import json_option, node_options
from elixirscope.dist import epmd
from elixirscope.dist.name_probe import node_full_name
from elixirscope.dist.names import local_short_host
from elixirscope.dist.node import connect
from elixirscope.elixir_format import inspect
from elixirscope.errors import RemoteError
from elixirscope.process_table import ProcessRow, SortKey, fetch_process_table
from elixirscope.remote_eval import eval_elixir, eval_erlang
from elixirscope.term_json import to_json


@click.command()
@click.argument("host", required=False)
@json_option()
def nodes(host: str | None, as_json: bool) -> None:
    """The nodes EPMD knows on HOST (default: this host)."""
    where = host or local_short_host()
    names = asyncio.run(_named_nodes(where))
    if as_json:
        for node, name, port in names:
            output.json_line({"node": node, "name": name, "port": port})
        return
    if not names:
        output.err.print(f"no nodes registered with EPMD on {where}")
        return
    table = Table("node", "port", box=None)
    for node, _name, port in sorted(names):
        table.add_row(node, str(port))
    output.out.print(table)


async def _named_nodes(host: str) -> list[tuple[str, str, int]]:
    """``(full name, name, port)`` of each node EPMD knows on ``host``: the full name is
    the one the node gives itself (``name_probe``), else ``name@host``."""
    names = await epmd.list_names(host)
    probed = await asyncio.gather(*(node_full_name(host, port) for _, port in names))
    return [(full or f"{name}@{host}", name, port)
            for (name, port), full in zip(names, probed, strict=True)]


@click.command()
@node_options
@click.option("--sort", type=click.Choice(["reductions", "memory", "mailbox"]),
              default="reductions", show_default=True, help="Biggest first by this.")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="At most this many rows (0: all).")
@json_option()
def ps(node: str, cookie: str | None, name: str | None, sort: SortKey, limit: int,
       as_json: bool) -> None:
    """A live process table of NODE, like top."""
    with connect(node, cookie, own_name=name) as conn:
        rows = fetch_process_table(conn, sort=sort, limit=limit or None)
    if as_json:
        output.json_rows(rows)
    else:
        output.out.print(process_table(rows, f"{node}: {len(rows)} processes by {sort}"))


def process_table(rows: list[ProcessRow], title: str) -> Table:
    table = Table("pid", "name", "current function", "initial call", "mailbox", "memory",
                  "reductions", box=None, title=title)
    for row in rows:
        table.add_row(row.pid, row.name or row.label, row.current_function, row.initial_call,
                      str(row.mailbox), f"{row.memory:,}", f"{row.reductions:,}")
    return table


@click.command("eval")
@node_options
@click.argument("expression")
@click.option("--erlang", is_flag=True, help="EXPRESSION is Erlang (default: Elixir).")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=60.0, show_default=True,
              help="Seconds to wait for the result.")
@json_option("The result as JSON.")
def eval_(node: str, cookie: str | None, name: str | None, expression: str, erlang: bool,
          timeout: float, as_json: bool) -> None:
    """Evaluates EXPRESSION on NODE and prints the result Elixir-style."""
    evaluate = eval_erlang if erlang else eval_elixir
    with connect(node, cookie, own_name=name) as conn:
        try:
            value = conn.run(evaluate(conn.anode, expression, timeout=timeout,
                                      output=lambda text: output.err.out(text, end="")))
        except RemoteError as exc:
            output.err.out(exc.formatted)
            raise click.exceptions.Exit(1) from None
    if as_json:
        output.json_line({"result": to_json(value), "inspect": inspect(value)})
    else:
        output.out.out(inspect(value, limit=200, printable_limit=100_000))


def register(group: click.Group) -> None:
    for command in (nodes, ps, eval_):
        group.add_command(command)
