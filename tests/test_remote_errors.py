"""Exception banners against Elixir's own ``Exception.format_banner/3`` on a real node."""

from __future__ import annotations

import re

import pytest

import elixirscope
from elixirscope.remote_errors import exception_banner, format_stack_entry
from elixirscope.sample_nodes import BeamNode

pytestmark = pytest.mark.node

RAISING = [
    "1 + String.to_atom(\"a\")",
    "Map.fetch!(%{a: 1}, :b)",
    ":erlang.error({:badkey, :k})",
    "[a] = [1, 2]",
    "case :rand.uniform(1) do 2 -> :ok end",
    "raise \"plain message\"",
    "raise ArgumentError, \"bad thing\"",
    "exit(:shutdown)",
    "exit(:normal)",
    "exit(:noproc)",
    "GenServer.call(:no_such_server_name, :hi)",
    "exit({:shutdown, %{why: 1}})",
    "throw({:ball, [1, 2]})",
    "Enum.fetch!([], 3)",
    "String.upcase(42)",
    ":erlang.error(:system_limit)",
    "Keyword.fetch!([a: 1], :b)",
    "%{} |> Map.update!(:x, & &1)",
    "apply(fn x -> x end, [1, 2])",
    ":erlang.error({:something, :custom})",
    "raise KeyError, key: :k, term: %{z: 1}",
]


@pytest.mark.parametrize("expression", RAISING)
def test_banner_matches_elixir(elixir_node: BeamNode, expression: str) -> None:
    probe = (f"try do {expression} catch kind, reason -> "
             "{kind, reason, __STACKTRACE__, Exception.format_banner(kind, reason, __STACKTRACE__)}"
             " end")
    with elixirscope.connect(elixir_node.name, elixir_node.cookie) as node:
        (kind, reason, stack, banner), _ = node.rpc("Elixir.Code", "eval_string", [probe])
    assert same_fun_text(exception_banner(str(kind), reason, stack)) == \
        same_fun_text(banner.decode())


def same_fun_text(text: str) -> str:
    """Closures print without their defining function (a documented difference)."""
    return re.sub(r"#Function<[^>]*>", "#Function<>", text)


# Where Elixir asks code on the node for the words, the banner keeps the exception and
# falls back to words of its own (documented in remote_errors).
APPROXIMATED = {
    "String.to_integer(\"x\")": "** (ArgumentError) argument error",
    ":no_such_module.call(1)":
        "** (UndefinedFunctionError) function :no_such_module.call/1 is undefined or private",
}


@pytest.mark.parametrize(("expression", "ours"), APPROXIMATED.items())
def test_approximated_banners(elixir_node: BeamNode, expression: str, ours: str) -> None:
    probe = f"try do {expression} catch kind, reason -> {{kind, reason, __STACKTRACE__}} end"
    with elixirscope.connect(elixir_node.name, elixir_node.cookie) as node:
        (kind, reason, stack), _ = node.rpc("Elixir.Code", "eval_string", [probe])
    assert exception_banner(str(kind), reason, stack) == ours


def test_stack_entries() -> None:
    from elixirscope.etf import Atom

    entry = (Atom("Elixir.Bank.Account"), Atom("withdraw"), 2,
             [(Atom("file"), list(b"lib/bank/account.ex")), (Atom("line"), 42)])
    assert format_stack_entry(entry) == "lib/bank/account.ex:42: Bank.Account.withdraw/2"
    assert format_stack_entry((Atom("lists"), Atom("map"), [1, b"x"], [])) == \
        ':lists.map(1, "x")'
