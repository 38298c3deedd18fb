"""``elixirscope demo``: the bundled bank app, a workload with faults, and its live
process table."""

from __future__ import annotations

import time

import click
from rich.live import Live

from elixirscope.cli import output
from elixirscope.cli.node_commands import process_table
from elixirscope.cli.options import json_option
from elixirscope.dist.node import Node, connect
from elixirscope.elixir_format import inspect
from elixirscope.process_table import ProcessRow, fetch_process_table
from elixirscope.sample_nodes import start_sample


@click.command()
@click.option("--duration", type=click.FloatRange(min=1.0), default=10.0, show_default=True,
              help="Seconds to watch the app run.")
@click.option("--limit", type=click.IntRange(min=1), default=15, show_default=True,
              help="Rows in the process table.")
@json_option("The final process table as JSON lines.")
def demo(duration: float, limit: int, as_json: bool) -> None:
    """Starts the sample bank app, drives a workload that crashes accounts, takes a slow
    path and floods a mailbox, and shows the node's live process table."""
    output.err.print("starting the sample bank app on a fresh node ...")
    with start_sample("bank", name_prefix="bank_demo") as beam, \
            connect(beam.name, beam.cookie) as node:
        output.err.print(f"connected to {node.name} as hidden node {node.own_name}")
        node.rpc("Elixir.Bank.Demo", "run", [[]])
        live = not as_json and output.out.is_terminal
        rows = _watch(node, duration, limit, live=live)
        stats = node.rpc("Elixir.Bank.Workload", "stats", [])
    if as_json:
        for row in rows:
            output.json_line(row.as_dict())
        return
    if not live:
        output.out.print(process_table(rows, f"{beam.name} after {duration:g} s"))
    output.out.print(f"workload: {inspect(stats)}")


def _watch(node: Node, duration: float, limit: int, *, live: bool) -> list[ProcessRow]:
    deadline = time.monotonic() + duration
    if not live:
        time.sleep(duration)
        return fetch_process_table(node, limit=limit)
    rows = fetch_process_table(node, limit=limit)
    with Live(process_table(rows, node.name), console=output.out,
              refresh_per_second=4) as screen:
        while (left := deadline - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            rows = fetch_process_table(node, limit=limit)
            screen.update(process_table(rows, f"{node.name}, {max(0.0, left):.0f} s left"))
    return rows


def register(group: click.Group) -> None:
    group.add_command(demo)
