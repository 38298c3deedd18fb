"""The Erlang External Term Format: ``encode(term) -> bytes`` and ``decode(bytes) -> term``.

``decode_prefix`` reads one term off the front of a buffer (terms sent back to back),
``decode_body``/``encode_body`` work without the version byte, ``term_order_key`` sorts
like the VM. See :mod:`elixirscope.etf.terms` for how Erlang terms map to Python values.
"""

from elixirscope.errors import ETFDecodeError, ETFEncodeError
from elixirscope.etf.decoder import (
    DEFAULT_MAX_DECOMPRESSED,
    DEFAULT_MAX_DEPTH,
    decode,
    decode_body,
    decode_prefix,
)
from elixirscope.etf.encoder import encode, encode_body
from elixirscope.etf.order import compare, sort_terms, term_order_key
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
    "DEFAULT_MAX_DECOMPRESSED",
    "DEFAULT_MAX_DEPTH",
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
    "compare",
    "decode",
    "decode_body",
    "decode_prefix",
    "encode",
    "encode_body",
    "sort_terms",
    "term_order_key",
]
