"""``elixirscope supervisors NODE|REC [NAME]``: supervisors live, or across a recording."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from elixirscope.analysis.supervision import SupervisorHistory, recorded_supervisors
from elixirscope.cli import output
from elixirscope.cli.options import json_option
from elixirscope.dist.node import connect
from elixirscope.recordings import open_recording
from elixirscope.supervisors import NoSupervisor, Supervisor, live_supervisors


@click.command()
@click.argument("target", metavar="NODE|REC")
@click.argument("name", required=False)
@click.option("--cookie", default=None, metavar="COOKIE",
              help="The cookie (default: $ERLANG_COOKIE, then ~/.erlang.cookie).")
@click.option("--name", "own_name", default=None, metavar="NAME",
              help="Our hidden node's name (default: a random elixirscope_... name).")
@json_option("One JSON line per supervisor.")
def supervisors(target: str, name: str | None, cookie: str | None, own_name: str | None,
                as_json: bool) -> None:
    """The supervisors of NODE (or the one NAME names): strategy, intensity and period,
    restarts in the current period, children. Given a recording file REC instead, each
    supervisor's children across their generations (a child restarted 8 times is one
    row with 8 pids) and its restart history."""
    if Path(target).is_file():
        with open_recording(target) as rec:
            recorded = recorded_supervisors(rec, name)
        _nothing(recorded, target, name)
        if as_json:
            output.json_rows(recorded)
        for history in [] if as_json else recorded:
            _print_history(history)
        return
    with connect(target, cookie, own_name=own_name) as conn:
        live = conn.run(live_supervisors(conn.anode, name))
    _nothing(live, target, name)
    if as_json:
        output.json_rows(live)
    for supervisor in [] if as_json else live:
        _print_live(supervisor)


def _nothing(found: list[Supervisor] | list[SupervisorHistory], where: str,
             name: str | None) -> None:
    if not found:
        what = f"no supervisor named {name}" if name else "no supervisor"
        raise NoSupervisor(f"{what} in {where}")


def _print_live(supervisor: Supervisor) -> None:
    if supervisor.strategy is None:
        settings = f"settings not read: {supervisor.state}"
    else:
        recent = supervisor.restarts_ago_s or ()
        settings = (f"{supervisor.strategy}, at most {supervisor.intensity} restarts in "
                    f"{supervisor.period} s; {len(recent)} in the current period"
                    + (f" ({', '.join(f'{ago} s ago' for ago in recent)})" if recent else ""))
    count = "?" if supervisor.children_count is None else str(supervisor.children_count)
    table = Table("id", "pid", "label", "type", "modules", box=None,
                  title=f"{supervisor.name or supervisor.pid} {supervisor.pid} "
                        f"({supervisor.module}): {settings}; {count} children",
                  title_justify="left")
    for child in supervisor.children:
        table.add_row(child.id, child.pid or "(not running)", child.label, child.type,
                      child.modules)
    output.out.print(table)


def _print_history(history: SupervisorHistory) -> None:
    table = Table("child", "restarts", "pids (oldest first)", "last exit", box=None,
                  title=f"{history.name or history.pid} {history.pid}", title_justify="left")
    for child in history.children:
        last = next((g.exit_reason for g in reversed(child.generations) if g.exit_reason),
                    "")
        table.add_row(child.child, str(child.restarts),
                      " ".join(generation.pid for generation in child.generations), last)
    output.out.print(table)
    for at, restarted, reason in history.restart_history():
        when = "?" if at is None else f"{at:.3f} s"
        output.out.print(f"  restart at {when}: {restarted}"
                         + (f" after {reason}" if reason else ""))
