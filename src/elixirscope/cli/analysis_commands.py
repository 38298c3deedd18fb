"""Commands that analyse a recording: ``traceback``, ``range``, ``stats``, ``repeats``,
``find``, ``step`` and (side-effecting, opt-in) ``rerun``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.text import Text

from elixirscope.analysis.call_stats import BYS, SORTS
from elixirscope.analysis.find import recorded_pid
from elixirscope.analysis.literal import LiteralError, parse_term
from elixirscope.analysis.results import FunctionStats, RangeNode, Traceback
from elixirscope.analysis.stepping import WAYS
from elixirscope.cli import output
from elixirscope.cli.listing import print_listing
from elixirscope.cli.options import json_option, node_options
from elixirscope.cli.recording_commands import (
    _TIME_HELP,
    _duration,
    _print_events,
    _process,
    _time,
    _who,
    event_json,
)
from elixirscope.dist.node import connect
from elixirscope.recording.results import Span
from elixirscope.recordings import open_recording
from elixirscope.tracing.events import KIND_CODES

F = TypeVar("F", bound=Callable[..., Any])


def _rec_argument(command: F) -> F:
    return click.argument("recording", metavar="REC", type=click.Path(path_type=Path))(command)


def _selection(command: F) -> F:
    """The calls looked at: ``--module``, ``--function``, ``--pid``, ``--since``,
    ``--until``."""
    for decorator in reversed((
        click.option("--module", default=None, metavar="MODULE",
                     help="Bank.Account, :gen_server or gen_server."),
        click.option("--function", default=None, metavar="NAME[/ARITY]",
                     help="A function name, optionally with its arity."),
        click.option("--pid", default=None, metavar="PID",
                     help="#PID<0.123.0>, <0.123.0>, a registered name or a pid_id."),
        click.option("--since", callback=_time, default=None, metavar="TIME",
                     help=f"Calls that started from this time. {_TIME_HELP}"),
        click.option("--until", callback=_time, default=None, metavar="TIME",
                     help=f"Calls that started before this time. {_TIME_HELP}"),
    )):
        command = decorator(command)
    return command


def _limit_option(default: int) -> Callable[[F], F]:
    return click.option("--limit", type=click.IntRange(min=0), default=default,
                        show_default=True, help="At most this many rows (0: all).")


@click.command()
@_rec_argument
@click.argument("event_id", metavar="EVENT_ID", type=int)
@json_option("The traceback as one JSON document.")
def traceback(recording: Path, event_id: int, as_json: bool) -> None:
    """The traced calls around event EVENT_ID of REC (innermost first), the message
    that started them, the sender's calls when it sent it, and so on to the origin."""
    with open_recording(recording) as rec:
        found = rec.traceback(event_id)
        if as_json:
            output.json_line(found.as_dict())
            return
        _print_traceback(found)


@click.command(name="range")
@_rec_argument
@click.argument("span_id", metavar="SPAN_ID", type=int)
@click.option("--max-depth", type=click.IntRange(min=0), default=None, metavar="N",
              help="At most N levels of calls below the span.")
@click.option("--messages", is_flag=True, help="Show the messages sent and received too.")
@_limit_option(1000)
@json_option("The tree as one JSON document.")
def range_(recording: Path, span_id: int, max_depth: int | None, messages: bool,
           limit: int, as_json: bool) -> None:
    """Everything between the call SPAN_ID of REC and its return, as a tree."""
    with open_recording(recording) as rec:
        tree = rec.range(span_id, max_depth=max_depth, messages=messages,
                         limit=limit or 1 << 62)
        if as_json:
            output.json_line(tree.as_dict())
            return
        _print_range(tree)


@click.command()
@_rec_argument
@_selection
@click.option("--sort", type=click.Choice(list(SORTS)), default="acc", show_default=True,
              help="Largest first by this: accumulated or own time, calls, a duration.")
@click.option("--by", type=click.Choice(list(BYS)), default="function", show_default=True,
              help="One row per function; per function and process; or per function and "
              "registered name (every process that held the name, e.g. across restarts).")
@_limit_option(30)
@json_option("One JSON object per function (and process, or name, with --by); processes "
             "is how many processes made the calls.")
