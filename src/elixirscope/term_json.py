"""Decoded terms as JSON values, for ``--json`` output.

JSON has fewer types than Erlang, so this is for reading, not for round trips: atoms
become strings (``nil`` becomes ``null``), tuples become arrays, binaries become strings
when they are UTF-8 text and arrays of bytes otherwise, and identifiers become their
Elixir text (``"#PID<0.1.0>"``). Map keys that are not text are printed Elixir-style."""

from __future__ import annotations

from typing import Any

from elixirscope.elixir_format import inspect
from elixirscope.etf import Atom, ImproperList, PairMap

JSON = None | bool | int | float | str | list["JSON"] | dict[str, "JSON"]


def to_json(term: Any, depth: int = 0) -> JSON:
    if depth > 100:
        return inspect(term)
    if term is None or isinstance(term, bool | int | float):
        return term
    if isinstance(term, Atom):
        return None if term == Atom("nil") else str(term)
    if isinstance(term, bytes):
        try:
            return term.decode("utf-8")
        except UnicodeDecodeError:
            return list(term)
    if isinstance(term, list | tuple):
        return [to_json(item, depth + 1) for item in term]
    if isinstance(term, dict):
        return {_key(key): to_json(value, depth + 1) for key, value in term.items()}
    if isinstance(term, PairMap):
        return {_key(key): to_json(value, depth + 1) for key, value in term.pairs}
    if isinstance(term, ImproperList):
        return [*(to_json(item, depth + 1) for item in term.items), to_json(term.tail, depth + 1)]
    return inspect(term)


def _key(key: Any) -> str:
    if isinstance(key, Atom):
        return str(key)
    if isinstance(key, bytes):
        try:
            return key.decode("utf-8")
        except UnicodeDecodeError:
            pass
    return inspect(key)
