"""``diagnose``: what is wrong in a recording, worst first, each with its evidence and the
commands that show it."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

import click
from rich.markup import escape

from elixirscope.cli import output
from elixirscope.cli.options import json_option
from elixirscope.diagnosis.detectors import DETECTORS
from elixirscope.diagnosis.finding import Finding
from elixirscope.recording.store import RecordingError
from elixirscope.recordings import open_recording

_COLOURS = {"critical": "bold red", "error": "red", "warning": "yellow", "info": "cyan"}


@click.command()
@click.argument("recording", metavar="REC", type=click.Path(path_type=Path))
@click.option("--kind", "kinds", multiple=True, metavar="KIND",
              type=click.Choice([kind for kind, _ in DETECTORS]),
              help="Only these detectors (repeatable).")
@click.option("--refresh", is_flag=True,
              help="Run the detectors again even if the recording holds their findings.")
@json_option("One JSON object per finding, worst first.")
def diagnose(recording: Path, kinds: tuple[str, ...], refresh: bool, as_json: bool) -> None:
    """What is wrong in recording REC: deadlocks and call cycles, crash cascades and
    restart storms, overloaded mailboxes, lost updates, N+1 calls, latency outliers
    and busy processes, worst first. Each finding names the functions and messages at
    fault, its time range, its processes, its evidence (event, span, message and wait
    ids) and the commands that show it. The findings are stored in the recording, and
    found again only when the detectors change (or with --refresh)."""
    found = diagnosed(recording, refresh=refresh)
    if kinds:
        found = [finding for finding in found if finding.kind in kinds]
    if as_json:
        path = shlex.quote(str(recording))
        for finding in found:
            row = finding.as_dict()
            row["next_commands"] = [command.replace("REC", path, 1)
                                    for command in finding.next_commands]
            output.json_line(row)
        return
    print_findings(found, recording)


def print_findings(found: Sequence[Finding], recording: Path) -> None:
    """The findings as a numbered list, each with its facts and next commands."""
    path = shlex.quote(str(recording))
    if not found:
        output.out.print(f"{escape(str(recording))}: no findings: no deadlock, crash, "
                         "overload, lost update, N+1 or outlier in what was recorded",
                         markup=True)
        return
    output.out.print(f"{escape(str(recording))}: {len(found)} finding"
                     f"{'s' if len(found) != 1 else ''}, worst first", markup=True)
    for number, finding in enumerate(found, start=1):
        colour = _COLOURS[finding.severity]
        when = "" if finding.start is None else (
            f" at {finding.start:.3f} s" if finding.end in (None, finding.start)
            else f" {finding.start:.3f}–{finding.end:.3f} s")
        output.out.print(f"\n{number:>2}. [{colour}]{finding.severity.upper()}[/] "
                         f"{finding.kind}{when}", markup=True)
        output.out.print(f"    {escape(finding.title)}", markup=True)
        for line in finding.details:
            output.out.print(f"    · {escape(line)}", markup=True)
        for command in finding.next_commands:
            output.out.print(f"    → {escape(command.replace('REC', path, 1))}", markup=True)


def diagnosed(recording: Path, *, refresh: bool = False) -> list[Finding]:
    """The recording's findings: read back when the current detectors stored them,
    else found now and stored (found without storing when the file is open elsewhere,
    read-only: another process, or this one's web UI)."""
    if not refresh:
        with open_recording(recording) as rec:
            found = rec.stored_findings()
        if found is not None:
            return found
    try:
        rec = open_recording(recording, writable=True)
    except RecordingError:
        rec = open_recording(recording)
    with rec:
        return rec.findings(refresh=True)
