"""A recording's summary on the terminal (``demo``, ``record``) or as JSON."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from elixirscope.cli import output
from elixirscope.recordings import Recording

_CRASHES_SHOWN = 3
_TEXT = 110


def summary_json(recording: Recording) -> dict[str, Any]:
    summary = recording.summary()
    summary["crash_chains"] = [
        {"crash": crash["seq"],
         "causes": [step.as_dict() for step in recording.causes(crash["seq"])]}
        for crash in summary["crashes"][:_CRASHES_SHOWN]]
    return summary


def print_summary(recording: Recording) -> None:
    summary = recording.summary()
    out = output.out
    nodes = ", ".join(summary["nodes"])
    out.print(f"\n[bold]{nodes}[/]: {summary['events']:,} events in "
              f"{summary['duration']:.1f} s · {summary['processes']:,} processes · "
              f"{summary['spans']:,} spans · {summary['messages']:,} messages")

    busiest = Table("function", "calls", box=None, title="busiest functions",
                    title_justify="left")
    for row in summary["busiest_functions"]:
        busiest.add_row(row["mfa"], f"{row['calls']:,}")
    out.print(busiest)

    slowest = Table("function", "process", "at", "duration", "outcome", box=None,
                    title="slowest spans", title_justify="left")
    for span in summary["slowest_spans"]:
        who = span["pid_name"] or span["pid"]
        took = "open" if span["duration"] is None else f"{span['duration'] * 1000:.1f} ms"
        slowest.add_row(span["mfa"], who, f"{span['start']:.3f} s", took, span["outcome"])
    out.print(slowest)

    crashes = summary["crashes"]
    out.print(f"[bold]crashes[/]: {len(crashes)}")
    for crash in crashes[:_CRASHES_SHOWN]:
        who = crash["pid_name"] or crash["pid"]
        out.print(escape(f"  {crash['time']:.3f} s  {who} exited: {_cut(crash['reason'])}"))
        for step in recording.causes(crash["seq"]):
            event = step.event
            where = event.mfa or event.kind
            out.print(escape(f"      ← {_cut(step.relation)} ({event.pid_name or event.pid}, "
                             f"{where}, {event.time:.3f} s)"))

    losses = summary["losses"]
    drops = (summary.get("meta") or {}).get("drops") or {}
    lost = {source: counts["events"] or counts["batches"] for source, counts in losses.items()}
    ring = {key: value for key, value in drops.items()
            if key in ("drop_oldest", "drop_newest") and value}
    if not lost and not ring:
        out.print("[bold]drops[/]: none")
    else:
        parts = [f"{source} {count:,}" for source, count in {**lost, **ring}.items()]
        out.print(f"[bold]drops[/]: {', '.join(parts)}")
    for trip in summary["breaker_trips"]:
        out.print(f"[bold]breaker[/] tripped at {trip['time']:.3f} s: {escape(trip['detail'])}")
    if summary.get("recovered"):
        out.print("note: the recording was not closed cleanly; it was recovered on opening")


def _cut(text: str) -> str:
    return text if len(text) <= _TEXT else text[: _TEXT - 1] + "…"
