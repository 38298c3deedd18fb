"""Erlang's standard term order as a Python sort key.

``number < atom < reference < fun < port < pid < tuple < map < nil < list < bitstring``

Integers and floats compare by value (``1 == 1.0``) except in *exact* order, the one
the VM uses for map keys, where every integer sorts before every float. Map keys, and
everything inside them, always compare exactly; that order decides how the VM lays out
a map of up to 32 keys, so the encoder sorts keys with ``term_order_key(k, exact=True)``.

The identifier orders were measured on OTP 25: pids by serial, number, node name,
creation; ports by node name, creation, number; references by node name, creation,
word count, then words from the last one; local funs before external ``fun M:F/A``.
"""

from __future__ import annotations

import functools
from typing import Any

from elixirscope.etf.terms import (
    Atom,
    BitString,
    Export,
    Fun,
    ImproperList,
    PairMap,
    Pid,
    Port,
    Reference,
    Term,
)

_NUMBER, _ATOM, _REFERENCE, _FUN, _PORT, _PID, _TUPLE, _MAP, _NIL, _LIST, _BITSTRING = range(11)

Key = tuple[Any, ...]


class _Bits:
    """Orders a bitstring that does not end on a byte boundary against bytes and other
    bitstrings: bit by bit, and a proper prefix first."""

    __slots__ = ("bits", "data")

    def __init__(self, data: bytes, bits: int) -> None:
        self.data = data
        self.bits = bits

    def _compare(self, other: object) -> int:
        if isinstance(other, bytes):
            data, bits = other, len(other) * 8
        elif isinstance(other, _Bits):
            data, bits = other.data, other.bits
        else:
            raise TypeError(f"cannot order a bitstring against {type(other).__name__}")
        common = min(self.bits, bits)
        whole, rest = divmod(common, 8)
        if self.data[:whole] != data[:whole]:
            return -1 if self.data[:whole] < data[:whole] else 1
        if rest:
            mine, theirs = self.data[whole] >> (8 - rest), data[whole] >> (8 - rest)
            if mine != theirs:
                return -1 if mine < theirs else 1
        return (self.bits > bits) - (self.bits < bits)

    def __eq__(self, other: object) -> bool:
        return self._compare(other) == 0

    def __lt__(self, other: object) -> bool:
        return self._compare(other) < 0

    def __le__(self, other: object) -> bool:
        return self._compare(other) <= 0

    def __gt__(self, other: object) -> bool:
        return self._compare(other) > 0

    def __ge__(self, other: object) -> bool:
        return self._compare(other) >= 0

    def __hash__(self) -> int:
        return hash((self.data, self.bits))


def term_order_key(term: Term, *, exact: bool = False) -> Key:
    """A key that sorts terms the way the VM does; equal keys mean ``==`` (``=:=`` if
    ``exact``). Raises ``TypeError`` for a value that is not a term."""
    t = type(term)
    if t is Atom:
        return (_ATOM, str(term))
    if t is int:
        return (_NUMBER, 0, term) if exact else (_NUMBER, term)
    if t is float:
        return (_NUMBER, 1, term) if exact else (_NUMBER, term)
    if t is bool:
        return (_ATOM, "true" if term else "false")
    if t is tuple:
        return (_TUPLE, len(term), tuple([term_order_key(item, exact=exact) for item in term]))
    if t is bytes:
        return (_BITSTRING, term)
    if t is str:
        return (_BITSTRING, term.encode("utf-8"))
    if t is list:
        return _list_key(term, (_NIL,), exact) if term else (_NIL,)
    if t is dict:
        return _map_key(list(term.items()), exact)
    if term is None:
        return (_ATOM, "nil")
    if t is Pid:
        return (_PID, term.serial, term.id, str(term.node), term.creation)
    if t is Reference:
        return (_REFERENCE, str(term.node), term.creation, len(term.ids), term.ids[::-1])
    if t is Port:
        return (_PORT, str(term.node), term.creation, term.id)
    if t is Fun:
        free = tuple([term_order_key(v, exact=exact) for v in term.free_vars])
        return (_FUN, 0, str(term.module), term.old_index, term.old_uniq, len(free), free)
    if t is Export:
        return (_FUN, 1, str(term.module), str(term.function), term.arity)
    if t is BitString:
        return (_BITSTRING, _Bits(term.data, term.bit_size))
    if t is ImproperList:
        return _list_key(term.items, term_order_key(term.tail, exact=exact), exact)
    if t is PairMap:
        return _map_key(term.pairs, exact)
    # Subclasses of the builtin types, in the same precedence as the encoder.
    if isinstance(term, bool):
        return term_order_key(bool(term), exact=exact)
    if isinstance(term, int):
        return term_order_key(int(term), exact=exact)
    if isinstance(term, float):
        return term_order_key(float(term), exact=exact)
    if isinstance(term, str):
        return term_order_key(str(term), exact=exact)
    if isinstance(term, (bytes, bytearray, memoryview)):
        return (_BITSTRING, bytes(term))
    if isinstance(term, tuple):
        return term_order_key(tuple(term), exact=exact)
    if isinstance(term, list):
        return term_order_key(list(term), exact=exact)
    if isinstance(term, dict):
        return _map_key(list(term.items()), exact)
    raise TypeError(f"a {t.__name__} is not an Erlang term")


def _list_key(items: list[Any], tail_key: Key, exact: bool) -> Key:
    # Lists compare cell by cell: a cell is (_LIST, head), and where one list ends its
    # tail meets the other's next cell, which orders [] and any non-list tail correctly.
    cells = [(_LIST, term_order_key(item, exact=exact)) for item in items]
    cells.append(tail_key)
    return (_LIST, tuple(cells))


def _map_key(pairs: list[tuple[Any, Any]], exact: bool) -> Key:
    keyed = sorted(((term_order_key(k, exact=True), v) for k, v in pairs), key=_first)
    keys = tuple([k for k, _ in keyed])
    values = tuple([term_order_key(v, exact=exact) for _, v in keyed])
    return (_MAP, len(keyed), keys, values)


def _first(pair: tuple[Key, Any]) -> Key:
    return pair[0]


def compare(a: Term, b: Term, *, exact: bool = False) -> int:
    """``-1``, ``0`` or ``1`` as ``a`` sorts before, with or after ``b`` in term order."""
    ka, kb = term_order_key(a, exact=exact), term_order_key(b, exact=exact)
    return (ka > kb) - (ka < kb)


def sort_terms(terms: list[Term], *, exact: bool = False) -> list[Term]:
    """``terms`` sorted like ``lists:sort/1`` (``exact``: like map keys)."""
    return sorted(terms, key=functools.partial(term_order_key, exact=exact))
