"""The ``elixirscope`` command: global options, error reporting, exit codes.

Exit codes: 0 ok, 1 failed (one sentence on stderr), 2 usage. ``--debug`` anywhere on
the line shows tracebacks and debug logs.
"""

from __future__ import annotations

import logging
import sys

import click

from elixirscope.cli import (
    analysis_commands,
    demo_command,
    diagnose_command,
    doctor_command,
    export_command,
    modules_command,
    node_commands,
    output,
    record_command,
    recording_commands,
    state_commands,
    supervisors_command,
    top_command,
    ui_command,
    waits_command,
)
from elixirscope.errors import ElixirScopeError
from elixirscope.version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(__version__, prog_name="elixirscope")
def cli(debug: bool) -> None:
    """Execution-cinema, time-travel debugger for Elixir and Erlang systems."""


for _commands in (demo_command, node_commands, record_command, recording_commands,
                  export_command, state_commands, ui_command, waits_command,
                  diagnose_command, doctor_command, top_command):
    _commands.register(cli)
analysis_commands.register(cli)
modules_command.register(cli)
supervisors_command.register(cli)


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [arg for arg in args if arg != "--debug"]
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        # Without standalone mode click returns the code of an Exit raised in a command.
        code = cli.main(args=args, prog_name="elixirscope", standalone_mode=False)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except (click.Abort, KeyboardInterrupt):
        output.error("interrupted")
        sys.exit(130)
    except ElixirScopeError as exc:
        if debug:
            raise
        output.error(str(exc))
        sys.exit(1)
    except Exception as exc:
        if debug:
            raise
        output.error(f"unexpected {type(exc).__name__}: {exc} (run again with --debug "
                     "for the traceback)")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
