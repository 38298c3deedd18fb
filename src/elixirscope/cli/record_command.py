"""``elixirscope record``: attach to a node, trace what the user names, record to a file."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, cast

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

from elixirscope.beam_names import mfa_display, parse_mfa_text
from elixirscope.cli import output
from elixirscope.cli.diagnose_command import diagnosed
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
from elixirscope.errors import ElixirScopeError
from elixirscope.etf import Atom
from elixirscope.planner import Plan, apply_plan
from elixirscope.recording.correlate import PHASES
from elixirscope.recording.recorder import Recorder, RecorderStats
from elixirscope.recording.ring import OVERFLOWS
from elixirscope.tracing.scope import (
    DEFAULT_INCLUDES,
    INCLUDES,
    Level,
    NoStateCallbacks,
    Scope,
    TraceError,
    attach,
)
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
              show_default=True, help="For --trace and --trace-function: calls only; "
              "also returns, exceptions and waits on other processes; also functions "
              "that are not exported, and callers.")
@click.option("--trace-function", "functions", multiple=True, metavar="M.F[/A]",
              help="Trace one function, e.g. Bank.Account.deposit/2 (repeatable).")
@click.option("--global-only", is_flag=True,
              help="For --trace: only calls written Module.fun(...) (cheaper where most "
              "calls are local; calls from inside the module are then not seen).")
@click.option("--trace-process", "processes", multiple=True, metavar="PID|NAME",
              help="Trace a process's messages, calls and lifecycle (repeatable). A name "
              "follows whoever holds it (a restarted process is traced too).")
@click.option("--include", "includes", default=",".join(DEFAULT_INCLUDES), show_default=True,
              metavar="WHAT,...", help="For --trace-process: any of messages, calls, "
              "lifecycle, state.")
@click.option("--children", is_flag=True, help="With --trace-process: its children too, "
              "those alive now and those it starts.")
@click.option("--force", is_flag=True,
              help="Trace even when another tracer (dbg, recon, a session) is on the node.")
@click.option("--setup-timeout", type=click.FloatRange(min=0.1), default=10.0,
              show_default=True, help="Seconds each trace may take to start on a busy "
                                      "node; a start that takes longer is undone.")
@click.option("--partial-ok", is_flag=True,
              help="Exit 0 even when a limit stopped the tracing before the end.")
@click.option("--plan", "plan_path", type=click.Path(exists=True, dir_okay=False,
                                                   path_type=Path),
              default=None, help="Trace what a plan file says (elixirscope plan -o FILE).")
@click.option("--phoenix", "phoenix", is_flag=True,
              help="Trace the framework layer through :telemetry, nothing added to the app: "
                   "HTTP requests, LiveView callbacks with their assigns as state, channel "
                   "joins and handle_in, Ecto queries (see requests, queries, liveviews).")
@click.option("--redact", "redact", metavar="KEYS",
              help="With --phoenix: comma-separated key fragments whose values are "
                   "redacted in the node (default: password, secret, token, csrf, api_key, "
                   "authorization, cookie, ...).")
@click.option("--state", "with_state", is_flag=True,
              help="Also record every state change of the traced GenServers, gen_statems "
                   "and Agents (for elixirscope state/history).")
@click.option("--duration", type=click.FloatRange(min=0.1), default=None,
              help="Seconds to record (default: until Ctrl-C).")
@click.option("--metrics-hz", type=click.FloatRange(min=0, max=10), default=10.0,
              show_default=True, help="Process metrics samples per second (mailbox, "
              "memory, reductions, status, current function; 0: none), for "
              "elixirscope top and diagnose.")
@click.option("--metrics-top", type=click.IntRange(min=0), default=10, show_default=True,
              help="Sample the traced processes and the node's N largest by mailbox, "
                   "memory and reductions.")
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
           level: str, functions: tuple[str, ...], global_only: bool,
           processes: tuple[str, ...], includes: str, children: bool, force: bool,
           setup_timeout: float, partial_ok: bool, plan_path: Path | None, phoenix: bool,
           redact: str | None,
           with_state: bool, duration: float | None,
           metrics_hz: float, metrics_top: int, path: Path | None, overflow: str,
           capacity: int, with_ui: bool, host: str, port: int, no_token: bool,
           as_json: bool, **limits: float | None) -> None:
    """Records what NODE does to a file: the calls of the modules and functions named,
    and the messages and lifecycle of the processes named. The recorder starts first,
    then the traces; --duration counts from when they are all on. Ctrl-C stops cleanly;
    with --ui the recording is shown live in the browser at the printed URL. Exits 1
    when a limit stopped the tracing early (the recording keeps what it captured),
    unless --partial-ok."""
    if not (modules or functions or processes or phoenix or plan_path):
        raise click.UsageError("name something to trace: --trace MODULE, "
                               "--trace-function M.F/A, --trace-process PID, --phoenix "
                               "or --plan FILE")
    planned = Plan.load(plan_path) if plan_path is not None else None
    if capacity < 1 or capacity & (capacity - 1):
        raise click.BadParameter(f"{capacity} is not a power of two", param_hint="--capacity")
    include = [item.strip() for item in includes.split(",") if item.strip()]
    unknown = sorted(set(include) - set(INCLUDES))
    if unknown or not include:
        raise click.BadParameter(f"takes {', '.join(INCLUDES)}, not "
                                 f"{', '.join(unknown) or 'nothing'}", param_hint="--include")
    if with_state and "state" not in include:
        include.append("state")
    parsed = [parse_mfa_text(text) for text in functions]
    target = path or default_path(node)
    live = LiveUI(UIOptions(host, port, not no_token)) if with_ui else None
    if live is not None:
        check_port(live.options)

    def start_traces(scope: Scope) -> None:
        scope.ascope.setup_timeout = setup_timeout
        for module in modules:
            trace_module(scope, module, level, state=with_state, force=force,
                         calls="global" if global_only else "local")
        for module, function, arity in parsed:
            scope.trace_function(module, function, arity, level=level, force=force)
        for process in processes:
            scope.trace_process(process, include_children=children, include=include,
                                force=force)
        if planned is not None:
            apply_plan(scope, planned, force=force)
        if phoenix:
            trace_phoenix(scope, force=force, redact=None if redact is None else
                          [key.strip() for key in redact.split(",") if key.strip()],
                          alone=not (modules or functions or processes or planned))
        if metrics_hz > 0:
            scope.sample_metrics(metrics_top, metrics_hz)
        output.err.print(f"tracing {scope.node.name} into {target} since "
                         f"{datetime.now().strftime('%H:%M:%S.%f')[:-3]}"
                         + (f" for {duration:g} s" if duration else "; Ctrl-C to stop"))
        for line in in_flight(scope):
            output.err.print(f"  at the start, {line}")

    with connect(node, cookie, own_name=name) as conn, \
            attach(conn, None, **{k: v for k, v in limits.items() if v is not None}) as scope:
        for degraded in scope.capabilities.degraded:
            if "you set" in degraded:
                output.err.print(f"note: {degraded}")
        stats = record_for(scope, target, duration, overflow=overflow, capacity=capacity,
                           live=not as_json, ui=live, before=start_traces)
        notes = nothing_seen(scope)
        counters = scope.status()[Atom("counters")]
        discarded = int(counters.get(Atom("discarded"), 0))
        if discarded:
            notes.append(f"{discarded:,} trace messages that were waiting in the agent when "
                         "the tracing stopped were discarded")
    findings = diagnosed(target)
    if as_json:
        output.json_line(stats_dict(stats) | {"path": str(target), "notes": notes,
                                               "agent_discarded": discarded,
                                               "findings": [f.title for f in findings]})
    else:
        for note in notes:
            output.err.print(f"note: {note}")
        output.err.print(stats_line(stats))
        for finding in findings[:3]:
            output.err.print(f"{finding.severity}: {finding.title}")
        if findings:
            output.err.print(f"  {len(findings)} finding{'s' if len(findings) != 1 else ''}"
                             f": elixirscope diagnose {target}")
        output.out.print(f"recording: {target}")
        if live is None:
            output.err.print(f"  try: elixirscope spans {target} --slowest 10"
                             f"\n       elixirscope ui {target}")
    if live is not None and live.server is not None:
        output.err.print(f"the recording is finished; the UI now shows it whole: "
                         f"{live.server.url}")
        serve_forever(live.server)
    if stats.breaker and not partial_ok:
        output.error(f"{stats.stop_message or stats.breaker}; the recording keeps what was "
                     f"captured ({target}); --partial-ok exits 0 in this case")
        raise click.exceptions.Exit(1)


def in_flight(scope: Scope) -> list[str]:
    """What each traced process was doing when its trace switched on: the messages
    already queued (they have no receive event in the recording) and where it was."""
    lines = []
    for info in scope.list_traces():
        if info.pid is None:
            continue
        found = scope.node.rpc("erlang", "process_info", [info.pid, [
            Atom("message_queue_len"), Atom("current_function"), Atom("status")]])
        if not isinstance(found, list):
            lines.append(f"{info.target} was gone")
            continue
        facts = dict(found)
        queued = int(facts.get(Atom("message_queue_len"), 0))
        where = facts.get(Atom("current_function"))
        where_text = (f" in {mfa_display(str(where[0]), str(where[1]), int(where[2]))}"
                      if isinstance(where, tuple) and len(where) == 3 else "")
        lines.append(f"{info.target} had {queued:,} message"
                     f"{'' if queued == 1 else 's'} queued, {facts.get(Atom('status'))}"
                     f"{where_text}")
    return lines


def nothing_seen(scope: Scope) -> list[str]:
    """A sentence for each trace that recorded nothing, with the likely reason."""
    notes = []
    for info in scope.list_traces():
        if info.captured or info.dropped or info.sampled_out:
            continue
        options = info.options
        if info.kind == "process":
            alive = info.pid is not None and scope.node.rpc("erlang", "is_process_alive",
                                                            [info.pid])
            why = ("the process is gone" if not alive else
                   "the process did nothing of what was traced "
                   f"({', '.join(str(i) for i in options.get('include', []))})")
        elif str(options.get("calls", "local")) == "global":
            why = ("no call from outside reached it; with --global-only, calls from inside "
                   "the module are not seen")
        else:
            why = "no process called it while recording"
        notes.append(f"{info.kind} trace of {info.target} recorded nothing: {why}")
    return notes + narrowed_notes(scope)


def narrowed_notes(scope: Scope) -> list[str]:
    """A sentence for each function the agent stopped tracing, or traces with less,
    to keep the node's cost down."""
    notes = []
    for info in scope.list_traces():
        for mfa, elided, values, left_at in info.options.get("narrowed", []):
            name = mfa_display(*mfa)
            if isinstance(left_at, int):
                when = datetime.fromtimestamp(left_at / 1000).strftime("%H:%M:%S")
                notes.append(f"{name} was called too often and left the trace at {when}, to "
                             f"keep the node's cost down; trace it on its own with "
                             f"--trace-function {name} to see it")
            elif not values:
                notes.append(f"{name}: its values were too large to ship (past "
                             "--elide-arg-bytes); its calls are recorded with their time only")
            elif elided:
                notes.append(f"{name}: arguments {', '.join(map(str, elided))} were too large "
                             "to ship and are shown as #elided")
    return notes


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