def stats(recording: Path, module: str | None, function: str | None, pid: str | None,
          since: str | None, until: str | None, sort: str, by: str, limit: int,
          as_json: bool) -> None:
    """Per traced function of REC: calls, accumulated time, own time (not in traced
    callees) and duration percentiles; with --by process, for each process apart; with
    --by name, for each registered name (processes without one by pid)."""
    with open_recording(recording) as rec:
        found = rec.call_stats(module=module, function=function, pid=_process(pid),
                               since=since, until=until, sort=sort, limit=limit or None,
                               by=by)
    if as_json:
        output.json_rows(found)
        return
    # Calls that never returned in the recording are counted apart, as still running:
    # a function whose only call hangs is "0 + 1 running", not "0 calls".
    rows = [[str(row.count), f"{row.open} running" if row.open else "",
             _duration(row.acc_time), _duration(row.own_time), _duration(row.mean),
             _duration(row.p50), _duration(row.p95), _duration(row.p99), _duration(row.max),
             _stats_row_function(row)] for row in found]
    print_listing(f"{recording}: {len(found)} functions by {sort}",
                 ["calls", "open", "acc", "own", "mean", "p50", "p95", "p99", "max",
                  "function"], rows, right=9, cut=1)


def _stats_row_function(row: FunctionStats) -> str:
    if row.pid is not None:
        return f"{row.mfa} on {_who(row.pid, row.pid_name)}"
    if row.pid_name is not None:
        holders = f" ({row.processes} processes)" if row.processes > 1 else ""
        return f"{row.mfa} on {row.pid_name}{holders}"
    return row.mfa


@click.command()
@_rec_argument
@click.option("--min-count", type=click.IntRange(min=2), default=2, show_default=True,
              help="Subtrees that ran at least this many times.")
@click.option("--min-size", type=click.IntRange(min=1), default=1, show_default=True,
              help="Subtrees of at least this many calls.")
@_selection
@_limit_option(20)
@json_option("One JSON object per repeated subtree.")
def repeats(recording: Path, min_count: int, min_size: int, module: str | None,
            function: str | None, pid: str | None, since: str | None, until: str | None,
            limit: int, as_json: bool) -> None:
    """Identical call subtrees of REC (same functions, arguments and results) that
    repeat, the most wasted time first: redundant work, N+1 lookups, retry storms."""
    with open_recording(recording) as rec:
        found = rec.repeated_call_trees(min_count=min_count, min_size=min_size,
                                        module=module, function=function, pid=_process(pid),
                                        since=since, until=until, limit=limit or None)
        if as_json:
            output.json_rows(found)
            return
        rows = [[_duration(tree.wasted), str(tree.count), str(tree.size),
                 _duration(tree.mean), str(tree.example.span_id), tree.mfa, tree.example.args,
                 tree.example.result or ""] for tree in found]
    print_listing(f"{recording}: {len(found)} repeated call trees", [
        "wasted", "count", "size", "mean", "first span", "function", "args", "result"],
        rows, right=5, cut=2)


@click.command()
@_rec_argument
@click.argument("value", metavar="VALUE")
@click.option("--pid", default=None, metavar="PID",
              help="#PID<0.123.0>, <0.123.0>, a registered name or a pid_id.")
@click.option("--module", default=None, metavar="MODULE", help="Bank.Account or :ets.")
@click.option("--function", default=None, metavar="NAME[/ARITY]",
              help="A function name, optionally with its arity.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(list(KIND_CODES)),
              help="Only events of this kind (repeat for several).")
@click.option("--since", callback=_time, default=None, metavar="TIME",
              help=f"From this time. {_TIME_HELP}")
@click.option("--until", callback=_time, default=None, metavar="TIME",
              help=f"Before this time. {_TIME_HELP}")
@_limit_option(100)
@click.option("--order", type=click.Choice(["asc", "desc"]), default="asc", show_default=True,
              help="Earliest first (asc) or latest first (desc).")
@json_option("One JSON object per event.")
def find(recording: Path, value: str, pid: str | None, module: str | None,
         function: str | None, kinds: tuple[str, ...], since: str | None,
         until: str | None, limit: int, order: str, as_json: bool) -> None:
    """The events of REC whose payload holds VALUE, an Elixir literal: 42, :ok,
    '{:deposit, 10}', '#PID<0.123.0>', Bank.Account, or '"text"' (a double-quoted
    string: found inside binaries and atoms)."""
    with open_recording(recording) as rec:
        try:
            term = parse_term(value, pid=lambda text: recorded_pid(rec, text))
        except LiteralError as exc:
            raise click.BadParameter(str(exc), param_hint="VALUE") from None
        events = rec.find(term, pid=_process(pid), module=module, function=function,
                          kind=list(kinds) or None, since=since, until=until,
                          limit=limit or None, order=order)
        if as_json:
            for event in events:
                output.json_line(event_json(event, rec))
            return
        _print_events(events, f"{recording}: {len(events)} events holding {value}", rec)


