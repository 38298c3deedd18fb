"""``elixirscope demo``: the bundled bank app under a workload with faults, recorded and
summarised."""

from __future__ import annotations

from pathlib import Path

import click

from elixirscope.cli import output
from elixirscope.cli.diagnose_command import diagnosed, print_findings
from elixirscope.cli.options import json_option
from elixirscope.cli.phoenix_demo import print_framework, record_shop
from elixirscope.cli.record_command import default_path, record_for, stats_line
from elixirscope.cli.summary_view import print_summary, summary_json
from elixirscope.cli.ui_command import (
    UIOptions,
    announce,
    check_port,
    serve_forever,
    start_server,
    ui_options,
)
from elixirscope.dist.node import Node
from elixirscope.etf import Atom, Pid
from elixirscope.recordings import open_recording
from elixirscope.sample_nodes import start_sample
from elixirscope.tracing.scope import Scope, attach
from elixirscope.web.model import View

# Traced at "detailed" (calls, returns, exceptions).
MODULES = ("Bank.Account", "Bank.Transfer", "Bank.Auditor", "Bank.Ledger", "Bank.Faults")
# GenServer callback modules whose processes' states are recorded (Bank.Ledger is an
# Agent: its state comes with its process trace).
STATEFUL = ("Bank.Account", "Bank.Transfer", "Bank.Auditor", "Bank.Faults")
# Named processes whose messages, lifecycle and state are traced.
PROCESSES = ("Bank.Transfer", "Bank.Auditor", "Bank.Ledger", "Bank.Workload")


@click.command()
@click.option("--duration", type=click.FloatRange(min=1.0), default=12.0, show_default=True,
              help="Seconds to record (the fault script takes about 11).")
@click.option("-o", "--output", "path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="The recording file (default: a new file here).")
@click.option("--no-ui", is_flag=True, help="Do not serve the web UI of the recording at "
              "the end (--json never does).")
@click.option("--phoenix", is_flag=True,
              help="Record the Phoenix sample shop on a throwaway PostgreSQL instead: "
                   "requests, LiveView events and assigns, channels and Ecto queries.")
@ui_options
@json_option("The summary as one JSON document.")
def demo(duration: float, path: Path | None, no_ui: bool, phoenix: bool, host: str,
         port: int, no_token: bool, as_json: bool) -> None:
    """Starts the sample bank app on a fresh node, records it for DURATION seconds while
    a workload runs with an account crash, a slow path and a message flood, then
    summarises the recording: processes, busiest functions, slowest spans, messages,
    the crash and its causal chain, what was dropped, and the findings (what
    elixirscope diagnose says is wrong)."""
    target = path or default_path("elixirscope-demo")
    options = None if no_ui or as_json else UIOptions(host, port, not no_token)
    if options is not None:
        check_port(options)
    if phoenix:
        stats = record_shop(target, duration, live=not as_json)
    else:
        output.err.print("starting the sample bank app on a fresh node ...")
        with start_sample("bank", name_prefix="bank_demo") as beam, \
                attach(beam.name, beam.cookie) as scope:
            output.err.print(f"attached to {beam.name}; tracing {', '.join(MODULES)}")
            _trace_bank(scope)
            output.err.print(f"recording {duration:g} s to {target} ...")
            stats = record_for(scope, target, duration, live=not as_json, before=_start_demo)
    found = diagnosed(target)
    with open_recording(target) as recording:
        if as_json:
            output.json_line(summary_json(recording) | {
                "path": str(target), "findings": [f.as_dict() for f in found]})
            return
        output.err.print(stats_line(stats))
        print_summary(recording)
        if phoenix:
            print_framework(recording)
    output.out.print("")
    print_findings(found, target)
    if phoenix:
        output.out.print(f"\nrecording: {target}\n  try: elixirscope requests {target} "
                         f"--slowest 5\n       elixirscope queries {target} --repeated"
                         f"\n       elixirscope liveviews {target}")
    else:
        output.out.print(f"\nrecording: {target}\n  try: elixirscope spans {target} "
                         f"--slowest 10\n       elixirscope history {target} Bank.Transfer"
                         f"\n       elixirscope stats {target}")
    if options is not None:
        server = start_server(View.finished(target), options)
        announce(server, "\nwatch it in the UI")
        serve_forever(server)


def _trace_bank(scope: Scope) -> None:
    for module in MODULES:
        scope.trace(module, "detailed", state=module in STATEFUL)
    for name in PROCESSES:
        scope.trace_process(name, include=["messages", "lifecycle", "state"])
    # Accounts are started under a supervisor: their restarts inherit its flags.
    scope.trace_process("Bank.AccountSupervisor", include=["lifecycle"],
                        include_children=True)
    for pid in _account_pids(scope.node):
        scope.trace_process(pid, include=["messages", "lifecycle"])


def _account_pids(node: Node) -> list[Pid]:
    ids = node.rpc("Elixir.Bank", "account_ids", [])
    pids = [node.rpc("Elixir.Bank.Account", "whereis", [account]) for account in ids]
    return [pid for pid in pids if isinstance(pid, Pid)]


def _start_demo(scope: Scope) -> None:
    scope.sample_metrics(10, 10.0)
    reply = scope.node.rpc("Elixir.Bank.Demo", "run", [[]])
    if reply != Atom("ok"):
        output.err.print(f"note: the demo script answered {reply}")
