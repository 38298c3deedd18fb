"""``waits``: the calls traced code made to other processes, and how each ended."""

from __future__ import annotations

from pathlib import Path

import click

from elixirscope.cli import output
from elixirscope.cli.listing import print_listing
from elixirscope.cli.options import json_option
from elixirscope.cli.recording_commands import _process
from elixirscope.recordings import open_recording


@click.command()
@click.argument("recording", metavar="REC", type=click.Path(path_type=Path))
@click.option("--pid", "pid", metavar="PID", help="Only the waits of this process.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True,
              help="At most this many waits.")
@json_option("One JSON object per wait; duration is null only for a wait with no end.")
def waits(recording: Path, pid: str | None, limit: int, as_json: bool) -> None:
    """Every call to another process (GenServer.call, :gen_statem.call, gen_server2 and
    p1_server calls) made from traced code in recording REC: who waited, in which
    callback, on whom, for what, for how long, and how it ended (answered, timed out,
    callee exited, or waiting when the recording stopped). Recorded at the detailed
    and full levels."""
    with open_recording(recording) as rec:
        found = rec.waits((_process(pid) or pid) if pid else None, limit=limit)
    if as_json:
        output.json_rows(found)
        return
    rows = [[f"{wait.since:.3f}", "" if wait.duration is None else f"{wait.duration:.3f}",
             wait.span.pid_name or wait.pid, wait.caller.mfa if wait.caller else "",
             wait.callee, wait.request, wait.outcome + (f": {wait.detail}" if wait.detail
                                                         else "")] for wait in found]
    print_listing(f"{recording}: {len(found)} waits", ["since (s)", "waited (s)", "process",
                  "in", "on", "request", "outcome"], rows, right=2, cut=3)


def register(cli: click.Group) -> None:
    cli.add_command(waits)
