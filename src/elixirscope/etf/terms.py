"""Python values for the Erlang terms that have no natural Python counterpart.

Mapping used throughout ElixirScope:

========================  =========================================
Erlang / Elixir           Python
========================  =========================================
integer                   ``int``
float                     ``float``
atom ``true``/``false``   ``bool``
any other atom            :class:`Atom` (a ``str`` subclass)
binary                    ``bytes``
bitstring                 :class:`BitString`
tuple                     ``tuple``
proper list               ``list``
improper list             :class:`ImproperList`
map                       ``dict`` (or :class:`PairMap`, see there)
pid / port / reference    :class:`Pid` / :class:`Port` / :class:`Reference`
``fun M:F/A``             :class:`Export`
closure                   :class:`Fun` (opaque, re-encodable)
========================  =========================================

``None`` encodes as the atom ``nil``; it never comes out of the decoder.

The identifier classes compare by value, hash, and are never equal to a plain
tuple, so they are safe as dict keys next to decoded tuples.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

_ATOMS: dict[str, Atom] = {}


class Atom(str):
    """An Erlang atom. ``Atom("ok")`` is ``:ok`` in Elixir, ``'Elixir.Enum'`` is ``Enum``."""

    __slots__ = ()

    def __new__(cls, name: str) -> Atom:
        if type(name) is Atom:
            return name
        atom = _ATOMS.get(name)
        if atom is None:
            atom = str.__new__(cls, name)
            if len(_ATOMS) < 1_000_000:
                _ATOMS[name] = atom
        return atom

    def __repr__(self) -> str:
        return f"Atom({str.__repr__(self)})"

    # An atom is never equal to a plain string of the same text: ``:ok != "ok"``.
    def __eq__(self, other: object) -> bool:
        if isinstance(other, Atom):
            return str.__eq__(self, other)
        return False

    def __ne__(self, other: object) -> bool:
        return not self.__eq__(other)

    # Same hash as the text (a C slot, so dict keys stay fast); equality keeps them apart.
    __hash__ = str.__hash__

    def __reduce__(self) -> tuple[Any, ...]:
        return (Atom, (str(self),))


class Pid:
    """A process identifier: ``#PID<0.123.0>`` on its own node."""

    __slots__ = ("creation", "id", "node", "serial")

    def __init__(self, node: Atom, id: int, serial: int, creation: int) -> None:
        self.node = node
        self.id = id
        self.serial = serial
        self.creation = creation

    def _key(self) -> tuple[str, int, int, int]:
        return (self.node, self.id, self.serial, self.creation)

    def __eq__(self, other: object) -> bool:
        return type(other) is Pid and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(("pid", *self._key()))

    def __repr__(self) -> str:
        return f"Pid({self.node!r}, {self.id}, {self.serial}, {self.creation})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Pid, self._key())


class Port:
    """A port identifier: ``#Port<0.6>`` on its own node."""

    __slots__ = ("creation", "id", "node")

    def __init__(self, node: Atom, id: int, creation: int) -> None:
        self.node = node
        self.id = id
        self.creation = creation

    def _key(self) -> tuple[str, int, int]:
        return (self.node, self.id, self.creation)

    def __eq__(self, other: object) -> bool:
        return type(other) is Port and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(("port", *self._key()))

    def __repr__(self) -> str:
        return f"Port({self.node!r}, {self.id}, {self.creation})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Port, self._key())


class Reference:
    """A reference: ``#Reference<0.1.2.3>``. ``ids`` holds 1 to 5 32-bit words."""

    __slots__ = ("creation", "ids", "node")

    def __init__(self, node: Atom, creation: int, ids: tuple[int, ...]) -> None:
        self.node = node
        self.creation = creation
        self.ids = tuple(ids)

    def _key(self) -> tuple[str, int, tuple[int, ...]]:
        return (self.node, self.creation, self.ids)

    def __eq__(self, other: object) -> bool:
        return type(other) is Reference and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(("ref", *self._key()))

    def __repr__(self) -> str:
        return f"Reference({self.node!r}, {self.creation}, {self.ids!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Reference, self._key())


class Export:
    """An external fun, ``&Mod.fun/2`` (``fun mod:fun/2`` in Erlang)."""

    __slots__ = ("arity", "function", "module")

    def __init__(self, module: Atom, function: Atom, arity: int) -> None:
        self.module = module
        self.function = function
        self.arity = arity

    def _key(self) -> tuple[str, str, int]:
        return (self.module, self.function, self.arity)

    def __eq__(self, other: object) -> bool:
        return type(other) is Export and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(("export", *self._key()))

    def __repr__(self) -> str:
        return f"Export({self.module!r}, {self.function!r}, {self.arity})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (Export, self._key())


