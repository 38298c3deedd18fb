"""The Erlang record definitions of a node's modules, read from their debug info, so
that a recorded ``{ch, {conf, ...}, ...}`` prints as ``#ch{conf: ..., ...}``.

The node reads its own beam files (``beam_lib`` and the debug info backend); only the
record names and field names travel. A module without debug info has none to give.
Two modules that define a record of the same name and size with other fields make it
ambiguous: it prints as the tuple it is.
"""

from __future__ import annotations

from collections.abc import Iterable

from elixirscope.dist.async_node import AsyncNode
from elixirscope.etf import Atom
from elixirscope.remote_eval import eval_erlang

# Modules whose beam files are read, at most; the rest keep plain tuples.
MAX_MODULES = 300

_RECORDS = """
Fields = fun(Fs) ->
    [case F of
         {typed_record_field, {record_field, _, {atom, _, N}}, _} -> N;
         {typed_record_field, {record_field, _, {atom, _, N}, _}, _} -> N;
         {record_field, _, {atom, _, N}} -> N;
         {record_field, _, {atom, _, N}, _} -> N
     end || F <- Fs]
end,
Of = fun(M) ->
    try
        File = code:which(M),
        true = is_list(File),
        {ok, {M, [{debug_info, {debug_info_v1, Backend, Data}}]}} =
            beam_lib:chunks(File, [debug_info]),
        {ok, Forms} = Backend:debug_info(erlang_v1, M, Data, []),
        [{Name, Fields(Fs)} || {attribute, _, record, {Name, Fs}} <- Forms]
    catch _:_ -> []
    end
end,
lists:append([Of(M) || M <- Modules])
"""


async def record_definitions(node: AsyncNode, modules: Iterable[str]
                             ) -> dict[tuple[str, int], list[str]]:
    """``{(name, tuple size): [field, ...]}`` of the records ``modules`` define (atom
    names, ``Elixir.``-prefixed for Elixir modules), unambiguous ones only."""
    wanted = sorted({Atom(module) for module in modules})[:MAX_MODULES]
    if not wanted:
        return {}
    found = await eval_erlang(node, _RECORDS, timeout=60.0, bindings={"Modules": wanted})
    records: dict[tuple[str, int], list[str]] = {}
    clashes: set[tuple[str, int]] = set()
    for name, fields in found:
        key = (str(name), len(fields) + 1)
        names = [str(field) for field in fields]
        if records.get(key, names) != names:
            clashes.add(key)
        records[key] = names
    return {key: fields for key, fields in records.items() if key not in clashes}
