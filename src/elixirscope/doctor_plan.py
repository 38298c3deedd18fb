"""What ``doctor`` traces on a node nobody configured: the processes that are busiest
(reductions over a short window) or have the longest mailboxes, the application
modules they run (their callback modules and where they are now), with local calls,
waits and state; OTP's and Elixir's own processes and modules are left out.

Measuring reads two numbers of every process twice, in one evaluation on the node
(about a microsecond per process each time), and ships back only the top few.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from elixirscope.beam_names import module_atom, module_display
from elixirscope.code_analysis import RUNTIME_APPS
from elixirscope.dist.async_node import AsyncNode
from elixirscope.etf import Pid
from elixirscope.process_labels import fetch_labels
from elixirscope.remote_eval import eval_erlang

# Reductions per second past which a process's modules are traced global-only (a
# process doing this much work calls local functions hundreds of thousands of times a
# second).
BUSY_REDUCTIONS = 200_000

_BUSIEST = """
Own = self(),
Snap = fun() ->
    [{P, R, Q} || P <- erlang:processes(), P =/= Own,
                  [{reductions, R}, {message_queue_len, Q}] <-
                      [erlang:process_info(P, [reductions, message_queue_len])]]
end,
Before = maps:from_list([{P, R} || {P, R, _} <- Snap()]),
timer:sleep(WindowMs),
Rows = [{P, R - maps:get(P, Before, R), Q} || {P, R, Q} <- Snap(),
                                              not lists:member(P, Skip)],
ByReds = lists:sublist(lists:reverse(lists:keysort(2, Rows)), Top),
ByQueue = lists:sublist(lists:reverse(lists:keysort(3, Rows)), Top),
InCall = lists:sublist([Row || Row = {P, _, _} <- Rows,
                               erlang:process_info(P, current_function) =:=
                                   {current_function, {gen, do_call, 4}}], Top),
Module = fun(P) ->
    case catch proc_lib:translate_initial_call(P) of
        {M, _, _} when is_atom(M) -> M;
        _ -> undefined
    end
end,
[{P, D, Q, Module(P), lists:member(Row, InCall)}
 || Row = {P, D, Q} <- lists:usort(ByReds ++ ByQueue ++ InCall),
    D > 0 orelse Q > 0 orelse lists:member(Row, InCall)]
"""

_APPS = """
[{M, case application:get_application(M) of {ok, A} -> A; undefined -> undefined end}
 || M <- Modules]
"""


@dataclass(frozen=True)
class Candidate:
    pid: Pid
    label: str
    module: str | None  # the callback module (or initial call's), as Elixir writes it
    reductions: int  # over the window
    queue: int
    in_call: bool  # waiting for the reply to a call (GenServer.call, :gen_statem.call)


@dataclass(frozen=True)
class DoctorPlan:
    """The processes and modules to trace, and the candidates they came from."""

    processes: tuple[Candidate, ...]
    modules: tuple[str, ...]
    left_out: tuple[Candidate, ...] = field(default=())
    # Modules run by a very busy process: traced for their behaviour callbacks only, not
    # every call of a hot loop (which would flood the trace before sampling catches up).
    global_only: tuple[str, ...] = field(default=())


async def plan(node: AsyncNode, *, top: int = 5, window: float = 0.25,
               skip: list[Pid] | None = None, max_modules: int = 8) -> DoctorPlan:
    """Measures the node for ``window`` seconds and chooses what to trace: at most
    ``top`` processes by reductions, ``top`` by mailbox and ``top`` waiting in a call,
    and their modules."""
    rows = await eval_erlang(node, _BUSIEST, timeout=30.0 + window, bindings={
        "WindowMs": max(1, round(window * 1000)), "Top": top, "Skip": skip or []})
    pids = [row[0] for row in rows]
    labels = await fetch_labels(node, pids)
    candidates = []
    for (pid, reductions, queue, module, in_call), label in zip(rows, labels, strict=True):
        if label is None:
            continue
        candidates.append(Candidate(
            pid, label.text or f"#PID<0.{pid.id}.{pid.serial}>",
            None if str(module) == "undefined" else module_display(str(module)),
            int(reductions), int(queue), bool(in_call)))
    apps = await _applications(node, [c.module for c in candidates if c.module])
    chosen = [c for c in candidates if c.module and apps.get(c.module) not in RUNTIME_APPS]
    left_out = [c for c in candidates if c not in chosen]
    chosen.sort(key=lambda c: (-c.queue, -c.reductions))
    modules = tuple(dict.fromkeys(c.module for c in chosen if c.module))[:max_modules]
    per_second = {module: max(c.reductions for c in chosen if c.module == module) / window
                  for module in modules}
    busy = tuple(module for module in modules if per_second[module] >= BUSY_REDUCTIONS)
    return DoctorPlan(tuple(chosen), modules, tuple(left_out), busy)


async def _applications(node: AsyncNode, modules: list[str]) -> dict[str, str]:
    """The application of each module (``undefined`` for one in none)."""
    atoms = {module_atom(module): module for module in dict.fromkeys(modules)}
    if not atoms:
        return {}
    found = await eval_erlang(node, _APPS, timeout=30.0, bindings={"Modules": list(atoms)})
    return {atoms[module]: str(app) for module, app in found}

