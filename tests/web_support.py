"""What the web UI tests share: a short real recording of the sample bank app (with
state capture, so the state panel has something to show), and the browser."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from elixirscope.cli import demo_command
from elixirscope.cli.record_command import record_for
from elixirscope.sample_nodes import start_sample
from elixirscope.tracing.scope import INCLUDES, Scope, attach

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"


def chromium() -> str | None:
    """Debian's chromium (``./dev test`` installs it); never a downloaded build."""
    wanted = os.environ.get("ELIXIRSCOPE_CHROMIUM", "/usr/bin/chromium")
    return wanted if Path(wanted).exists() else shutil.which("chromium")


def trace_bank(scope: Scope) -> None:
    """The demo's traces, with the state of the accounts and named servers."""
    state = ["state"] if "state" in INCLUDES else []
    for module in demo_command.MODULES:
        scope.trace(module, "detailed")
    for name in demo_command.PROCESSES:
        scope.trace_process(name, include=["messages", "lifecycle", *state])
    scope.trace_process("Bank.AccountSupervisor", include=["lifecycle"],
                        include_children=True)
    for pid in demo_command._account_pids(scope.node):
        scope.trace_process(pid, include=["messages", "lifecycle", *state])


def record_bank(path: Path, seconds: float = 5.0) -> Path:
    """Records the bank app's fault script (an account crashes at about 3 s)."""
    with start_sample("bank", name_prefix="t_web") as beam, \
            attach(beam.name, beam.cookie) as scope:
        trace_bank(scope)
        record_for(scope, path, seconds, live=False, before=demo_command._start_demo)
    return path


def wait_for(condition: object, timeout: float = 10.0, step: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(condition) and condition():
            return
        time.sleep(step)
    raise AssertionError("the condition did not come true in time")