class Fun:
    """A closure (NEW_FUN_EXT). Kept opaque: ``raw`` holds the exact encoded bytes
    (tag included) so the fun is re-encoded byte for byte; the parsed fields are for
    display only."""

    __slots__ = ("arity", "free_vars", "index", "module", "old_index", "old_uniq", "pid",
                 "raw", "uniq")

    def __init__(
        self,
        *,
        raw: bytes,
        module: Atom,
        arity: int,
        uniq: bytes,
        index: int,
        old_index: int,
        old_uniq: int,
        pid: Pid | None,
        free_vars: tuple[Any, ...],
    ) -> None:
        self.raw = raw
        self.module = module
        self.arity = arity
        self.uniq = uniq
        self.index = index
        self.old_index = old_index
        self.old_uniq = old_uniq
        self.pid = pid
        self.free_vars = free_vars

    def __eq__(self, other: object) -> bool:
        return type(other) is Fun and self.raw == other.raw

    def __hash__(self) -> int:
        return hash(("fun", self.raw))

    def __repr__(self) -> str:
        return f"Fun(module={self.module!r}, arity={self.arity}, index={self.index})"


class BitString:
    """A bitstring whose length is not a multiple of 8.

    ``data`` holds the bytes; only the high ``bits`` bits (1..8) of the last byte belong
    to the value, the rest are zero."""

    __slots__ = ("bits", "data")

    def __init__(self, data: bytes, bits: int) -> None:
        if not 1 <= bits <= 8:
            raise ValueError("bits in the last byte must be between 1 and 8")
        if not data:
            raise ValueError("a bitstring with bits in its last byte needs at least one byte")
        mask = (0xFF << (8 - bits)) & 0xFF
        if data[-1] & ~mask & 0xFF:
            data = data[:-1] + bytes([data[-1] & mask])
        self.data = bytes(data)
        self.bits = bits

    @property
    def bit_size(self) -> int:
        return (len(self.data) - 1) * 8 + self.bits

    def __eq__(self, other: object) -> bool:
        return type(other) is BitString and (self.data, self.bits) == (other.data, other.bits)

    def __hash__(self) -> int:
        return hash(("bits", self.data, self.bits))

    def __repr__(self) -> str:
        return f"BitString({self.data!r}, {self.bits})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (BitString, (self.data, self.bits))


class ImproperList:
    """A list whose tail is not ``[]``: ``[1, 2 | :tail]``. ``items`` is never empty."""

    __slots__ = ("items", "tail")

    def __init__(self, items: Iterable[Any], tail: Any) -> None:
        self.items = list(items)
        self.tail = tail
        if not self.items:
            raise ValueError("an improper list has at least one element before its tail")
        if isinstance(tail, list):
            raise ValueError("a list tail makes a proper list; join the lists instead")

    def __eq__(self, other: object) -> bool:
        return (type(other) is ImproperList and self.items == other.items
                and self.tail == other.tail)

    def __hash__(self) -> int:
        raise TypeError("unhashable type: 'ImproperList'")

    def __repr__(self) -> str:
        return f"ImproperList({self.items!r}, {self.tail!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (ImproperList, (self.items, self.tail))


class PairMap:
    """A map whose keys Python would merge although Erlang keeps them apart
    (``1``, ``1.0`` and ``true`` are one dict key in Python, three map keys in Erlang).

    The decoder returns a plain ``dict`` whenever it is faithful and a ``PairMap``
    otherwise, so no decoded entry is ever lost. ``pairs`` keeps the wire order."""

    __slots__ = ("pairs",)

    def __init__(self, pairs: Iterable[tuple[Any, Any]]) -> None:
        self.pairs = list(pairs)

    def __eq__(self, other: object) -> bool:
        return type(other) is PairMap and self.pairs == other.pairs

    def __hash__(self) -> int:
        raise TypeError("unhashable type: 'PairMap'")

    def __len__(self) -> int:
        return len(self.pairs)

    def __repr__(self) -> str:
        return f"PairMap({self.pairs!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (PairMap, (self.pairs,))


Term = Any
"""Any value the codec accepts or produces (see the table above)."""
