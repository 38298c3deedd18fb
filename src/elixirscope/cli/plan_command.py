"""``elixirscope plan NODE --budget N``: measure call rates, then choose what to trace
within an event budget; ``record NODE --plan plan.json`` records it."""

from __future__ import annotations

from pathlib import Path

import click

from elixirscope.cli import output
from elixirscope.cli.listing import print_listing
from elixirscope.cli.options import json_option
from elixirscope.dist.node import connect
from elixirscope.planner import make_plan


@click.command()
@click.argument("node")
@click.option("--budget", type=click.FloatRange(min=1), required=True, metavar="EVENTS_PER_S",
              help="Events per second the recording may take.")
@click.option("--focus", default=None, metavar="MODULE|PROCESS|WORDS",
              help="What matters most: a module, a process (its callback module), or "
                   "symptom words matched against module and function names "
                   "(\"slow transfers\").")
@click.option("--module", "modules", multiple=True, metavar="MODULE",
              help="Plan over these modules only (default: the node's own applications).")
@click.option("--window", type=click.FloatRange(min=0.1, max=10), default=1.0,
              show_default=True, help="Seconds of call counting before choosing.")
@click.option("-o", "--output", "path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="Write the plan here (JSON), for record --plan.")
@click.option("--cookie", default=None, metavar="COOKIE",
              help="The cookie (default: $ERLANG_COOKIE, then ~/.erlang.cookie).")
@click.option("--name", "own_name", default=None, metavar="NAME",
              help="Our hidden node's name (default: a random elixirscope_... name).")
@json_option("The plan as one JSON document.")
def plan(node: str, budget: float, focus: str | None, modules: tuple[str, ...], window: float,
         path: Path | None, cookie: str | None, own_name: str | None, as_json: bool) -> None:
    """Plans what to trace on NODE within BUDGET events per second: counts the calls of
    the candidate functions for a short window (call_count patterns, removed at once),
    ranks them by relevance to the focus and to the code analysis (callbacks, calls to
    other processes, sleeps, risks), and takes them in that order while they fit,
    sampling the last one so the plan fills the budget. Record it with
    `elixirscope record NODE --plan FILE`."""
    with connect(node, cookie, own_name=own_name) as conn:
        made = conn.run(make_plan(conn.anode, budget, focus=focus,
                                  modules=list(modules) or None, window=window))
    if path is not None:
        made.save(path)
    if as_json:
        output.json_line(made.as_dict())
        return
    rows = [[f"{item.expected_events_per_s:,.0f}", f"{item.calls_per_s:,.0f}",
             f"{item.sample_rate:.2f}", item.module,
             ", ".join(f"{f}/{a}" for f, a in item.functions), "; ".join(item.why)]
            for item in made.items]
    print_listing(f"{node}: {len(made.items)} traces, ~{made.expected_events_per_s:,.0f} of "
                  f"{budget:,.0f} events/s (measured over {window:g} s)",
                  ["events/s", "calls/s", "rate", "module", "functions", "why"], rows,
                  right=3, cut=2)
    for line in made.left_out[:5]:
        output.err.print(f"left out: {line}")
    if path is not None:
        output.err.print(f"plan written to {path}: elixirscope record {node} --plan {path}")
