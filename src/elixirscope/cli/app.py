"""The ``elixirscope`` command: global options, error reporting, exit codes.

Exit codes: 0 ok, 1 failed (one sentence on stderr), 2 usage. ``--debug`` anywhere on
the line shows tracebacks and debug logs.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from elixirscope.cli import output
from elixirscope.errors import ElixirScopeError
from elixirscope.version import __version__

# Each command and where it lives: a command's module (and what it imports) loads only
# when that command runs, so a question asked of a recording does not pay for the
# tracing, the web UI and every other command.
COMMANDS = {
    'analyze': "analyze_command:analyze",
    'channels': "framework_commands:channels",
    'demo': "demo_command:demo",
    'diagnose': "diagnose_command:diagnose",
    'doctor': "doctor_command:doctor",
    'eval': "node_commands:eval_",
    'explain': "explain_command:explain",
    'export': "export_command:export",
    'find': "analysis_commands:find",
    'flow': "recording_commands:flow",
    'history': "state_commands:history",
    'liveviews': "framework_commands:liveviews",
    'mcp': "mcp_command:mcp",
    'modules': "modules_command:modules",
    'nodes': "node_commands:nodes",
    'plan': "plan_command:plan",
    'ps': "node_commands:ps",
    'queries': "framework_commands:queries",
    'query': "recording_commands:query",
    'range': "analysis_commands:range_",
    'record': "record_command:record",
    'repeats': "analysis_commands:repeats",
    'requests': "framework_commands:requests",
    'rerun': "analysis_commands:rerun",
    'spans': "recording_commands:spans",
    'state': "state_commands:state",
    'stats': "analysis_commands:stats",
    'step': "analysis_commands:step",
    'supervisors': "supervisors_command:supervisors",
    'top': "top_command:top",
    'traceback': "analysis_commands:traceback",
    'ui': "ui_command:ui",
    'waits': "waits_command:waits",
}


class LazyGroup(click.Group):
    """A group whose commands are imported when they are asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        where = COMMANDS.get(cmd_name)
        if where is None:
            return None
        module, attr = where.split(":")
        command = getattr(importlib.import_module(f"elixirscope.cli.{module}"), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(__version__, prog_name="elixirscope")
def cli(debug: bool) -> None:
    """Execution-cinema, time-travel debugger for Elixir and Erlang systems."""


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
