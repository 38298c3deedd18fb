"""Commands that read a recording: ``query`` (events) and ``spans`` (traced calls)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from elixirscope.cli import output
from elixirscope.cli.listing import print_listing
from elixirscope.cli.options import json_option
from elixirscope.recording.results import Event, Span, duration_text
from elixirscope.recording.timespec import TimeSpecError, duration_seconds, wall_ns
from elixirscope.recordings import Recording, open_recording
from elixirscope.tracing.events import KIND_CODES

F = TypeVar("F", bound=Callable[..., Any])

_TIME_HELP = ("Seconds from the start (1.5, 250ms) or an ISO-8601 date and time "
              "(2024-05-01T12:00:03).")


def _time(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        try:
            wall_ns(value, 0)
        except TimeSpecError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None
    return value


def _duration_option(ctx: click.Context, param: click.Parameter,
                     value: str | None) -> float | None:
    if value is None:
        return None
    found = duration_seconds(value)
    if found is None or found < 0:
        raise click.BadParameter(f"{value!r} is not a duration: give seconds (0.5) or a "
                                 "number with a unit (5ms, 40us)", ctx, param)
    return found


def _process(value: str | None) -> str | int | None:
    """A pid_id when the option is a plain number, else the pid or name as given."""
    return int(value) if value is not None and value.strip().isdigit() else value


def _filters(command: F) -> F:
    """REC and the options ``query`` and ``spans`` share."""
    for decorator in reversed((
        click.argument("recording", metavar="REC", type=click.Path(path_type=Path)),
        click.option("--pid", default=None, metavar="PID",
                     help="#PID<0.123.0>, <0.123.0>, a registered name (Bank.Auditor, "
                          ":logger) or a pid_id."),
        click.option("--module", default=None, metavar="MODULE",
                     help="Bank.Account, :gen_server or gen_server."),
        click.option("--function", default=None, metavar="NAME[/ARITY]",
                     help="A function name, optionally with its arity."),
        click.option("--since", callback=_time, default=None, metavar="TIME",
                     help=f"From this time. {_TIME_HELP}"),
        click.option("--until", callback=_time, default=None, metavar="TIME",
                     help=f"Before this time. {_TIME_HELP}"),
        click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True,
                     help="At most this many rows (0: all)."),
    )):
        command = decorator(command)
    return command


@click.command()
@_filters
@click.option("--kind", "kinds", multiple=True, type=click.Choice(list(KIND_CODES)),
              help="Only events of this kind (repeat for several).")
@click.option("--text", default=None, metavar="TEXT",
              help="Only events whose payload, printed as Elixir prints it, contains TEXT.")
@click.option("--order", type=click.Choice(["asc", "desc"]), default="asc", show_default=True,
              help="Earliest first (asc) or latest first (desc).")
@json_option("One JSON object per event.")
def query(recording: Path, pid: str | None, module: str | None, function: str | None,
          since: str | None, until: str | None, limit: int, kinds: tuple[str, ...],
          text: str | None, order: str, as_json: bool) -> None:
    """The events of recording REC that pass every filter, in time order."""
    with open_recording(recording) as rec:
        events = rec.events(pid=_process(pid), module=module, function=function,
                            kind=list(kinds) or None, since=since, until=until, text=text,
                            limit=limit or None, order=order)
        if as_json:
            for event in events:
                output.json_line(event_json(event, rec))
            return
        _print_events(events, f"{recording}: {len(events)} events", rec)


@click.command()
@_filters
@click.option("--min-duration", callback=_duration_option, default=None, metavar="SECONDS",
              help="Only calls that took at least this long (0.5, 5ms, 40us).")
@click.option("--slowest", type=click.IntRange(min=1), default=None, metavar="N",
              help="The N slowest calls, longest first.")
@json_option("One JSON object per call.")
def spans(recording: Path, pid: str | None, module: str | None, function: str | None,
          since: str | None, until: str | None, limit: int, min_duration: float | None,
          slowest: int | None, as_json: bool) -> None:
    """The traced calls of recording REC (spans: call to return), by start time."""
    with open_recording(recording) as rec:
        found = rec.spans(module=module, function=function, pid=_process(pid),
                          min_duration=min_duration, slowest=slowest, since=since,
                          until=until, limit=limit or None)
        if as_json:
            output.json_rows(found)
            return
        _print_spans(found, f"{recording}: {len(found)} calls")


def _print_events(events: list[Event], title: str, rec: Recording | None = None) -> None:
    """Events as rows; with ``rec``, an exception is followed by the recorded calls it
    was raised in, innermost first."""
    rows = [[str(event.seq), f"{event.time:.3f}", _who(event.pid, event.pid_name), event.kind,
             _function(event), event.text] for event in events]
    details = [_stack_lines(rec.stack(event)) if rec is not None and event.kind == "exception"
               else [] for event in events]
    print_listing(title, ["seq", "time (s)", "pid", "kind", "function", "payload"], rows,
                  right=2, cut=1, details=details)


# An exception's stack shows at most this many calls in a listing (--json has them all).
_STACK_LINES = 12


def _stack_lines(stack: tuple[Span, ...]) -> list[str]:
    if not stack:
        return ["raised outside any traced call"]
    lines = [f"{'in' if n == 0 else 'from'} {span.call}"
             for n, span in enumerate(stack[:_STACK_LINES])]
    if len(stack) > _STACK_LINES:
        lines.append(f"... and {len(stack) - _STACK_LINES} outer calls")
    return lines


def event_json(event: Event, rec: Recording) -> dict[str, Any]:
    """An event as a JSON object; an exception's holds ``stack``, the recorded calls it
    was raised in, innermost first (empty outside traced calls)."""
    found = event.as_dict()
    if event.kind == "exception":
        found["stack"] = [{"span_id": span.span_id, "mfa": span.mfa, "call": span.call}
                          for span in rec.stack(event)]
    return found


def _print_spans(found: list[Span], title: str) -> None:
    rows = [[f"{span.start:.3f}",
             f"still running, {_duration(span.running_for)}+" if span.open
             and span.running_for is not None else _duration(span.duration),
             _who(span.pid, span.pid_name), span.outcome,
             "  " * (span.depth - 1) + span.call, span.result or ""]
            for span in found]
    print_listing(title, ["start (s)", "duration", "pid", "outcome", "call", "result"], rows,
                 right=2, cut=2)


def _who(pid: str, name: str | None) -> str:
    return f"{pid} {name}" if name else pid


def _function(event: Event) -> str:
    if event.mfa:
        return event.mfa
    peer = event.target or event.other_pid
    if peer is None:
        return ""
    return f"← {peer}" if event.kind in ("spawned", "getting_linked") else f"→ {peer}"


def _duration(value: float | None) -> str:
    return "open" if value is None else duration_text(value)


@click.command()
@click.argument("recording", metavar="REC", type=click.Path(path_type=Path))
@click.argument("a", metavar="PID")
@click.argument("b", metavar="[OTHER]", required=False)
@click.option("--since", callback=_time, default=None, metavar="T", help="From this time.")
@click.option("--until", callback=_time, default=None, metavar="T", help="Up to this time.")
@click.option("--limit", type=click.IntRange(min=0), default=1000, show_default=True,
              help="At most this many messages (0: all).")
@json_option("One JSON object per message; times are null where that end was not "
             "recorded (sent before the recording, never received, not traced).")
def flow(recording: Path, a: str, b: str | None, since: str | None, until: str | None,
         limit: int, as_json: bool) -> None:
    """The messages of process PID in recording REC (between PID and OTHER, both ways,
    when OTHER is given): who sent what to whom, when it arrived, when a handler began
    on it and how long it waited in the mailbox."""
    with open_recording(recording) as rec:
        found = rec.message_flow(_process(a) or a, (_process(b) or b) if b else None,
                                 since=since, until=until, limit=limit or None)
    if as_json:
        output.json_rows(found)
        return

    def at(value: float | None) -> str:
        return "" if value is None else f"{value:.3f}"

    rows = [[at(m.sent), at(m.received), _duration(m.queue_time) if m.queue_time is not None
             else "", _who(m.sender or "?", m.sender_name), _who(m.receiver or "?",
             m.receiver_name) + (" (dead)" if m.to_dead else ""), m.text] for m in found]
    print_listing(f"{recording}: {len(found)} messages", ["sent (s)", "received (s)",
                 "queued", "from", "to", "message"], rows, right=3, cut=1)
