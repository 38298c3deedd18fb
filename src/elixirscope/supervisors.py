"""The supervisors of a live node: strategy, intensity and period, children, restarts.

A supervisor is a process whose initial call is ``supervisor`` (OTP's, Elixir's
``Supervisor`` and ``DynamicSupervisor``) or RabbitMQ's ``supervisor2``. Its children
come from ``which_children`` (the call ``supervisor:which_children/1`` makes, with a
timeout instead of ``infinity``). Strategy, intensity, period and the restarts of the
current period live in its state, which ``sys:get_state/2`` reads only when the
supervisor is idle (waiting, empty mailbox), with a timeout: OTP's ``#state{}`` and
``supervisor2``'s keep them at the same places (strategy 3rd, intensity 6th, period
7th, restarts 8th, callback module second to last), checked by shape before use;
``DynamicSupervisor`` keeps them in its struct.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from elixirscope.beam_names import module_display
from elixirscope.dist.async_node import AsyncNode
from elixirscope.elixir_format import inspect
from elixirscope.errors import ElixirScopeError
from elixirscope.etf import Atom, Pid
from elixirscope.process_labels import ProcessLabel, fetch_labels
from elixirscope.remote_eval import eval_erlang

CALL_TIMEOUT_MS = 2_000
MAX_CHILDREN = 1_000
_SUPERVISOR_CALLS = (":supervisor.", ":supervisor2.")

_DESCRIBE = """
Strategies = [one_for_one, one_for_all, rest_for_one, simple_one_for_one],
Settings = fun
    (S) when is_tuple(S), tuple_size(S) >= 10, element(1, S) =:= state ->
        case {element(3, S), element(6, S), element(7, S), element(8, S)} of
            {St, I, Pe, R} when is_integer(I), is_integer(Pe), is_list(R) ->
                case lists:member(St, Strategies) of
                    true -> {St, I, Pe, R, element(tuple_size(S) - 1, S)};
                    false -> unknown
                end;
            _ -> unknown
        end;
    (#{'__struct__' := 'Elixir.DynamicSupervisor'} = S) ->
        {maps:get(strategy, S), maps:get(max_restarts, S), maps:get(max_seconds, S),
         maps:get(restarts, S), maps:get(mod, S)};
    (_) -> unknown
end,
Describe = fun(P) ->
    Idle = erlang:process_info(P, [status, message_queue_len]) =:=
        [{status, waiting}, {message_queue_len, 0}],
    Children = try gen_server:call(P, which_children, Timeout) of
        Cs when is_list(Cs) -> {length(Cs), lists:sublist(Cs, MaxChildren)};
        _ -> unknown
    catch _:_ -> unknown
    end,
    State = case Idle of
        true -> try Settings(sys:get_state(P, Timeout)) catch _:_ -> unknown end;
        false -> busy
    end,
    {Children, State}
end,
{erlang:monotonic_time(second), [Describe(P) || P <- Sups]}
"""


class NoSupervisor(ElixirScopeError):
    """No supervisor, or none by the name asked for."""


@dataclass(frozen=True, slots=True)
class Child:
    id: str
    pid: str  # "" when not running (a transient that ended, one being restarted)
    label: str  # what the node knows the child by (a Registry key, a process_name...)
    type: str  # worker, supervisor
    modules: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Supervisor:
    pid: str
    name: str
    module: str
    # None when the state could not be read: "state" says why (busy, unknown).
    strategy: str | None
    intensity: int | None
    period: int | None
    restarts_ago_s: tuple[int, ...] | None  # the restarts of the current period
    state: str  # read, busy (not idle, so not asked), unknown
    children_count: int | None  # None when which_children did not answer in time
    children: tuple[Child, ...]

    def as_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["children"] = [child.as_dict() for child in self.children]
        return values


def is_supervisor(label: ProcessLabel) -> bool:
    return label.initial_call.startswith(_SUPERVISOR_CALLS)


async def live_supervisors(node: AsyncNode, name: str | None = None) -> list[Supervisor]:
    """The node's supervisors (the one ``name`` names: a registered name, a label or a
    pid as printed), in pid order."""
    pids = sorted(await node.rpc("erlang", "processes", []), key=lambda pid: pid.id)
    labels = await fetch_labels(node, pids)
    chosen = [(pid, label) for pid, label in zip(pids, labels, strict=True)
              if label is not None and is_supervisor(label)
              and (name is None or _names(pid, label, name))]
    if not chosen:
        return []
    now, described = await eval_erlang(node, _DESCRIBE, timeout=60.0, bindings={
        "Sups": [pid for pid, _ in chosen], "Timeout": CALL_TIMEOUT_MS,
        "MaxChildren": MAX_CHILDREN})
    shown = {pid: label.text for pid, label in zip(pids, labels, strict=True)
             if label is not None}
    return [_supervisor(pid, label, children, state, now, shown)
            for (pid, label), (children, state) in zip(chosen, described, strict=True)]


def pid_text(pid: Pid) -> str:
    return f"#PID<0.{pid.id}.{pid.serial}>"


def _names(pid: Pid, label: ProcessLabel, name: str) -> bool:
    wanted = name.strip()
    return wanted in label.names or wanted.lstrip(":") in label.names or \
        f":{wanted}" in label.names or pid_text(pid) == wanted or \
        pid_text(pid) == f"#PID{wanted}"


def _supervisor(pid: Pid, label: ProcessLabel, children: Any, state: Any, now: int,
                shown: dict[Pid, str]) -> Supervisor:
    listed: tuple[Child, ...] = ()
    count: int | None = None
    if isinstance(children, tuple):
        count = children[0]
        listed = tuple(_child(child, shown) for child in children[1])
    settings = state if isinstance(state, tuple) else None
    strategy = intensity = period = restarts = None
    # The initial call is supervisor:init/1's stand-in {supervisor, Module, 1}.
    module = module_display(label.initial_call.split(".", 1)[1].rsplit("/", 1)[0])
    if settings is not None:
        strategy, intensity, period = str(settings[0]), settings[1], settings[2]
        restarts = tuple(now - stamp for stamp in settings[3] if isinstance(stamp, int))
        if isinstance(settings[4], Atom):
            module = module_display(str(settings[4]))
    return Supervisor(
        pid=pid_text(pid), name=label.text, module=module, strategy=strategy,
        intensity=intensity, period=period, restarts_ago_s=restarts,
        state="read" if settings is not None else str(state), children_count=count,
        children=listed)


def _child(child: Any, shown: dict[Pid, str]) -> Child:
    ident, pid, kind, modules = child
    return Child(
        id=_term_text(ident),
        pid=pid_text(pid) if isinstance(pid, Pid) else "",
        label=shown.get(pid, "") if isinstance(pid, Pid) else "",
        type=str(kind),
        modules="dynamic" if modules == Atom("dynamic") else ", ".join(
            module_display(str(module)) for module in modules),
    )


def _term_text(term: Any) -> str:
    if isinstance(term, Atom):
        return "" if term == Atom("undefined") else module_display(str(term)) \
            if str(term).startswith("Elixir.") else str(term)
    return inspect(term)
