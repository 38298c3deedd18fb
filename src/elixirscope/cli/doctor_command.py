"""``doctor``: attach to a node nobody configured, record what its busiest processes do
for a while, and print what is wrong."""

from __future__ import annotations

from pathlib import Path

import click

from elixirscope.cli import output
from elixirscope.cli.diagnose_command import diagnosed, print_findings
from elixirscope.cli.options import json_option, node_options
from elixirscope.cli.record_command import (
    default_path,
    limit_options,
    nothing_seen,
    record_for,
    stats_line,
    trace_module,
)
from elixirscope.dist.node import connect
from elixirscope.doctor_plan import DoctorPlan, plan
from elixirscope.errors import ElixirScopeError
from elixirscope.tracing.scope import Scope, attach

# What doctor traces of a module whose processes are very busy: one callback per
# message is what the detectors need (with the waits and state they bring).
CALLBACKS = ("init", "handle_call", "handle_cast", "handle_info", "handle_continue",
             "handle_event", "terminate", "code_change")


@click.command()
@node_options
@click.option("--duration", type=click.FloatRange(min=1), default=10.0, show_default=True,
              help="Seconds to record.")
@click.option("--top", type=click.IntRange(min=1, max=50), default=5, show_default=True,
              help="Trace the N busiest processes and the N with the longest mailboxes.")
@click.option("-o", "--output", "path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="The recording file (default: a new file here).")
@limit_options
@json_option("One JSON object per finding, worst first.")
def doctor(node: str, cookie: str | None, name: str | None, duration: float, top: int,
           path: Path | None, as_json: bool, **limits: float | None) -> None:
    """Finds what is wrong with NODE, with nothing configured: measures which
    processes are busiest and have the longest mailboxes, traces them and the
    application modules they run (local calls, waits on other processes, state,
    messages, process metrics) for --duration seconds under the safety limits, then
    prints the findings, worst first, and where the recording is. Everything it
    traced is removed when it ends."""
    target = path or default_path(node)
    with connect(node, cookie, own_name=name) as conn, \
            attach(conn, None, **{k: v for k, v in limits.items() if v is not None}) as scope:
        chosen = conn.run(plan(conn.anode, top=top, skip=[scope.ascope.relay]))
        _say(chosen, node)

        def start(scope: Scope) -> None:
            # The cheap first: metrics, then messages and lifecycle, then calls.
            scope.sample_metrics(max(10, 2 * top), 10.0)
            for candidate in chosen.processes:
                try:
                    scope.trace_process(candidate.pid, include=["messages", "lifecycle"])
                except ElixirScopeError as exc:
                    output.err.print(f"note: {candidate.label} is not traced: {exc}")
            for module in chosen.modules:
                busy = module in chosen.global_only
                try:
                    trace_module(scope, module, "detailed", state=True,
                                 calls="global" if busy else "local",
                                 only=CALLBACKS if busy else None)
                except ElixirScopeError as exc:
                    output.err.print(f"note: {module} is not traced: {exc}")
            output.err.print(f"recording {node} into {target} for {duration:g} s")

        stats = record_for(scope, target, duration, live=not as_json, before=start)
        notes = nothing_seen(scope)
    for note in notes:
        output.err.print(f"note: {note}")
    output.err.print(stats_line(stats))
    found = diagnosed(target)
    if as_json:
        for finding in found:
            output.json_line(finding.as_dict() | {"recording": str(target)})
        return
    print_findings(found, target)
    output.out.print(f"\nrecording: {target}")


def _say(chosen: DoctorPlan, node: str) -> None:
    if not chosen.processes:
        output.err.print(f"{node}: no application process was busy or had a mailbox; "
                         "recording process metrics only")
        return
    shown = ", ".join(f"{c.label} ({c.queue:,} queued, {c.reductions:,} reductions"
                      f"{', waiting in a call' if c.in_call else ''})"
                      for c in chosen.processes[:8])
    output.err.print(f"{node}: the busiest processes and longest mailboxes: {shown}")
    local = [m for m in chosen.modules if m not in chosen.global_only]
    if local:
        output.err.print(f"tracing {', '.join(local)} (local calls, waits, state)")
    if chosen.global_only:
        output.err.print(f"tracing {', '.join(chosen.global_only)} (their behaviour callbacks, "
                         "waits, state: their processes are too busy for every call)")
    output.err.print("and those processes' messages and lifecycle, with process metrics")
