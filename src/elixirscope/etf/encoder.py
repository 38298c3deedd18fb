"""Python terms to bytes in the External Term Format.

The output is byte-identical to ``term_to_binary(T, [{minor_version, 2}])`` (the default
from OTP 26 on, and the atom encoding of the distribution protocol) wherever the VM's
own output is determined by the term: atoms are UTF-8, lists of bytes are STRING_EXT,
integers use the smallest form, and maps of up to 32 keys list their keys in exact term
order. Larger maps come out in term order too; the VM writes them in its internal hash
order, which cannot be reproduced here, and reads either order back to the same map.
"""

from __future__ import annotations

import math
import struct
import zlib
from typing import Any

from elixirscope.errors import ETFEncodeError
from elixirscope.etf import tags
from elixirscope.etf.order import term_order_key
from elixirscope.etf.tags import MAX_ATOM_CHARS, MAX_BIG_BYTES, MAX_REFERENCE_WORDS
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

_MAX_STRING = 0xFFFF
_DEFAULT_LEVEL = 6

_TAG_I32 = struct.Struct(">Bi").pack
_TAG_F64 = struct.Struct(">Bd").pack
_TAG_U32 = struct.Struct(">BI").pack
_TAG_U16 = struct.Struct(">BH").pack

_TRUE = bytes([tags.SMALL_ATOM_UTF8, 4]) + b"true"
_FALSE = bytes([tags.SMALL_ATOM_UTF8, 5]) + b"false"
_NIL_ATOM = bytes([tags.SMALL_ATOM_UTF8, 3]) + b"nil"
_NIL = bytes([tags.NIL])
_ATOMS: dict[str, bytes] = {}
_ATOM_CACHE_LIMIT = 65_536


def encode(term: Term, *, compressed: bool | int = False) -> bytes:
    """``term_to_binary(term)``; ``compressed`` is ``True`` (zlib level 6) or a level 1-9.

    Like the VM, the term stays uncompressed when compressing would make it longer.
    """
    body = encode_body(term)
    if compressed is False or compressed == 0:
        return b"\x83" + body
    level = _DEFAULT_LEVEL if compressed is True else compressed
    if type(level) is not int or not 1 <= level <= 9:
        raise ValueError(f"compressed must be a bool or a zlib level 1-9, got {compressed!r}")
    packed = zlib.compress(body, level)
    if len(packed) + 5 > len(body):
        return b"\x83" + body
    return b"\x83" + _TAG_U32(tags.COMPRESSED, len(body)) + packed


def encode_body(term: Term) -> bytes:
    """The encoding of ``term`` without the version byte."""
    out = bytearray()
    try:
        _encode(term, out)
    except RecursionError:
        raise ETFEncodeError("term is nested too deeply to encode") from None
    return bytes(out)


def _encode(term: Any, out: bytearray) -> None:
    t = type(term)
    if t is Atom:
        out += _ATOMS.get(term) or _atom(term)
    elif t is tuple:
        n = len(term)
        out += bytes((tags.SMALL_TUPLE, n)) if n < 256 else _TAG_U32(tags.LARGE_TUPLE, n)
        for item in term:
            _encode(item, out)
    elif t is int:
        _integer(term, out)
    elif t is bool:
        out += _TRUE if term else _FALSE
    elif t is list:
        _list(term, out)
    elif t is bytes:
        out += _TAG_U32(tags.BINARY, len(term))
        out += term
    elif t is str:
        try:
            data = term.encode("utf-8")
        except UnicodeEncodeError:
            raise ETFEncodeError("a str with lone surrogates is not valid UTF-8") from None
        out += _TAG_U32(tags.BINARY, len(data))
        out += data
    elif t is dict:
        _map(list(term.items()), out)
    elif t is float:
        if not math.isfinite(term):
            raise ETFEncodeError(f"the VM has no float {term!r}")
        out += _TAG_F64(tags.NEW_FLOAT, term)
    elif term is None:
        out += _NIL_ATOM
    elif t is Pid:
        out.append(tags.NEW_PID)
        _node(term.node, out)
        out += _fields(">III", term, term.id, term.serial, term.creation)
    elif t is Reference:
        ids = term.ids
        if not 1 <= len(ids) <= MAX_REFERENCE_WORDS:
            raise ETFEncodeError(f"a reference has 1 to {MAX_REFERENCE_WORDS} id words, "
                                 f"not {len(ids)}")
        out += _TAG_U16(tags.NEWER_REFERENCE, len(ids))
        _node(term.node, out)
        out += _fields(f">{len(ids) + 1}I", term, term.creation, *ids)
    elif t is Port:
        # NEW_PORT_EXT carries 28 significant bits of port number; the VM writes
        # anything larger as V4_PORT_EXT.
        if 0 <= term.id < 1 << 28:
            out.append(tags.NEW_PORT)
            _node(term.node, out)
            out += _fields(">II", term, term.id, term.creation)
        else:
            out.append(tags.V4_PORT)
            _node(term.node, out)
            out += _fields(">QI", term, term.id, term.creation)
    elif t is ImproperList:
        items, tail = term.items, term.tail
        while type(tail) is ImproperList:  # [1 | [2 | t]] is the list [1, 2 | t]
            items, tail = items + tail.items, tail.tail
        out += _TAG_U32(tags.LIST, len(items))
        for item in items:
            _encode(item, out)
        _encode(tail, out)
    elif t is PairMap:
        _map(term.pairs, out)
    elif t is BitString:
        if term.bits == 8:  # whole bytes: a binary, which the VM never writes as bits
            _encode(term.data, out)
        else:
            out += _TAG_U32(tags.BIT_BINARY, len(term.data))
            out.append(term.bits)
            out += term.data
    elif t is Export:
        if not 0 <= term.arity <= 255:
            raise ETFEncodeError(f"an export's arity is 0 to 255, not {term.arity}")
        out.append(tags.EXPORT)
        _node(term.module, out)
        _node(term.function, out)
        out += bytes((tags.SMALL_INTEGER, term.arity))
    elif t is Fun:
        out += term.raw
    else:
        _subclass(term, out)