@click.command()
@_rec_argument
@click.argument("event_id", metavar="EVENT_ID", type=int)
@click.option("--by", type=click.Choice(WAYS), default="process", show_default=True,
              help="process: the process's next event (step into); span: the next event "
              "at the same call level (step over); message: a send to its receive, a "
              "receive to the call it started.")
@click.option("--back", is_flag=True, help="Step backwards.")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True,
              help="How many steps.")
@json_option("One JSON object per event: where it started, then each step.")
def step(recording: Path, event_id: int, by: str, back: bool, count: int,
         as_json: bool) -> None:
    """Steps through REC from event EVENT_ID, COUNT steps at most, and prints the event
    it started from and every event it reached, in stepping order."""
    with open_recording(recording) as rec:
        walked = [rec.event(event_id)]
        move = rec.prev if back else rec.next
        while len(walked) <= count:
            found = move(walked[-1], by)
            if found is None:
                break
            walked.append(found)
        unrecorded = by == "message" and not rec.messages_recorded(walked[-1].pid_id)
    if as_json:
        output.json_rows(walked)
        return
    ended = "" if len(walked) > count else (
        f"; the messages of {walked[-1].pid} were not recorded (record with --trace-process "
        f"{walked[-1].pid} --include messages)" if unrecorded
        else "; the recording has no step further")
    way = "back " if back else ""
    steps = len(walked) - 1
    _print_events(walked, f"{recording}: from event {event_id}, {steps} "
                  f"step{'' if steps == 1 else 's'} {way}by {by}{ended}")


@click.command()
@_rec_argument
@click.argument("span_id", metavar="SPAN_ID", type=int)
@node_options
@click.option("--yes-run-it", "confirmed", is_flag=True,
              help="Required: the call really runs on NODE, with all its side effects.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=15.0, show_default=True,
              help="Seconds to wait for the call.")
@json_option("The comparison as one JSON document.")
def rerun(recording: Path, span_id: int, node: str, cookie: str | None, name: str | None,
          confirmed: bool, timeout: float, as_json: bool) -> None:
    """SIDE-EFFECTING: calls the function of span SPAN_ID of REC again on the live NODE
    with the recorded arguments, and compares the result with the recorded one. It
    really runs (money moves, messages go out), so it needs --yes-run-it."""
    if not confirmed:
        raise click.UsageError("rerun runs the recorded call again on the node, side "
                               "effects and all; add --yes-run-it to do it")
    with open_recording(recording) as rec, connect(node, cookie, own_name=name) as conn:
        result = rec.rerun(span_id, conn, timeout=timeout)
    if as_json:
        output.json_line(result.as_dict())
        return
    out = output.out
    out.print(Text(result.span.call))
    out.print(Text(f"recorded: {result.as_dict()['recorded']}"))
    if result.status == "raised":
        out.print(Text(f"now: raised {result.error}"))
    else:
        out.print(Text(f"now:      {result.as_dict()['result']}"))
    out.print(Text(f"{result.status}"))
    for line in result.differences:
        out.print(Text(f"  {line}"))


def _print_traceback(found: Traceback) -> None:
    out = output.out
    for index, link in enumerate(found.links):
        event = link.event
        what = ("event" if index == 0 else "sent" if event.kind.startswith("send")
                else "because of")
        out.print(Text(f"{what} {event.seq} ({event.kind}) at {event.time:.3f} s on "
                       f"{_who(event.pid, event.pid_name)}: {_cut(event.text)}"))
        if link.cause:
            out.print(Text(f"  {link.cause}"))
        for span in link.stack:
            out.print(Text(f"  in {_cut(span.call)} (span {span.span_id}, {_when(span)})"))
        if link.message is not None:
            out.print(Text(f"  started by message {_cut(link.message.text)}"))
    out.print(Text(f"origin: {found.origin}"))


def _print_range(tree: RangeNode) -> None:
    out = output.out
    pending: list[tuple[RangeNode, int]] = [(tree, 0)]
    while pending:
        node, level = pending.pop()
        span = node.span
        pad = "  " * level
        out.print(Text(f"{pad}{_cut(span.call)} -> {_cut(span.result or '')} "
                       f"[{span.outcome}, {_duration(span.duration)}, span {span.span_id}]"
                       f"{' …' if node.cut else ''}"))
        for event in node.events:
            peer = event.target or event.other_pid or ""
            out.print(Text(f"{pad}  · {event.kind} {peer} {_cut(event.text)}".rstrip()))
        pending.extend((child, level + 1) for child in reversed(node.children))


def _when(span: Span) -> str:
    return f"{span.start:.3f} s, {_duration(span.duration)}"


def _cut(text: str, width: int = 100) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
