"""``waits``: the calls traced code made to other processes, and how each ended."""

from __future__ import annotations

from pathlib import Path

import click

from elixirscope.cli import output
from elixirscope.cli.listing import print_listing
from elixirscope.cli.options import json_option
from elixirscope.cli.recording_commands import _process, _time
from elixirscope.recordings import open_recording


@click.command()
@click.argument("recording", metavar="REC", type=click.Path(path_type=Path))
@click.option("--pid", "pid", metavar="PID", help="Only the waits of this process.")
@click.option("--limit", type=click.IntRange(min=1), default=1000, show_default=True,
              help="At most this many waits.")
@click.option("--at", "at", metavar="T", callback=_time,
              help="The waits-for graph at this moment (seconds from the start, 2.5s, "
                   "or an ISO time): the waits open then, and the cycles among them.")
@json_option("One JSON object per wait; duration is null only for a wait with no end.")
def waits(recording: Path, pid: str | None, limit: int, at: str | None,
          as_json: bool) -> None:
    """Every call to another process (GenServer.call, :gen_statem.call, gen_server2 and
    p1_server calls) made from traced code in recording REC: who waited, in which
    callback, on whom, for what, for how long, and how it ended (answered, timed out,
    callee exited, or waiting when the recording stopped). Recorded at the detailed
    and full levels."""
    if at is not None:
        _graph(recording, at, as_json)
        return
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


def _graph(recording: Path, at: str, as_json: bool) -> None:
    with open_recording(recording) as rec:
        graph = rec.waits_at(at)
        labels: dict[int | None, str] = {edge.callee_pid_id: rec.dims.label(edge.callee_pid_id)
                  for edge in graph.edges if edge.callee_pid_id is not None}
    in_cycle = {edge.wait.span.span_id for cycle in graph.cycles for edge in cycle}
    if as_json:
        for edge in graph.edges:
            output.json_line({**edge.wait.as_dict(),
                              "callee_pid": labels.get(edge.callee_pid_id),
                              "in_cycle": edge.wait.span.span_id in in_cycle})
        return
    rows = [[f"{graph.at - edge.wait.since:.3f}", edge.wait.span.pid_name or edge.wait.pid,
             "→", labels.get(edge.callee_pid_id, edge.wait.callee),
             "CYCLE" if edge.wait.span.span_id in in_cycle else "", edge.wait.request,
             edge.wait.caller.mfa if edge.wait.caller else ""]
            for edge in graph.edges]
    cycles = f", {len(graph.cycles)} cycle{'s' if len(graph.cycles) != 1 else ''}" \
        if graph.cycles else ", no cycle"
    print_listing(f"{recording}: waits-for graph at {graph.at:.3f} s: {len(rows)} waits"
                  f"{cycles}", ["for (s)", "waiter", "", "waits on", "", "request", "in"],
                  rows, right=1, cut=2)
