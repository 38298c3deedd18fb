"""The modules loaded on a node, found by a glob: ``MyApp.*``, ``m_*`` (the pages Yaws
compiles at run time as ``m_40014509_1``), ``:gen_*``.

Elixir names are written as in Elixir (``MyApp.*`` is the atoms ``Elixir.MyApp.*``);
``*`` matches any run of characters, dots included, and ``?`` one character. The node
does the matching (``code:all_loaded/0`` and ``re``), so only the matches travel.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass
from typing import Any

from elixirscope.beam_names import module_display
from elixirscope.dist.async_node import AsyncNode
from elixirscope.errors import ElixirScopeError
from elixirscope.etf import Atom
from elixirscope.remote_eval import eval_erlang

# Above this many matches, ``modules`` does not read beam files for debug info.
MAX_DEBUG_INFO_CHECKS = 2_000

_MATCHING = """
{ok, Re} = re:compile(Pattern, [unicode]),
lists:sort([M || {M, _} <- code:all_loaded(),
                 re:run(atom_to_binary(M, utf8), Re, [{capture, none}]) =:= match])
"""

_ALL = "[M || {M, _} <- code:all_loaded()]"

# For each module: its application (from the applications' module lists) and whether
# its beam file keeps debug info (the Dbgi chunk, and not {none, _} in it).
_DESCRIBE = """
Apps = maps:from_list([{M, A} || {A, _, _} <- application:loaded_applications(),
                                 {ok, Ms} <- [application:get_key(A, modules)], M <- Ms]),
Debug = fun(M) ->
    case code:which(M) of
        File when is_list(File), Check ->
            case beam_lib:chunks(File, ["Dbgi"], [allow_missing_chunks]) of
                {ok, {_, [{_, missing_chunk}]}} -> false;
                {ok, {_, [{_, Bin}]}} ->
                    case binary_to_term(Bin) of
                        {debug_info_v1, _, {none, _}} -> false;
                        _ -> true
                    end;
                _ -> unknown
            end;
        _ -> unknown
    end
end,
[{M, maps:get(M, Apps, undefined), Debug(M)} || M <- Modules]
"""


class NoModuleMatches(ElixirScopeError):
    """A module glob matched no loaded module."""


@dataclass(frozen=True, slots=True)
class LoadedModule:
    name: str  # as Elixir writes it: MyApp.Worker, :lists
    application: str  # "" when no loaded application lists it
    debug_info: bool | None  # None: no beam file to look in (preloaded, in memory)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_glob(name: str | Atom) -> bool:
    return isinstance(name, str) and not isinstance(name, Atom) and any(
        char in name for char in "*?")


def glob_regex(pattern: str) -> str:
    """The anchored regular expression, over atom text, of a glob as people write it."""
    text = pattern.strip()
    if text.startswith(":"):
        text = text[1:].strip('"')
    elif text[:1].isupper() and not text.startswith("Elixir."):
        text = f"Elixir.{text}"
    parts = [".*" if char == "*" else "." if char == "?" else re.escape(char)
             for char in text]
    return "^" + "".join(parts) + "$"


async def matching_modules(node: AsyncNode, pattern: str) -> list[Atom]:
    """The loaded modules whose names match ``pattern``, sorted (empty when none do)."""
    found = await eval_erlang(node, _MATCHING,
                              bindings={"Pattern": glob_regex(pattern).encode()})
    return [Atom(str(module)) for module in found]


async def expand_module_glob(node: AsyncNode, pattern: str) -> list[Atom]:
    """The loaded modules ``pattern`` matches; one sentence, with close names, if none."""
    found = await matching_modules(node, pattern)
    if found:
        return found
    loaded = [module_display(str(module)) for module in await eval_erlang(node, _ALL)]
    close = difflib.get_close_matches(pattern.replace("*", "").replace("?", ""), loaded,
                                      n=5, cutoff=0.5)
    hint = f"; close names: {', '.join(sorted(close))}" if close else ""
    raise NoModuleMatches(f"no module loaded on {node.name} matches {pattern}{hint}")


async def loaded_modules(node: AsyncNode, pattern: str | None = None) -> list[LoadedModule]:
    """The loaded modules (those matching ``pattern``), with application and debug info."""
    if pattern is None:
        modules = sorted(Atom(str(module)) for module in await eval_erlang(node, _ALL))
    else:
        modules = await matching_modules(node, pattern)
    described = await eval_erlang(node, _DESCRIBE, timeout=60.0, bindings={
        "Modules": modules, "Check": len(modules) <= MAX_DEBUG_INFO_CHECKS})
    return [LoadedModule(name=module_display(str(module)),
                         application="" if app == Atom("undefined") else str(app),
                         debug_info=None if debug == Atom("unknown") else debug is True)
            for module, app, debug in described]
