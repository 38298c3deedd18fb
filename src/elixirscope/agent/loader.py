"""Compiling the agent on the node at attach time, from source, without touching disk.

The module is named after the ElixirScope version (``elixirscope_agent_0_1_0``), so
two releases attached to one node never load over each other's code, and sessions
of the same release share one copy.
"""

from __future__ import annotations

import re
from importlib import resources

from elixirscope.dist.async_node import AsyncNode
from elixirscope.errors import ElixirScopeError, RemoteError
from elixirscope.etf import Atom
from elixirscope.remote_eval import eval_erlang
from elixirscope.version import __version__

SOURCE_NAME = "elixirscope_agent"
MODULE = Atom(f"{SOURCE_NAME}_{re.sub(r'[^0-9a-zA-Z]', '_', __version__)}")

# Scans the source, splits it into forms at each dot token, parses and compiles
# them and loads the binary: all on the node, so only the source crosses the wire.
_COMPILE_ON_NODE = """
{ok, Tokens, _} = erl_scan:string(unicode:characters_to_list(Src)),
Split = fun Loop([], [], Forms) -> lists:reverse(Forms);
            Loop([{dot, _} = Dot | Rest], Acc, Forms) ->
                Loop(Rest, [], [lists:reverse([Dot | Acc]) | Forms]);
            Loop([Token | Rest], Acc, Forms) -> Loop(Rest, [Token | Acc], Forms)
        end,
Parsed = [erl_parse:parse_form(Form) || Form <- Split(Tokens, [], [])],
case [Error || {error, Error} <- Parsed] of
    [] ->
        case compile:forms([F || {ok, F} <- Parsed], [binary, return_errors]) of
            {ok, Mod, Bin} -> code:load_binary(Mod, "elixirscope_agent.erl", Bin);
            {ok, Mod, Bin, _Warnings} -> code:load_binary(Mod, "elixirscope_agent.erl", Bin);
            CompileError -> CompileError
        end;
    Errors -> {error, {parse, Errors}}
end
"""


class AgentLoadError(ElixirScopeError):
    """The agent could not be compiled or loaded on the node."""


def agent_source() -> str:
    """The agent's Erlang source, with the module named after this release."""
    text = resources.files("elixirscope.agent").joinpath(f"{SOURCE_NAME}.erl").read_text()
    return text.replace(f"-module({SOURCE_NAME}).", f"-module({MODULE}).", 1)


async def ensure_agent(node: AsyncNode) -> Atom:
    """Loads the agent unless this release's agent is already loaded; returns its module."""
    if await node.rpc("code", "is_loaded", [MODULE]) is not False:
        return MODULE
    compiler = await node.rpc("code", "ensure_loaded", [Atom("compile")])
    if compiler != (Atom("module"), Atom("compile")):
        raise AgentLoadError(
            f"{node.name} has no compiler application, which the agent needs to load; "
            "add :compiler to the release (extra_applications: [:compiler] in mix.exs, "
            "or compiler in the .app/.rel file) and restart the node"
        )
    try:
        loaded = await eval_erlang(node, _COMPILE_ON_NODE, bindings={"Src": agent_source()},
                             timeout=60.0)
    except RemoteError as exc:
        raise AgentLoadError(f"compiling the agent on {node.name} failed: {exc}") from None
    if loaded != (Atom("module"), MODULE):
        raise AgentLoadError(f"loading the agent on {node.name} failed: {loaded!r}")
    return MODULE