def trace_module(scope: Scope, module: str, level: str, *, state: bool, force: bool = False,
                 calls: str = "local", only: Sequence[str] | None = None) -> None:
    """Traces a module (``only`` those functions, by name); with ``state``, its
    processes' state changes too where it is a GenServer or gen_statem callback module
    (a note says where it is not)."""
    if state:
        try:
            scope.trace(module, cast(Level, level), state=True, force=force, calls=calls,
                        only=only)
            return
        except NoStateCallbacks as exc:
            output.err.print(f"note: {exc}; its calls are traced without state")
    scope.trace(module, cast(Level, level), force=force, calls=calls, only=only)


def trace_phoenix(scope: Scope, *, force: bool, redact: list[str] | None,
                  alone: bool) -> None:
    """The framework layer; on a node without it (no :telemetry loaded) a note, and the
    other traces go on, unless it was all that was asked for."""
    try:
        scope.trace_framework(force=force, redact=redact)
    except TraceError as exc:
        if alone or "telemetry is not loaded" not in str(exc):
            raise
        output.err.print(f"note: {exc}; the other traces go on")


def sampling_news(said: float, now: float, since: float) -> bool:
    """Whether a change of the kept share is worth a line: sampling began or ended,
    or the share moved twofold from the last one said, at most every two seconds (the
    agent retunes it four times a second; the progress line shows it as it is)."""
    if (said >= 1.0) != (now >= 1.0):
        return True
    return since >= 2.0 and not said / 2 < now < said * 2


