"""The Erlang External Term Format: ``encode(term) -> bytes`` and ``decode(bytes) -> term``."""

from elixirscope.errors import ETFDecodeError, ETFEncodeError
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

__all__ = [
    "Atom",
    "BitString",
    "ETFDecodeError",
    "ETFEncodeError",
    "Export",
    "Fun",
    "ImproperList",
    "PairMap",
    "Pid",
    "Port",
    "Reference",
    "Term",
]
