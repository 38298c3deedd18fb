"""The instrumentation planner: measure first, then choose what to trace within an event
budget.

1. The candidates are the functions of the node's own applications (or of the modules
   given), with what the code analysis says of them (``code_analysis``).
2. Their call rates are measured with ``call_count`` trace patterns for a short window
   (a counter per function in the VM: no trace message, no process flag), removed in
   the same remote evaluation that set them, so nothing stays if we go away meanwhile.
3. Each function gets a relevance score: the focus (a module, a process's callback
   module, or symptom words matched against module and function names), being a
   behaviour callback, calling other processes, sleeping or blocking, being in a risk
   the analysis found, its complexity.
4. Functions are taken most relevant first while their expected events fit the budget
   (``detailed`` level: a call and its return, two more for each call to another
   process it makes); the first that does not fit is taken sampled, so the plan fills
   the budget. Functions called too often to fit even alone are left out with a note.

A plan is grouped per module (one trace each, ``only`` its chosen functions, one
sample rate), printed, saved as JSON and recorded with ``record --plan``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from elixirscope.beam_names import module_atom
from elixirscope.code_analysis import CodeAnalysis, FunctionInfo, analyze_node
from elixirscope.dist.async_node import AsyncNode
from elixirscope.errors import ElixirScopeError
from elixirscope.etf import Atom
from elixirscope.process_labels import fetch_labels
from elixirscope.remote_eval import eval_erlang
from elixirscope.tracing.scope import Level, Scope

__all__ = ["Plan", "PlanError", "PlanItem", "apply_plan", "make_plan"]

LEVEL = "detailed"
EVENTS_PER_CALL = 2  # a call and its return (or exception)
EVENTS_PER_WAIT = 2  # a call to another process made under a traced call: call, return
MIN_SAMPLE_RATE = 0.01
MAX_WINDOW = 10.0
MAX_FOCUS_PROCESSES = 5
_PROCESS_CALLS = ("GenServer.call/", ":gen_server.call/", ":gen_statem.call/", ":gen.call/",
                  "Agent.get/", "Agent.update/", "Agent.get_and_update/", "Task.await/",
                  "GenServer.multi_call/", "Supervisor.which_children/")

_COUNT = """
Patterns = [{M, '_', '_'} || M <- Modules, code:ensure_loaded(M) =:= {module, M}],
try
    [erlang:trace_pattern(P, true, [call_count, local]) || P <- Patterns],
    timer:sleep(WindowMs),
    [{M, F, A, N} || {M, _, _} <- Patterns, {F, A} <- M:module_info(functions),
                     {call_count, N} <- [erlang:trace_info({M, F, A}, call_count)],
                     is_integer(N), N > 0]
after
    [erlang:trace_pattern(P, false, [call_count, local]) || P <- Patterns]
end
"""


# The messages of the focus's processes, counted by a tracer of our own for the window
# (send and receive flags on those processes only, removed in the same evaluation; a
# process another tracer holds is left uncounted).
_MESSAGES = """
Counter = spawn(fun() -> (fun Loop(N) -> receive {es_count, From} -> From ! {es_count, N};
                                                 _ -> Loop(N + 1) end end)(0) end),
Traced = [P || P <- Pids, is_process_alive(P),
               (catch erlang:trace(P, true, [send, 'receive', {tracer, Counter}])) =:= 1],
try
    timer:sleep(WindowMs)
after
    [catch erlang:trace(P, false, [send, 'receive']) || P <- Traced]
