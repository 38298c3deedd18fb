"""A live process table of a node, like ``top`` for the BEAM (``elixirscope ps``)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from elixirscope.beam_names import mfa_display
from elixirscope.dist.async_node import AsyncNode
from elixirscope.dist.node import Node
from elixirscope.elixir_format import inspect
from elixirscope.etf import Atom, Export, Pid
from elixirscope.process_labels import ProcessLabel, fetch_labels
from elixirscope.remote_eval import eval_erlang

SortKey = Literal["reductions", "memory", "mailbox"]
ITEMS = [Atom(item) for item in (
    "registered_name", "current_function", "initial_call", "message_queue_len", "memory",
    "reductions",
)]


@dataclass(frozen=True, slots=True)
class ProcessRow:
    pid: str
    name: str
    label: str
    current_function: str
    initial_call: str
    mailbox: int
    memory: int
    reductions: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fetch_process_table(node: Node, *, sort: SortKey = "reductions",
                        limit: int | None = None) -> list[ProcessRow]:
    """Every process of the node, biggest first by ``sort``.

    Two remote calls and no code loaded on the node: the pid list, then
    ``lists:zipwith(fun erlang:process_info/2, Pids, Items)`` for all of them at once
    (``describe_processes``). Processes that exit in between are left out."""
    pids = node.rpc("erlang", "processes", [])
    rows = [row for row in node.run(describe_processes(node.anode, pids)) if row is not None]
    key = {"reductions": lambda r: r.reductions, "memory": lambda r: r.memory,
           "mailbox": lambda r: r.mailbox}[sort]
    rows.sort(key=key, reverse=True)
    return rows[:limit] if limit else rows


async def describe_processes(node: AsyncNode, pids: list[Pid],
                             known: dict[Pid, ProcessLabel] | None = None,
                             ) -> list[ProcessRow | None]:
    """A row for each pid (``None`` for one that is gone): the counters in one remote
    call, the names in one evaluation (``process_labels``) for the pids ``known`` does
    not have yet (it keeps the labels found, for the next call)."""
    infos = await node.rpc(
        "lists", "zipwith",
        [Export(Atom("erlang"), Atom("process_info"), 2), pids, [ITEMS] * len(pids)],
        timeout=30.0)
    labels = {} if known is None else known
    new = [pid for pid in pids if pid not in labels]
    for pid, label in zip(new, await fetch_labels(node, new), strict=True):
        if label is not None:
            labels[pid] = label
    return [_row(pid, info, labels[pid]) if isinstance(info, list) and pid in labels else None
            for pid, info in zip(pids, infos, strict=True)]


@dataclass(frozen=True, slots=True)
class NodeTotals:
    """The node as a whole, for the header of ``ps``."""

    memory: int
    uptime_ms: int
    schedulers: int
    run_queue: int
    processes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_TOTALS = """
[erlang:memory(total),
 erlang:convert_time_unit(erlang:monotonic_time() - erlang:system_info(start_time),
                          native, millisecond),
 erlang:system_info(schedulers_online), erlang:statistics(total_run_queue_lengths),
 erlang:system_info(process_count)]
"""


async def fetch_node_totals(node: AsyncNode) -> NodeTotals:
    memory, uptime, schedulers, run_queue, processes = await eval_erlang(node, _TOTALS)
    return NodeTotals(memory, uptime, schedulers, run_queue, processes)


def _row(pid: Pid, info: list[tuple[Atom, Any]], label: ProcessLabel) -> ProcessRow:
    items = {str(key): value for key, value in info}
    # proc_lib processes (every OTP behaviour) start in proc_lib:init_p; the real
    # initial call is the one their dictionary keeps.
    initial = label.initial_call or _mfa(items.get("initial_call"))
    return ProcessRow(
        pid=f"#PID<0.{pid.id}.{pid.serial}>",
        name=label.registered,
        label=label.text if label.text != label.registered else "",
        current_function=_mfa(items.get("current_function")),
        initial_call=initial,
        mailbox=int(items.get("message_queue_len", 0)),
        memory=int(items.get("memory", 0)),
        reductions=int(items.get("reductions", 0)),
    )


def _mfa(mfa: Any) -> str:
    if isinstance(mfa, tuple) and len(mfa) == 3 and isinstance(mfa[0], Atom):
        return mfa_display(*mfa)
    return "" if mfa is None else inspect(mfa)
