"""Commands that travel through recorded states: ``history`` and ``state``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from elixirscope.analysis.literal import LiteralError, parse_term
from elixirscope.cli import output
from elixirscope.cli.options import json_option
from elixirscope.cli.recording_commands import _process, _time
from elixirscope.elixir_format import inspect
from elixirscope.etf import Atom
from elixirscope.recording.state_diff import MISSING
from elixirscope.recording.state_results import StateTransition
from elixirscope.recordings import open_recording

_PID_HELP = "PID is #PID<0.123.0>, <0.123.0>, a registered name (Bank.Ledger) or a pid_id."


def parse_field_path(text: str) -> list[Any]:
    """A field path as an Elixir list (``[:accounts, "alice", :balance]``) or dotted
    (``accounts.alice.balance``: words are atoms, numbers positions, quoted parts
    strings)."""
    text = text.strip()
    if text.startswith("["):
        try:
            path = parse_term(text)
        except LiteralError as exc:
            raise click.BadParameter(str(exc)) from None
        if not isinstance(path, list) or not path:
            raise click.BadParameter(f"{text!r} is not a list of keys")
        return path
    parts = [part.strip() for part in text.split(".")]
    if not all(parts):
        raise click.BadParameter(f"{text!r} is not a field path: write [:a, \"b\"] or a.b")
    return [int(part) if part.lstrip("-").isdigit()
            else part[1:-1].encode() if part[:1] == part[-1:] == '"' and len(part) > 1
            else Atom(part.lstrip(":")) for part in parts]


def _path(ctx: click.Context, param: click.Parameter, value: str | None) -> list[Any] | None:
    if value is None:
        return None
    try:
        return parse_field_path(value)
    except click.BadParameter as exc:
        raise click.BadParameter(exc.message, ctx, param) from None


@click.command()
@click.argument("recording", metavar="REC", type=click.Path(path_type=Path))
@click.argument("pid", metavar="PID")
@click.option("--limit", type=click.IntRange(min=0), default=0,
              help="At most this many transitions (0: all).")
@json_option("One JSON object per transition.")
def history(recording: Path, pid: str, limit: int, as_json: bool) -> None:
    """Every recorded state transition of process PID in recording REC: when, which
    callback, what triggered it and what it changed. """
    with open_recording(recording) as rec:
        found = rec.state_history(_process(pid) or pid, limit=limit or None)
        if as_json:
            output.json_rows(found)
            return
        table = Table(box=None, title=f"{recording}: {len(found)} transitions of {pid}")
        for header in ("#", "time (s)", "callback", "trigger", "changes"):
            table.add_column(header, justify="right" if header in ("#", "time (s)") else "left")
        for transition in found:
            table.add_row(str(transition.index), f"{transition.time:.3f}",
                          Text(transition.callback), Text(_trigger(transition)),
                          Text(_changes(transition)))
        output.out.print(table)


history.help = f"{history.help}\n\n{_PID_HELP}"


@click.command()
@click.argument("recording", metavar="REC", type=click.Path(path_type=Path))
@click.argument("pid", metavar="PID")
@click.option("--at", "at", callback=_time, default=None, metavar="TIME",
              help="The state at this time (seconds from the start, 2.5s, or ISO time).")
@click.option("--diff", "between", nargs=2, callback=lambda c, p, v: v and tuple(
    _time(c, p, item) for item in v), default=None, metavar="T1 T2",
              help="What changed from T1 to T2.")
@click.option("--field", "field", callback=_path, default=None, metavar="PATH",
              help="Every change of one field: [:accounts, \"alice\", :balance] or "
                   "accounts.alice.balance.")
@click.option("--why", is_flag=True, help="With --at: the transition that made the state "
              "and its causal chain.")
@json_option("JSON instead of text.")
def state(recording: Path, pid: str, at: str | None, between: tuple[str, str] | None,
          field: list[Any] | None, why: bool, as_json: bool) -> None:
    """The state of process PID in recording REC: at a moment (--at), what changed
    between two (--diff), or the history of one field (--field)."""
    chosen = [name for name, value in (("--at", at), ("--diff", between), ("--field", field))
              if value]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --at, --diff and --field")
    target = _process(pid) or pid
    with open_recording(recording) as rec:
        if at is not None and why:
            replay = rec.replay_to(target, at)
            if as_json:
                output.json_line(replay.as_dict())
                return
            _print_transition(replay.transition)
            output.out.print(Text(inspect(replay.state, limit=None, printable_limit=None)))
            for step in replay.causes:
                output.out.print(Text(f"  <- {step.relation}"))
        elif at is not None:
            transition = rec.state_transition_at(target, at)
            if as_json:
                output.json_line(transition.as_dict(with_state=True))
                return
            _print_transition(transition)
            output.out.print(Text(inspect(transition.state, limit=None, printable_limit=None)))
        elif between is not None:
            diff = rec.diff(target, *between)
            if as_json:
                output.json_line(diff.as_dict())
                return
            output.out.print(Text(str(diff)))
        else:
            assert field is not None
            changes = rec.field_history(target, field)
            if as_json:
                output.json_rows(changes)
                return
            table = Table(box=None, title=f"{inspect(field)} of {pid}: {len(changes)} changes")
            for header in ("time (s)", "old", "new", "callback", "trigger"):
                table.add_column(header)
            for change in changes:
                table.add_row(f"{change.time:.3f}", Text(_value(change.old)),
                              Text(_value(change.new)), Text(change.transition.callback),
                              Text(_trigger(change.transition)))
            output.out.print(table)


state.help = f"{state.help}\n\n{_PID_HELP}"


def _print_transition(transition: StateTransition) -> None:
    output.out.print(Text(f"{transition.pid} at {transition.time:.3f} s, after "
                          f"{transition.mfa or transition.callback}"
                          f" ({transition.kind}); trigger: {_trigger(transition)}"))


def _trigger(transition: StateTransition) -> str:
    trigger = transition.trigger
    if trigger is None:
        return ""
    return _cut(trigger.text if trigger.kind != "call" else f"{trigger.mfa} {trigger.text}")


def _changes(transition: StateTransition) -> str:
    if transition.kind in ("exit", "terminate"):
        return _cut(f"reason: {inspect(transition.reason)}")
    if transition.kind in ("too_large", "unavailable"):
        return f"state not recorded ({transition.kind})"
    if transition.kind == "whole" and not transition.delta:
        return _cut(f"whole: {inspect(transition.state)}")
    return _cut("; ".join(map(str, transition.delta.changes)) or "(no change)")


def _value(value: Any) -> str:
    return "-" if value is MISSING else _cut(inspect(value))


def _cut(text: str, width: int = 80) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
