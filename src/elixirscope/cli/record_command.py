"""``elixirscope record``: attach to a node, trace what the user names, record to a file."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import click
from rich.live import Live
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from elixirscope.beam_names import parse_mfa_text
from elixirscope.cli import output
from elixirscope.cli.options import json_option, node_options
from elixirscope.cli.ui_command import (
    UIOptions,
    announce,
    check_port,
    serve_forever,
    start_server,
    ui_options,
)
from elixirscope.dist.node import connect
from elixirscope.recording.correlate import PHASES
from elixirscope.recording.recorder import Recorder, RecorderStats
from elixirscope.recording.ring import OVERFLOWS
from elixirscope.tracing.scope import DEFAULT_INCLUDES, NoStateCallbacks, Scope, attach
from elixirscope.web.app import UIServer
from elixirscope.web.model import View

_LIMIT_OPTIONS = {
    "max_events_per_second": "Events per second the agent keeps before sampling, then "
                             "stopping.",
    "max_events": "Events in all, then the agent stops tracing.",
    "max_term_bytes": "Bytes of one argument, return or message payload before it is cut.",
    "max_queue_len": "Trace messages waiting in the agent before it stops tracing.",
    "max_relay_memory_mb": "Memory (MB) of the agent's relay, counted whole, at which it "
                           "stops tracing (default 256).",
    "elide_arg_bytes": "Bytes past which a function's arguments or values stop being "
                       "shipped (default 2048).",
    "max_node_memory_mb": "Node memory (MB) at which the agent stops tracing.",
    "max_cpu_percent": "Node CPU use at which the agent stops tracing (needs os_mon).",
}


def limit_options(command: Any) -> Any:
    for name, text in reversed(_LIMIT_OPTIONS.items()):
        command = click.option(f"--{name.replace('_', '-')}", name, type=float, default=None,
                               help=text)(command)
    return command


@click.command()
@node_options
@click.option("--trace", "modules", multiple=True, metavar="MODULE",
              help="Trace the calls of a module's functions (repeatable).")
@click.option("--level", type=click.Choice(["basic", "detailed", "full"]), default="detailed",
              show_default=True, help="For --trace: calls only; also returns and "
              "exceptions; also local functions and callers.")
@click.option("--trace-function", "functions", multiple=True, metavar="M.F[/A]",
              help="Trace one function, e.g. Bank.Account.deposit/2 (repeatable).")
@click.option("--trace-process", "processes", multiple=True, metavar="PID|NAME",
              help="Trace a process's messages, calls and lifecycle (repeatable).")
@click.option("--children", is_flag=True, help="With --trace-process: its children too.")
@click.option("--state", "with_state", is_flag=True,
              help="Also record every state change of the traced GenServers, gen_statems "
                   "and Agents (for elixirscope state/history).")
@click.option("--duration", type=click.FloatRange(min=0.1), default=None,
              help="Seconds to record (default: until Ctrl-C).")
@click.option("-o", "--output", "path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="The recording file (default: a new file here).")
@click.option("--overflow", type=click.Choice(OVERFLOWS), default="block", show_default=True,
              help="When the recorder falls behind: wait (the agent sheds load inside "
              "the VM), or drop the oldest or newest events here.")
@click.option("--capacity", type=int, default=1 << 20, show_default=True,
              help="Events the ring buffer holds (a power of two).")
@limit_options
@click.option("--ui", "with_ui", is_flag=True,
              help="Serve the web UI while recording (live), and after, until Ctrl-C.")
@ui_options
@json_option("The final statistics as one JSON line.")
def record(node: str, cookie: str | None, name: str | None, modules: tuple[str, ...],
           level: str, functions: tuple[str, ...], processes: tuple[str, ...],
           children: bool, with_state: bool, duration: float | None, path: Path | None,
           overflow: str, capacity: int, with_ui: bool, host: str, port: int, no_token: bool,
           as_json: bool, **limits: float | None) -> None:
    """Records what NODE does to a file: the calls of the modules and functions named,
    and the messages and lifecycle of the processes named. Ctrl-C stops cleanly; with
    --ui the recording is shown live in the browser at the printed URL."""
    if not (modules or functions or processes):
        raise click.UsageError("name something to trace: --trace MODULE, "
                               "--trace-function M.F/A or --trace-process PID")
    if capacity < 1 or capacity & (capacity - 1):
        raise click.BadParameter(f"{capacity} is not a power of two", param_hint="--capacity")
    parsed = [parse_mfa_text(text) for text in functions]
    target = path or default_path(node)
    live = LiveUI(UIOptions(host, port, not no_token)) if with_ui else None
    if live is not None:
        check_port(live.options)
    with connect(node, cookie, own_name=name) as conn, \
            attach(conn, None, **{k: v for k, v in limits.items() if v is not None}) as scope:
        for degraded in scope.capabilities.degraded:
            if "you set" in degraded:
                output.err.print(f"note: {degraded}")
        for module in modules:
            trace_module(scope, module, level, state=with_state)
        for module, function, arity in parsed:
            scope.trace_function(module, function, arity)
        for process in processes:
            scope.trace_process(process, include_children=children,
                                include=[*DEFAULT_INCLUDES, *(["state"] if with_state else [])])
        output.err.print(f"recording {conn.name} to {target}"
                         + ("" if duration else "; Ctrl-C to stop"))
        stats = record_for(scope, target, duration, overflow=overflow, capacity=capacity,
                           live=not as_json, ui=live)
    if as_json:
        output.json_line(stats_dict(stats) | {"path": str(target)})
    else:
        output.err.print(stats_line(stats))
        output.out.print(f"recording: {target}")
        if live is None:
            output.err.print(f"  try: elixirscope spans {target} --slowest 10"
                             f"\n       elixirscope ui {target}")
    if live is not None and live.server is not None:
        output.err.print(f"the recording is finished; the UI now shows it whole: "
                         f"{live.server.url}")
        serve_forever(live.server)


class LiveUI:
    """The web UI of a recording while it is written (``record --ui``): it reads
    through cursors of the recorder's own connection, stops reading before the
    recorder closes the file, then shows the finished recording."""

    def __init__(self, options: UIOptions) -> None:
        self.options = options
        self.server: UIServer | None = None

    def attach(self, recorder: Recorder) -> None:
        self.server = start_server(View.of_recorder(recorder), self.options)
        announce(self.server, "live UI")

    def finishing(self) -> None:
        if self.server is not None:
            self.server.session.begin_finishing()

    def finished(self, path: Path) -> None:
        if self.server is not None:
            self.server.session.replace(View.finished(path))


def trace_module(scope: Scope, module: str, level: str, *, state: bool) -> None:
    """Traces a module; with ``state``, its processes' state changes too where it is
    a GenServer or gen_statem callback module (a note says where it is not)."""
    if state:
        try:
            scope.trace(module, level, state=True)  # type: ignore[arg-type]
            return
        except NoStateCallbacks as exc:
            output.err.print(f"note: {exc}; its calls are traced without state")
    scope.trace(module, level)  # type: ignore[arg-type]


def record_for(scope: Scope, path: Path, duration: float | None, *, overflow: str = "block",
               capacity: int = 1 << 20, live: bool = True,
               before: Callable[[Scope], None] | None = None,
               ui: LiveUI | None = None) -> RecorderStats:
    """Records until ``duration`` passes, Ctrl-C or the connection drops, with a live
    progress line; then finishes the file and returns the final counts. ``before``
    runs once the recorder is taking events; ``ui`` shows the recording live."""
    recorder = scope.record(path, overflow=overflow, capacity=capacity)
    if ui is not None:
        try:
            ui.attach(recorder)
        except BaseException:
            _stop(recorder)
            raise
    if before is not None:
        before(scope)
    deadline = None if duration is None else time.monotonic() + duration
    lost = scope.node.anode.closed
    line = Live(Text(""), console=output.err, transient=True, auto_refresh=False) \
        if live else None
    try:
        with line or contextlib.nullcontext():
            while not lost.done() and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.25)
                if line is not None:
                    line.update(Text(stats_line(recorder.stats)), refresh=True)
    except KeyboardInterrupt:
        output.err.print("stopping ...")
    if lost.done():
        output.err.print(f"the connection to {scope.node.name} was lost; the recording "
                         "keeps everything that arrived")
    output.err.print("finishing the recording: correlating calls, spans and messages ...")
    if ui is not None:
        ui.finishing()
    stats = _stop(recorder, live)
    if ui is not None:
        ui.finished(path)
    return stats


def _stop(recorder: Recorder, live: bool = False) -> RecorderStats:
    """Stops and finishes the recording; with ``live``, a progress line says which
    phase of the finish it is in and for how long (a 10 M-event recording takes half a
    minute)."""
    bar = Progress(SpinnerColumn(), TextColumn("finishing: {task.description}"),
                   BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=output.err, transient=True) if live else None
    task = bar.add_task("flushing", total=len(PHASES)) if bar is not None else None

    def progress(phase: str, number: int, phases: int) -> None:
        if bar is not None and task is not None:
            bar.update(task, description=phase, completed=number - 1, total=phases)

    with bar or contextlib.nullcontext():
        try:
            return recorder.stop(progress)
        except KeyboardInterrupt:
            output.err.print("finishing anyway: an interrupted finish would leave the "
                             "file to be recovered when opened")
            return recorder.stop(progress)


def stats_line(stats: RecorderStats) -> str:
    breaker = f"breaker tripped ({stats.breaker})" if stats.breaker else "breaker ok"
    sampling = f"sampling {stats.adaptive_rate:.0%}"
    return (f"{stats.events:,} events · {stats.rate:,.0f}/s · {stats.elapsed:.1f} s · "
            f"dropped {stats.dropped:,} · {sampling} · {breaker}")


def stats_dict(stats: RecorderStats) -> dict[str, Any]:
    ring = stats.ring
    return {
        "events": stats.events, "written": stats.written, "rate": round(stats.rate, 1),
        "elapsed": round(stats.elapsed, 3), "dropped": stats.dropped,
        "agent_dropped": stats.agent_dropped, "agent_sampled_out": stats.agent_sampled_out,
        "lost_batches": stats.lost_batches, "ring_dropped_oldest": ring.dropped_oldest,
        "ring_dropped_newest": ring.dropped_newest, "ring_blocked": ring.blocked,
        "adaptive_rate": stats.adaptive_rate, "breaker": stats.breaker,
    }


def default_path(node: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(f"{node.split('@', maxsplit=1)[0]}-{stamp}.duckdb")


def register(group: click.Group) -> None:
    group.add_command(record)