end,
Counter ! {es_count, self()},
Count = receive {es_count, N} -> N after 5000 -> 0 end,
exit(Counter, kill),
{length(Traced), Count}
"""


class PlanError(ElixirScopeError):
    """A plan could not be made, or a plan file could not be read."""


@dataclass(frozen=True)
class PlanItem:
    """One trace: a module, the functions of it chosen, at one sample rate; or (kind
    ``process``) a process named by the focus, ``module`` holding its name, with what
    ``include`` says of it (its messages, lifecycle and state)."""

    module: str
    functions: tuple[tuple[str, int], ...]
    level: str
    sample_rate: float
    calls_per_s: float
    expected_events_per_s: float
    why: tuple[str, ...]
    kind: str = "module"
    include: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Plan:
    node: str
    budget: float
    focus: str | None
    window_s: float
    items: tuple[PlanItem, ...]
    left_out: tuple[str, ...] = field(default=())  # why functions were not taken

    @property
    def expected_events_per_s(self) -> float:
        return sum(item.expected_events_per_s for item in self.items)

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "budget": self.budget, "focus": self.focus,
                "window_s": self.window_s, "items": [item.as_dict() for item in self.items],
                "left_out": list(self.left_out),
                "expected_events_per_s": self.expected_events_per_s}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Plan:
        try:
            data = json.loads(path.read_text())
            items = tuple(PlanItem(
                module=str(item["module"]),
                functions=tuple((str(f), int(a)) for f, a in item["functions"]),
                level=str(item["level"]), sample_rate=float(item["sample_rate"]),
                calls_per_s=float(item["calls_per_s"]),
                expected_events_per_s=float(item["expected_events_per_s"]),
                why=tuple(str(w) for w in item.get("why", ())),
                kind=str(item.get("kind", "module")),
                include=tuple(str(i) for i in item.get("include", ())))
                for item in data["items"])
            return cls(node=str(data["node"]), budget=float(data["budget"]),
                       focus=data.get("focus"), window_s=float(data["window_s"]),
                       items=items, left_out=tuple(data.get("left_out", ())))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PlanError(f"{path} is not a plan written by elixirscope plan: {exc}") \
                from None


@dataclass
class _Candidate:
    info: FunctionInfo
    calls_per_s: float
    score: float
    why: list[str]
    # The analysed functions under it (itself included) that call another process
    # directly, with their call rates: each such call made under a traced call is
    # recorded too (a wait: its call and its return).
    waits: dict[str, float] = field(default_factory=dict)

    def cost(self, covered: set[str]) -> float:
        """Events per second it adds to what ``covered`` waits already bring."""
        extra = sum(rate for mfa, rate in self.waits.items() if mfa not in covered)
        return EVENTS_PER_CALL * self.calls_per_s + EVENTS_PER_WAIT * extra


async def make_plan(node: AsyncNode, budget: float, *, focus: str | None = None,
                    modules: list[str] | None = None, window: float = 1.0) -> Plan:
    """Measures the node for ``window`` seconds and plans traces within ``budget``
    events per second, most relevant to ``focus`` first."""
    if budget <= 0:
        raise PlanError("the budget is a number of events per second above 0")
    window = min(max(window, 0.1), MAX_WINDOW)
    focus_modules, focus_processes = (await _focus(node, focus) if focus
                                      else (set(), []))
    analysis = await analyze_node(node, modules, supervisors=False)
    wanted = [m for m in analysis.modules if m.debug_info]
    if not wanted:
        raise PlanError(f"none of the modules to plan for has debug info on {node.name}")
    counts = await eval_erlang(node, _COUNT, timeout=window + 60, bindings={
        "Modules": [module_atom(m.name) for m in wanted], "WindowMs": int(window * 1000)})
    rates = {(_display(m), str(f), int(a)): n / window for m, f, a, n in counts}
    candidates = _candidates(analysis, rates, focus, focus_modules)
    processes = []
    for name, pid, server in focus_processes[:MAX_FOCUS_PROCESSES]:
        counted, messages = await eval_erlang(node, _MESSAGES, timeout=window + 30, bindings={
            "Pids": [pid], "WindowMs": int(window * 1000)})
        if counted:
            processes.append((name, messages / window, server))
    return _choose(node.name, budget, focus, window, candidates, processes)


def _display(module: Atom) -> str:
    text = str(module)
    return text.removeprefix("Elixir.") if text.startswith("Elixir.") else f":{text}"


async def _focus(node: AsyncNode, focus: str
                 ) -> tuple[set[str], list[tuple[str, Any, bool]]]:
    """The modules a focus names (a module, or the callback module of a process it
    names) and the processes it names (registered name or label), each with whether it
    runs an OTP server (its state is then recorded too)."""
    wanted = focus.strip()
    modules = {wanted}
    processes = []
    pids = await node.rpc("erlang", "processes", [])
    labels = await fetch_labels(node, pids)
    for pid, label in zip(pids, labels, strict=True):
        if label is None or wanted not in (label.text, label.registered):
            continue
        call = label.initial_call.split(".")
        if len(call) > 1:
            modules.add(".".join(call[:-1]))
        processes.append((wanted, pid, label.initial_call.startswith(
            (":proc_lib", ":gen_server", ":gen_statem")) or len(call) > 1))
    return modules, processes


def _words(text: str) -> set[str]:
    return {w for w in re.split(r"[^a-z0-9]+", text.lower()) if len(w) > 2}


def _candidates(analysis: CodeAnalysis, rates: dict[tuple[str, str, int], float],
                focus: str | None, focus_modules: set[str]) -> list[_Candidate]:
    risky = {risk.function for risk in analysis.risks}
    by_mfa = {f.mfa: f for m in analysis.modules for f in m.functions}
    words = _words(focus or "")
    found = []
    for module in analysis.modules:
        for info in module.functions:
            if info.name.startswith("__") or info.name == "module_info":
                continue  # what the compiler generates
            why: list[str] = []
            score = 1.0
            if module.name in focus_modules:
                score += 6
                why.append("in the focus")
            matched = {w for w in words for n in _words(module.name) | _words(info.name)
                       if min(len(w), len(n)) >= 4 and (w.startswith(n) or n.startswith(w))}
            if matched:
                score += 4
                why.append(f"matches {', '.join(sorted(matched))}")
            if info.name in {"handle_call", "handle_cast", "handle_info", "handle_event",
                             "handle_continue", "mount", "handle_params", "handle_in"}:
                score += 3
                why.append("a callback")
            if info.targets:
                score += 2
                why.append("calls other processes")
            if info.sleeps or info.blocking:
                score += 3
                why.append("sleeps or blocks")
            if info.mfa in risky:
                score += 3
                why.append("in a risk the analysis found")
            if info.complexity >= 5:
                score += 1
                why.append(f"complexity {info.complexity}")
            rate = rates.get((module.name, info.name, info.arity), 0.0)
            waits = {mfa: rates.get((callee.module, callee.name, callee.arity), 0.0)
                     for mfa, callee in _under(info, by_mfa, 3).items()
                     if any(c.startswith(_PROCESS_CALLS) for c, _ in callee.calls)}
            found.append(_Candidate(info, rate, score, why, waits))
    return found


def _under(info: FunctionInfo, by_mfa: dict[str, FunctionInfo], depth: int
           ) -> dict[str, FunctionInfo]:
    """The function and the analysed functions it calls, ``depth`` levels down."""
    found = {info.mfa: info}
    if depth > 0:
        for callee, _ in info.calls:
            inner = by_mfa.get(callee)
            if inner is not None and callee not in found:
                found |= _under(inner, by_mfa, depth - 1)
    return found


def _choose(node: str, budget: float, focus: str | None, window: float,
            candidates: list[_Candidate],
            processes: Sequence[tuple[str, float, bool]] = ()) -> Plan:
    # The processes the focus names come first: their messages (a send and a receive
    # each) and, for a server, a state change per message handled.
    left = budget
    items: list[PlanItem] = []
    left_out: list[str] = []
    for name, messages, server in processes:
        cost = messages * (1.5 if server else 1.0)
        if cost <= left:
            include = ("messages", "lifecycle", *(("state",) if server else ()))
            items.append(PlanItem(
                module=name, functions=(), level="process", sample_rate=1.0,
                calls_per_s=round(messages, 1), expected_events_per_s=round(cost, 1),
                why=("the process the focus names",), kind="process", include=include))
            left -= cost
        else:
            left_out.append(f"the process {name}: {messages:,.0f} messages/s would pass "
                            "the budget")
    # Most relevant first; among equals the cheaper, so more of them fit.
    ordered = sorted(candidates, key=lambda c: (-c.score, c.cost(set()), c.info.mfa))
    covered: set[str] = set()
    taken: dict[str, list[tuple[_Candidate, float, float]]] = {}
    for candidate in ordered:
        if candidate.calls_per_s == 0 and candidate.score < 4:
            continue  # not called while measured, and nothing points at it
        cost = candidate.cost(covered)
        if cost <= left:
            taken.setdefault(candidate.info.module, []).append((candidate, 1.0, cost))
            covered |= set(candidate.waits)
            left -= cost
        elif left >= cost * MIN_SAMPLE_RATE and left > 0:
            taken.setdefault(candidate.info.module, []).append((candidate, left / cost, cost))
            covered |= set(candidate.waits)
            left = 0.0
        else:
            left_out.append(f"{candidate.info.mfa}: {candidate.calls_per_s:,.0f} calls/s, "
                            f"~{cost:,.0f} events/s would pass the budget")
    for module, chosen in taken.items():
        # One sample rate per module trace, so that the module costs what was planned
        # for it: its functions taken whole, and the share of the one taken sampled.
        cost = sum(c for _, _, c in chosen)
        wanted = sum(c * r for _, r, c in chosen)
        rate = max(MIN_SAMPLE_RATE, min(1.0, wanted / cost)) if cost else 1.0
        # A module trace at the detailed level sees exported functions only; a private
        # one chosen needs the full level (the same events, with the caller).
        level = LEVEL if all(c.info.exported for c, _, _ in chosen) else "full"
        items.append(PlanItem(
            module=module,
            functions=tuple((c.info.name, c.info.arity) for c, _, _ in chosen),
            level=level, sample_rate=round(rate, 4),
            calls_per_s=round(sum(c.calls_per_s for c, _, _ in chosen), 1),
            expected_events_per_s=round(wanted, 1),
            why=tuple(dict.fromkeys(w for c, _, _ in chosen for w in c.why))[:6]))
    items.sort(key=lambda item: -item.expected_events_per_s)
    return Plan(node=node, budget=budget, focus=focus, window_s=window, items=tuple(items),
                left_out=tuple(left_out[:50]))


def apply_plan(scope: Scope, made: Plan, *, force: bool = False) -> None:
    """Starts the plan's traces: one module trace per item, only its functions, and a
    process trace for each process item."""
    for item in made.items:
        if item.kind == "process":
            scope.trace_process(item.module, include=list(item.include), force=force)
        else:
            scope.trace(item.module, cast(Level, item.level), only=list(item.functions),
                        sample_rate=item.sample_rate, force=force)
