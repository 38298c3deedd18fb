"""Module names and pids as people write them, turned into terms.

Elixir modules are atoms with an ``Elixir.`` prefix: ``MyApp.Worker`` is the atom
``:"Elixir.MyApp.Worker"``. Erlang modules are plain atoms: ``:lists`` or ``lists``.
"""

from __future__ import annotations

import re
from typing import Literal

from elixirscope.errors import InvalidName
from elixirscope.etf import Atom

_ELIXIR_ALIAS = re.compile(r"^(Elixir\.)?[A-Z][A-Za-z0-9_]*(\.[A-Z][A-Za-z0-9_]*)*$")
_PID_TEXT = re.compile(r"^\s*(?:#PID)?<(\d+)\.(\d+)\.(\d+)>\s*$")


def module_atom(name: str | Atom) -> Atom:
    """``"MyApp.Worker"`` -> ``Elixir.MyApp.Worker``; ``":lists"`` or ``"lists"`` -> ``lists``."""
    if isinstance(name, Atom):
        return name
    text = name.strip()
    if not text:
        raise InvalidName("a module name cannot be empty")
    if text.startswith(":"):
        return Atom(text[1:].strip('"'))
    if _ELIXIR_ALIAS.match(text):
        return Atom(text if text.startswith("Elixir.") else f"Elixir.{text}")
    return Atom(text)


def module_display(module: str) -> str:
    """How Elixir writes a module: ``MyApp.Worker`` or ``:lists``."""
    if module.startswith("Elixir."):
        return module[len("Elixir."):]
    return f":{module}"


def function_atom(name: str | Atom) -> Atom:
    if isinstance(name, Atom):
        return name
    text = name.strip().removeprefix(":")
    if not text:
        raise InvalidName("a function name cannot be empty")
    return Atom(text)


def parse_pid_text(text: str) -> tuple[int, int, int] | None:
    """``(0, 123, 0)`` from ``#PID<0.123.0>`` or ``<0.123.0>``; ``None`` for anything else."""
    match = _PID_TEXT.match(text)
    if not match:
        return None
    a, b, c = (int(group) for group in match.groups())
    return a, b, c


def mfa_display(module: str, function: str, arity: int) -> str:
    """``Bank.Account.handle_call/3`` or ``:gen_server.loop/7``."""
    return f"{module_display(module)}.{function}/{arity}"


def parse_mfa_text(text: str) -> tuple[Atom, Atom, int | Literal["_"]]:
    """``Bank.Account.deposit/2``, ``Bank.Account.deposit`` (any arity),
    ``:lists.seq/2`` or ``lists:seq/2`` -> module atom, function atom, arity or ``"_"``."""
    body, _, arity_text = text.strip().partition("/")
    if arity_text and not arity_text.isdigit():
        raise InvalidName(f"{text!r}: the arity after / must be a number")
    if ":" in body.lstrip(":"):
        module, _, function = body.lstrip(":").partition(":")
    else:
        module, _, function = body.rpartition(".")
    if not module or not function:
        raise InvalidName(f"{text!r} is not a function: write Module.function/arity")
    return module_atom(module), function_atom(function), int(arity_text) if arity_text else "_"