def _subclass(term: Any, out: bytearray) -> None:
    """Subclasses of the builtin types and the other buffer types."""
    if isinstance(term, bool):
        _encode(bool(term), out)
    elif isinstance(term, int):
        _encode(int(term), out)
    elif isinstance(term, float):
        _encode(float(term), out)
    elif isinstance(term, str):
        _encode(str(term), out)
    elif isinstance(term, (bytes, bytearray, memoryview)):
        _encode(bytes(term), out)
    elif isinstance(term, tuple):
        _encode(tuple(term), out)
    elif isinstance(term, list):
        _encode(list(term), out)
    elif isinstance(term, dict):
        _map(list(term.items()), out)
    else:
        raise ETFEncodeError(f"cannot encode a value of type {type(term).__name__}: it has "
                             "no Erlang term form")


def _atom(name: str) -> bytes:
    if len(name) > MAX_ATOM_CHARS:
        raise ETFEncodeError(f"an atom has at most {MAX_ATOM_CHARS} characters, "
                             f"not {len(name)}")
    try:
        data = name.encode("utf-8")
    except UnicodeEncodeError:
        raise ETFEncodeError("an atom with lone surrogates is not valid UTF-8") from None
    n = len(data)
    encoded = (bytes((tags.SMALL_ATOM_UTF8, n)) if n < 256
               else _TAG_U16(tags.ATOM_UTF8, n)) + data
    if len(_ATOMS) < _ATOM_CACHE_LIMIT:
        _ATOMS[name] = encoded
    return encoded


def _node(name: Any, out: bytearray) -> None:
    if not isinstance(name, str):
        raise ETFEncodeError(f"a node, module or function name is an atom, not "
                             f"{type(name).__name__}")
    out += _ATOMS.get(name) or _atom(name)


def _fields(layout: str, term: Any, *values: int) -> bytes:
    try:
        return struct.pack(layout, *values)
    except struct.error:
        raise ETFEncodeError(
            f"a {type(term).__name__} field is outside its encoded range") from None


def _integer(value: int, out: bytearray) -> None:
    if 0 <= value <= 255:
        out += bytes((tags.SMALL_INTEGER, value))
    elif -0x80000000 <= value <= 0x7FFFFFFF:
        out += _TAG_I32(tags.INTEGER, value)
    else:
        magnitude = -value if value < 0 else value
        n = (magnitude.bit_length() + 7) // 8
        if n > MAX_BIG_BYTES:
            raise ETFEncodeError(f"an integer of {n} bytes is larger than the VM allows "
                                 f"({MAX_BIG_BYTES} bytes)")
        out += bytes((tags.SMALL_BIG, n)) if n < 256 else _TAG_U32(tags.LARGE_BIG, n)
        out.append(1 if value < 0 else 0)
        out += magnitude.to_bytes(n, "little")


def _list(items: list[Any], out: bytearray) -> None:
    n = len(items)
    if not n:
        out.append(tags.NIL)
        return
    if n <= _MAX_STRING and all(type(x) is int and 0 <= x <= 255 for x in items):
        out += _TAG_U16(tags.STRING, n)
        out += bytes(items)
        return
    out += _TAG_U32(tags.LIST, n)
    for item in items:
        _encode(item, out)
    out += _NIL


def _map(pairs: list[tuple[Any, Any]], out: bytearray) -> None:
    out += _TAG_U32(tags.MAP, len(pairs))
    if len(pairs) > 1:
        try:
            pairs = sorted(pairs, key=_exact_key)
        except TypeError as exc:
            raise ETFEncodeError(f"cannot encode a map key: {exc}") from None
    for key, value in pairs:
        _encode(key, out)
        _encode(value, out)


def _exact_key(pair: tuple[Any, Any]) -> Any:
    return term_order_key(pair[0], exact=True)
