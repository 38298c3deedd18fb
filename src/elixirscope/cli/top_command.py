"""``top``: the processes of a recording at a moment, by mailbox, memory or reductions,
from the process metrics sampled while recording."""

from __future__ import annotations

from pathlib import Path

import click

from elixirscope.analysis.metrics import SORTS, top_at
from elixirscope.cli import output
from elixirscope.cli.listing import print_listing
from elixirscope.cli.options import json_option
from elixirscope.cli.recording_commands import _time
from elixirscope.recordings import open_recording


@click.command()
@click.argument("recording", metavar="REC", type=click.Path(path_type=Path))
@click.option("--at", "at", metavar="T", callback=_time, required=True,
              help="The moment: seconds from the start, 2.5s, or an ISO time.")
@click.option("--sort", type=click.Choice(list(SORTS)), default="queue", show_default=True,
              help="Largest mailbox, memory, or reductions per second first.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True,
              help="At most this many processes.")
@json_option("One JSON object per process.")
def top(recording: Path, at: str, sort: str, limit: int, as_json: bool) -> None:
    """The processes of recording REC as they were at time T: mailbox length, memory,
    reductions per second, status and current function, from the metrics sampled
    while recording (the traced processes and the node's busiest)."""
    with open_recording(recording) as rec:
        found = top_at(rec, at, sort=sort, limit=limit)
    if as_json:
        output.json_rows(found)
        return
    rows = [[f"{sample.queue:,}", f"{sample.memory / 1024:,.0f} KB",
             "" if sample.reductions_per_s is None else f"{sample.reductions_per_s:,.0f}",
             f"{sample.time:.3f}", sample.pid, sample.name or "", sample.status,
             sample.current_function] for sample in found]
    print_listing(f"{recording}: {len(found)} processes at {at} s, by {sort}",
                  ["mailbox", "memory", "reds/s", "sampled", "pid", "name", "status",
                   "current function"], rows, right=4, cut=1)
