"""Compiling the agent on the node at attach time, from source, without touching disk.

Each session loads its own copy, named after the ElixirScope version and the session
(``elixirscope_agent_0_1_0_5f3a9c1e``): two releases never load over each other's
code, and a session that ends unloads its copy without racing another session that
is starting.
"""

from __future__ import annotations

import re
import secrets
from importlib import resources

from elixirscope.dist.async_node import AsyncNode
from elixirscope.errors import ElixirScopeError, RemoteError
from elixirscope.etf import Atom
from elixirscope.remote_eval import eval_erlang
from elixirscope.version import __version__

SOURCE_NAME = "elixirscope_agent"
RELEASE_PREFIX = f"{SOURCE_NAME}_{re.sub(r'[^0-9a-zA-Z]', '_', __version__)}"

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


def session_module(source_name: str = SOURCE_NAME) -> Atom:
    prefix = f"{source_name}_{re.sub(r'[^0-9a-zA-Z]', '_', __version__)}"
    return Atom(f"{prefix}_{secrets.token_hex(4)}")


def agent_source(module: Atom, source_name: str = SOURCE_NAME) -> str:
    """The Erlang source of the agent (or of another helper module shipped beside it,
    ``elixirscope_analyzer``), with the module named ``module``."""
    text = resources.files("elixirscope.agent").joinpath(f"{source_name}.erl").read_text()
    return text.replace(f"-module({source_name}).", f"-module({module}).", 1)


async def load_agent(node: AsyncNode, source_name: str = SOURCE_NAME) -> Atom:
    """Compiles and loads a copy of the agent (or of the helper ``source_name``) for one
    session; returns its module."""
    module = session_module(source_name)
    compiler = await node.rpc("code", "ensure_loaded", [Atom("compile")])
    if compiler != (Atom("module"), Atom("compile")):
        raise AgentLoadError(
            f"{node.name} has no compiler application, which the agent needs to load; "
            "add :compiler to the release (extra_applications: [:compiler] in mix.exs, "
            "or compiler in the .app/.rel file) and restart the node"
        )
    try:
        loaded = await eval_erlang(node, _COMPILE_ON_NODE,
                                   bindings={"Src": agent_source(module, source_name)},
                                   timeout=60.0)
    except RemoteError as exc:
        raise AgentLoadError(f"compiling the agent on {node.name} failed: {exc}") from None
    if loaded != (Atom("module"), module):
        raise AgentLoadError(f"loading the agent on {node.name} failed: {loaded!r}")
    return module


async def unload(node: AsyncNode, module: Atom) -> None:
    """Deletes and purges a helper module loaded with ``load_agent``."""
    await node.rpc("code", "delete", [module])
    await node.rpc("code", "purge", [module])
