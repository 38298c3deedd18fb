"""What a node knows a process by, for many pids in one remote evaluation.

A process is named by, first to last: its registered name, its ``proc_lib`` label
(``proc_lib:set_label/1``, OTP 27+), the ``process_name`` dictionary entry RabbitMQ
keeps (``{rabbit_amqqueue_process, Queue}``), its keys in Elixir ``Registry``\\ s, and
its initial call (the ``'$initial_call'`` a ``proc_lib`` process keeps in its
dictionary).

Only the dictionary keys we need are read: with ``process_info(P, {dictionary, Key})``
where the node has it (OTP 26.2+), else by filtering the dictionary of a process whose
heap is small enough to copy. Registry keys come from ``Registry.keys/2`` (one ETS
lookup per registry and pid), the registries being the named ETS tables owned by a
process started as ``Registry.Supervisor``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from elixirscope.beam_names import mfa_display, module_display
from elixirscope.dist.async_node import AsyncNode
from elixirscope.elixir_format import inspect
from elixirscope.etf import Atom, Pid
from elixirscope.remote_eval import eval_erlang

# Words of heap above which a process's whole dictionary is not copied (OTP < 26.2).
MAX_COPIED_HEAP_WORDS = 256 * 1024
MAX_REGISTRY_KEYS = 3

_LABELS = """
Keys = ['$process_label', process_name, '$initial_call'],
Dict = fun(P) ->
    try [{K, V} || K <- Keys, {{dictionary, _}, V} <- [erlang:process_info(P, {dictionary, K})],
                   V =/= undefined]
    catch error:badarg ->
        case erlang:process_info(P, total_heap_size) of
            {total_heap_size, H} when H =< MaxHeap ->
                case erlang:process_info(P, dictionary) of
                    {dictionary, D} -> [KV || {K, _} = KV <- D, lists:member(K, Keys)];
                    _ -> []
                end;
            _ -> []
        end
    end
end,
RegistryInit = {'$initial_call', {supervisor, 'Elixir.Registry.Supervisor', 1}},
Registries = case erlang:module_loaded('Elixir.Registry') of
    false -> [];
    true -> [T || T <- ets:all(), is_atom(T), is_pid(erlang:whereis(T)),
                  ets:info(T, owner) =:= erlang:whereis(T),
                  lists:member(RegistryInit, Dict(erlang:whereis(T)))]
end,
RegistryKeys = fun(P) ->
    lists:sublist([{R, K} || R <- Registries,
                             K <- try 'Elixir.Registry':keys(R, P) catch _:_ -> [] end],
                  MaxKeys)
end,
[case erlang:process_info(P, registered_name) of
     undefined -> gone;
     Registered -> {Registered, Dict(P), RegistryKeys(P)}
 end || P <- Pids].
"""


@dataclass(frozen=True, slots=True)
class ProcessLabel:
    """What the node knows a process by; ``text`` is the one to show."""

    registered: str
    label: str
    registry_keys: tuple[str, ...]
    initial_call: str

    @property
    def text(self) -> str:
        if self.registered:
            return self.registered
        if self.label:
            return self.label
        return self.registry_keys[0] if self.registry_keys else ""

    @property
    def names(self) -> tuple[str, ...]:
        """Every name a user may write for this process (``--pid`` lookups)."""
        return tuple(name for name in (self.registered, self.label, *self.registry_keys)
                     if name)


async def fetch_labels(node: AsyncNode, pids: list[Pid]) -> list[ProcessLabel | None]:
    """A label for each pid, ``None`` for a process that is gone, in one evaluation."""
    if not pids:
        return []
    found = await eval_erlang(node, _LABELS, timeout=30.0, bindings={
        "Pids": pids, "MaxHeap": MAX_COPIED_HEAP_WORDS, "MaxKeys": MAX_REGISTRY_KEYS})
    return [_label(item) if isinstance(item, tuple) else None for item in found]


def _label(item: tuple[Any, list[tuple[Atom, Any]], list[tuple[Atom, Any]]]) -> ProcessLabel:
    registered, dictionary, registry_keys = item
    entries = {str(key): value for key, value in dictionary}
    name = registered[1] if isinstance(registered, tuple) else None
    label = entries.get("$process_label", entries.get("process_name"))
    return ProcessLabel(
        registered=inspect(name) if isinstance(name, Atom) else "",
        label="" if label is None else label_text(label),
        registry_keys=tuple(f"{label_text(registry)}:{label_text(key)}"
                            for registry, key in registry_keys),
        initial_call=_mfa(entries.get("$initial_call")),
    )


def label_text(term: Any) -> str:
    """A label as people type it: the parts of a tuple joined by ``:``, strings bare,
    modules as Elixir writes them, a RabbitMQ resource by its name (and its vhost when
    that is not ``/``): ``{rabbit_amqqueue_process, #resource{name = <<"q1">>}}`` is
    ``rabbit_amqqueue_process:q1``."""
    if isinstance(term, Atom):
        text = str(term)
        return module_display(text) if text.startswith("Elixir.") else text
    if isinstance(term, bytes):
        try:
            return term.decode()
        except UnicodeDecodeError:
            return inspect(term)
    if isinstance(term, tuple):
        if (len(term) == 4 and term[0] == Atom("resource") and isinstance(term[1], bytes)
                and isinstance(term[3], bytes)):
            vhost, name = label_text(term[1]), label_text(term[3])
            return name if vhost == "/" else f"{vhost}/{name}"
        return ":".join(label_text(part) for part in term)
    if isinstance(term, int) and not isinstance(term, bool):
        return str(term)
    return inspect(term)


def _mfa(mfa: Any) -> str:
    if isinstance(mfa, tuple) and len(mfa) == 3 and isinstance(mfa[0], Atom):
        return mfa_display(str(mfa[0]), str(mfa[1]), mfa[2])
    return "" if mfa is None else inspect(mfa)


async def named_processes(node: AsyncNode) -> dict[Pid, str]:
    """Every process of the node that has a name or a label, with the one to show."""
    pids = await node.rpc("erlang", "processes", [])
    labels = await fetch_labels(node, pids)
    return {pid: label.text for pid, label in zip(pids, labels, strict=True)
            if label is not None and label.text}
