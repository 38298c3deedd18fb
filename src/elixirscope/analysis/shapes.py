"""The shape of a term: its structure and atoms, with the values that differ from one
message or call to the next (numbers, binaries, pids, refs, funs) masked as ``_``.
``{:"$gen_cast", {:job, 17}}`` and ``{:"$gen_cast", {:job, 18}}`` share the shape
``{:"$gen_cast", {:job, _}}``."""

from __future__ import annotations

from typing import Any

from elixirscope.elixir_format import inspect
from elixirscope.errors import ETFDecodeError
from elixirscope.etf import Atom
from elixirscope.recording.results import payload_value

_DEPTH = 4
_WIDTH = 6


def shape(term: Any, depth: int = _DEPTH) -> str:
    """The term's shape as Elixir prints it, ``_`` for every masked value."""
    if isinstance(term, (Atom, bool)) or term is None:
        return inspect(term)
    if depth == 0:
        return "_"
    if isinstance(term, tuple):
        return "{" + ", ".join(_items(list(term), depth)) + "}"
    if isinstance(term, list):
        return "[" + ", ".join(_items(term, depth)) + "]" if term and all(
            isinstance(item, tuple) for item in term) else ("[]" if not term else "[_]")
    if isinstance(term, dict):
        keys = sorted((k for k in term if isinstance(k, Atom)), key=str)[:_WIDTH]
        inner = ", ".join(f"{key!s}: {shape(term[key], depth - 1)}" for key in keys)
        return "%{" + inner + (", …" if len(term) > len(keys) else "") + "}"
    return "_"


def payload_shape(payload: bytes) -> str:
    """The shape of a raw ETF payload (``_`` when it cannot be decoded)."""
    try:
        return shape(payload_value(payload))
    except ETFDecodeError:
        return "_"


def _items(items: list[Any], depth: int) -> list[str]:
    shown = [shape(item, depth - 1) for item in items[:_WIDTH]]
    return shown + (["…"] if len(items) > _WIDTH else [])
