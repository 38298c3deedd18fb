"""Evaluating an Elixir or Erlang expression on a node (``elixirscope eval``)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from elixirscope.dist.async_node import AsyncNode
from elixirscope.dist.io_server import chardata_to_text
from elixirscope.elixir_format import inspect
from elixirscope.errors import ElixirScopeError, RemoteError
from elixirscope.etf import Atom

OK = Atom("ok")
VALUE = Atom("value")
UNDEF = Atom("undef")


class EvalError(ElixirScopeError):
    """The expression could not be read or run on the node."""


async def eval_elixir(node: AsyncNode, expression: str, *, timeout: float = 60.0,
                output: Callable[[str], None] | None = None) -> Any:
    """The value of an Elixir expression, evaluated with ``Code.eval_string/1``."""
    try:
        value, _binding = await node.rpc("Elixir.Code", "eval_string", [expression],
                                   timeout=timeout, output=output)
    except RemoteError as exc:
        if exc.kind == "error" and exc.reason == UNDEF and _undefined_is(exc, "Elixir.Code"):
            raise EvalError(f"{node.name} has no Elixir loaded; "
                            "use --erlang to evaluate an Erlang expression") from None
        raise
    return value


async def eval_erlang(node: AsyncNode, expression: str, *, timeout: float = 60.0,
                output: Callable[[str], None] | None = None,
                bindings: Mapping[str, Any] | None = None) -> Any:
    """The value of Erlang expressions (``X = 1, X + 1``), scanned, parsed and
    evaluated on the node with ``erl_scan``, ``erl_parse`` and ``erl_eval``;
    ``bindings`` gives variables their values (``{"Src": b"..."}``)."""
    text = expression.strip()
    if not text.endswith("."):
        text += "."
    scanned = await node.rpc("erl_scan", "string", [[ord(c) for c in text]])
    if scanned[0] != OK:
        raise EvalError(f"cannot read the expression: {await _error_text(node, scanned[1])}")
    parsed = await node.rpc("erl_parse", "parse_exprs", [scanned[1]])
    if parsed[0] != OK:
        raise EvalError(f"cannot parse the expression: {await _error_text(node, parsed[1])}")
    variables = sorted((Atom(name), value) for name, value in (bindings or {}).items())
    result = await node.rpc("erl_eval", "exprs", [parsed[1], variables], timeout=timeout,
                      output=output)
    if not (isinstance(result, tuple) and result[0] == VALUE):
        raise EvalError("the node did not return a value")
    return result[1]


async def _error_text(node: AsyncNode, info: Any) -> str:
    """``Module:format_error(Descriptor)`` for an ``{Location, Module, Descriptor}``."""
    if isinstance(info, tuple) and len(info) == 3 and isinstance(info[1], Atom):
        location, module, descriptor = info
        text = chardata_to_text(await node.rpc(module, "format_error", [descriptor]))
        where = location[0] if isinstance(location, tuple) else location
        return f"{text} (line {where})" if isinstance(where, int) else text
    return inspect(info)


def _undefined_is(error: RemoteError, module: str) -> bool:
    top = error.stacktrace[0] if error.stacktrace else None
    return isinstance(top, tuple) and len(top) == 4 and top[0] == Atom(module)
