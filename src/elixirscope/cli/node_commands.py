"""Commands that talk to a live node: ``nodes``, ``ps``, ``eval``."""

from __future__ import annotations

import asyncio
import time

import click
from rich.console import Group
from rich.live import Live
from rich.table import Table

from elixirscope.cli import output
from elixirscope.cli.options import json_option, node_options
from elixirscope.dist import epmd
from elixirscope.dist.name_probe import node_full_name
from elixirscope.dist.names import local_short_host
from elixirscope.dist.node import Node, connect
from elixirscope.elixir_format import inspect
from elixirscope.errors import RemoteError
from elixirscope.process_table import (
    NodeTotals,
    ProcessRow,
    SortKey,
    fetch_node_totals,
    fetch_process_table,
)
from elixirscope.process_watch import ProcessWatch, WatchFrame
from elixirscope.remote_eval import eval_elixir, eval_erlang
from elixirscope.term_json import to_json

MIN_INTERVAL = 0.5


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
              default="reductions", show_default=True,
              help="Biggest first by this (with --watch, reductions: per second).")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="At most this many rows (0: all).")
@click.option("--watch", is_flag=True,
              help="Refresh until Ctrl-C, with the change per second of mailbox, memory "
                   "and reductions.")
@click.option("--interval", type=click.FloatRange(min=MIN_INTERVAL), default=2.0,
              show_default=True, help="Seconds between refreshes with --watch.")
@click.option("--count", type=click.IntRange(min=0), default=0, show_default=True,
              help="Stop --watch after this many refreshes (0: at Ctrl-C).")
@json_option("JSON lines instead of a table (with --watch: one line per refresh).")
def ps(node: str, cookie: str | None, name: str | None, sort: SortKey, limit: int,
       watch: bool, interval: float, count: int, as_json: bool) -> None:
    """A live process table of NODE, like top, under a header of the node's totals."""
    with connect(node, cookie, own_name=name) as conn:
        if watch:
            _watch(conn, ProcessWatch(conn.anode, sort=sort, limit=limit or None),
                   interval=interval, count=count, as_json=as_json)
            return
        rows = fetch_process_table(conn, sort=sort, limit=limit or None)
        totals = None if as_json else conn.run(fetch_node_totals(conn.anode))
    if as_json:
        output.json_rows(rows)
    elif totals is not None:
        output.out.print(totals_line(node, totals))
        output.out.print(process_table(rows, f"{len(rows)} processes by {sort}"))


def _watch(conn: Node, watch: ProcessWatch, *, interval: float, count: int,
           as_json: bool) -> None:
    """Refreshes every ``interval`` seconds, never sooner than a quarter of it after the
    last refresh ended (a slow node is not asked faster than it answers); Ctrl-C ends
    it, as a normal exit."""
    refreshes = 0
    live = None if as_json else Live(console=output.out, auto_refresh=False,
                                     transient=False)
    try:
        if live is not None:
            live.start()
        while True:
            began = time.monotonic()
            frame = conn.run(watch.refresh())
            refreshes += 1
            if live is not None:
                live.update(watch_view(conn.name, frame, watch.sort), refresh=True)
            else:
                output.json_line({"node": conn.name, **frame.as_dict()})
            if count and refreshes >= count:
                return
            took = time.monotonic() - began
            time.sleep(max(interval - took, interval / 4))
    except KeyboardInterrupt:
        return
    finally:
        if live is not None:
            live.stop()


def totals_line(node: str, totals: NodeTotals) -> str:
    seconds = totals.uptime_ms // 1000
    uptime = f"{seconds // 86400}d {seconds % 86400 // 3600:02}:{seconds % 3600 // 60:02}" \
             f":{seconds % 60:02}"
    return (f"{node}  memory {totals.memory / 2**20:,.1f} MB  uptime {uptime}  "
            f"schedulers {totals.schedulers}  run queue {totals.run_queue}  "
            f"processes {totals.processes:,}")


def watch_view(node: str, frame: WatchFrame, sort: SortKey) -> Group:
    table = Table("pid", "name", "current function", "mailbox", "/s", "memory", "/s",
                  "reductions", "/s", box=None,
                  title=f"{len(frame.rows)} processes by {sort}"
                        + (" per second" if sort == "reductions" else ""))
    for item in frame.rows:
        row = item.row
        table.add_row(row.pid, row.name or row.label or row.initial_call,
                      row.current_function, str(row.mailbox), _rate(item.mailbox_per_s),
                      f"{row.memory:,}", _rate(item.memory_per_s), f"{row.reductions:,}",
                      _rate(item.reductions_per_s))
    return Group(totals_line(node, frame.totals), table)


def process_table(rows: list[ProcessRow], title: str) -> Table:
    table = Table("pid", "name", "current function", "initial call", "mailbox", "memory",
                  "reductions", box=None, title=title)
    for row in rows:
        table.add_row(row.pid, row.name or row.label, row.current_function, row.initial_call,
                      str(row.mailbox), f"{row.memory:,}", f"{row.reductions:,}")
    return table


def _rate(value: float | None) -> str:
    return "" if value is None else f"{value:+,.0f}"


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