def record_for(scope: Scope, path: Path, duration: float | None, *, overflow: str = "block",
               capacity: int = 1 << 20, live: bool = True,
               before: Callable[[Scope], None] | None = None,
               ui: LiveUI | None = None) -> RecorderStats:
    """Records until ``duration`` passes, Ctrl-C or the connection drops, with a live
    progress line; then finishes the file and returns the final counts. ``before``
    runs once the recorder is taking events; ``ui`` shows the recording live."""
    recorder = scope.record(path, overflow=overflow, capacity=capacity)
    try:
        if ui is not None:
            ui.attach(recorder)
        if before is not None:
            before(scope)
    except BaseException:
        # Nothing was recorded as asked: no file is left to mistake for a recording.
        with contextlib.suppress(ElixirScopeError):
            _stop(recorder)
        for leftover in (path, path.with_name(path.name + ".wal")):
            leftover.unlink(missing_ok=True)
        raise
    began = time.monotonic()
    deadline = None if duration is None else began + duration
    lost = scope.node.anode.closed
    line = Live(Text(""), console=output.err, transient=True, auto_refresh=False) \
        if live else None
    sampling, said_at = 1.0, 0.0
    try:
        with line or contextlib.nullcontext():
            while not lost.done() and (deadline is None or time.monotonic() < deadline):
                time.sleep(0.25)
                stats = recorder.stats
                at = time.monotonic() - began
                if sampling_news(sampling, stats.adaptive_rate, at - said_at):
                    output.err.print(f"at {at:.1f} s: the agent now keeps "
                                     f"{stats.adaptive_rate:.0%} of the events (adaptive "
                                     "sampling under --max-events-per-second)")
                    sampling, said_at = stats.adaptive_rate, at
                if stats.breaker:
                    output.err.print(f"at {at:.1f} s: {stats.stop_message or stats.breaker}")
                    break
                if line is not None:
                    line.update(Text(stats_line(stats)), refresh=True)
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
    """The recording in one line: what it holds, what was lost and where, what sampling
    left out, and whether a limit stopped the tracing."""
    breaker = f"stopped by {stats.breaker}" if stats.breaker else "no limit reached"
    lost = f" · {stats.lost_batches:,} batches lost in transit" if stats.lost_batches else ""
    return (f"{stats.events:,} events stored · {stats.rate:,.0f}/s · {stats.elapsed:.1f} s · "
            f"dropped {stats.dropped:,} · sampled out {stats.agent_sampled_out:,} · "
            f"{stats.kept_share:.1%} of traced events kept{lost} · {breaker}")


def stats_dict(stats: RecorderStats) -> dict[str, Any]:
    ring = stats.ring
    return {
        "events": stats.events, "written": stats.written, "rate": round(stats.rate, 1),
        "elapsed": round(stats.elapsed, 3), "dropped": stats.dropped,
        "agent_dropped": stats.agent_dropped, "agent_sampled_out": stats.agent_sampled_out,
        "lost_batches": stats.lost_batches, "ring_dropped_oldest": ring.dropped_oldest,
        "ring_dropped_newest": ring.dropped_newest, "ring_blocked": ring.blocked,
        "adaptive_rate": stats.adaptive_rate, "breaker": stats.breaker,
        "stop_message": stats.stop_message, "discarded_at_stop": stats.discarded_at_stop,
        "kept_share": round(stats.kept_share, 4),
    }


def default_path(node: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path(f"{node.split('@', maxsplit=1)[0]}-{stamp}.duckdb")
