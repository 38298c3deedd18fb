"""Bytes in the External Term Format to Python terms.

The decoder is one loop over an explicit stack instead of a recursive function: deep
input cannot exhaust the Python stack, the depth limit is a length check, and the hot
path (atoms, small tuples and integers, binaries, lists, pids) runs without a Python
call per term. Every declared count is checked against the bytes that are left before
anything is built from it (each element needs at least one byte), so memory stays
proportional to the input.
"""

from __future__ import annotations

import itertools
import struct
import zlib
from typing import Any

from elixirscope.errors import ETFDecodeError
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

DEFAULT_MAX_DEPTH = 512
DEFAULT_MAX_DECOMPRESSED = 64 * 1024 * 1024

# The caches stop growing here, so hostile input cannot fill memory through them.
_CACHE_LIMIT = 32_768

_U16 = struct.Struct(">H").unpack_from
_U32 = struct.Struct(">I").unpack_from
_I32 = struct.Struct(">i").unpack_from
_F64 = struct.Struct(">d").unpack_from
_PID = struct.Struct(">III").unpack_from
_PORT = struct.Struct(">II").unpack_from
_V4_PORT = struct.Struct(">QI").unpack_from
_OLD_PID = struct.Struct(">IIB").unpack_from
_OLD_PORT = struct.Struct(">IB").unpack_from
_FUN_HEAD = struct.Struct(">IB16sII").unpack_from

# Encoded atom (tag and length included) -> Atom or bool.
_ATOMS: dict[bytes, Any] = {}
# Encoded NEW_PID_EXT (tag included) -> Pid; trace events repeat a handful of pids.
_PIDS: dict[bytes, Pid] = {}

# Kinds of the open containers on the decoder's stack.
_TOP = 0
_TUPLE = 1
_LIST = 2
_MAP = 3


class DecodeError(ETFDecodeError):
    """An :class:`ETFDecodeError` that also keeps its reason apart from the offset."""

    def __init__(self, reason: str, offset: int) -> None:
        super().__init__(reason, offset)
        self.reason = reason


def decode(
    data: bytes | bytearray | memoryview,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
) -> Term:
    """Decode exactly one versioned term (``131`` first); every byte must belong to it."""
    buf = data if type(data) is bytes else _as_bytes(data)
    if len(buf) > 1 and buf[0] == tags.VERSION and buf[1] != tags.COMPRESSED:
        try:
            term, end = _decode(buf, 1, max_depth, 0)
        except RecursionError:
            raise _nested_funs(1) from None
    else:
        term, end = decode_prefix(buf, 0, max_depth=max_depth,
                                  max_decompressed=max_decompressed)
    if end != len(buf):
        raise DecodeError(f"{len(buf) - end} unexpected bytes after the term", end)
    return term


def decode_prefix(
    data: bytes | bytearray | memoryview,
    offset: int = 0,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_decompressed: int = DEFAULT_MAX_DECOMPRESSED,
) -> tuple[Term, int]:
    """Decode one versioned term starting at ``offset``; return it and the offset after it."""
    buf = _as_bytes(data)
    _check_offset(buf, offset)
    if buf[offset] != tags.VERSION:
        raise DecodeError(
            f"expected the version byte {tags.VERSION}, found {buf[offset]}", offset)
    pos = offset + 1
    try:
        if pos < len(buf) and buf[pos] == tags.COMPRESSED:
            return _decompress(buf, pos, max_depth, max_decompressed)
        return _decode(buf, pos, max_depth, 0)
    except RecursionError:
        raise _nested_funs(pos) from None


def decode_body(
    data: bytes | bytearray | memoryview,
    offset: int = 0,
    *,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> tuple[Term, int]:
    """Decode one term without the version byte at ``offset``; return it and the end offset."""
    buf = _as_bytes(data)
    _check_offset(buf, offset)
    try:
        return _decode(buf, offset, max_depth, 0)
    except RecursionError:
        raise _nested_funs(offset) from None


def _as_bytes(data: bytes | bytearray | memoryview) -> bytes:
    if type(data) is bytes:
        return data
    if isinstance(data, (bytes, bytearray, memoryview)):
        return bytes(data)
    raise TypeError(f"can only decode bytes, bytearray or memoryview, not {type(data).__name__}")


def _check_offset(data: bytes, offset: int) -> None:
    if offset < 0:
        raise ValueError(f"offset must not be negative, got {offset}")
    if offset >= len(data):
        raise DecodeError("no term: the data ends here", offset)


def _decompress(data: bytes, pos: int, max_depth: int, limit: int) -> tuple[Term, int]:
    """COMPRESSED_EXT at ``pos``: u32 size, then a zlib stream of exactly that many bytes."""
    if pos + 5 > len(data):
        raise DecodeError("data ends inside the COMPRESSED_EXT (80) header", pos)
    (size,) = _U32(data, pos + 1)
    if size == 0:
        raise DecodeError("compressed term declares 0 bytes", pos)
    if size > limit:
        raise DecodeError(
            f"compressed term declares {size} bytes, more than the limit of {limit}", pos)
    inflater = zlib.decompressobj()
    try:
        body = inflater.decompress(memoryview(data)[pos + 5:], size)
        # Once the declared size is out only the stream's trailer may remain; anything
        # it still yields is too much.
        if (len(body) == size and not inflater.eof
                and inflater.decompress(inflater.unconsumed_tail, 1)):
            raise DecodeError(f"compressed term holds more than its declared {size} bytes", pos)
    except zlib.error as exc:
        raise DecodeError(f"invalid zlib data in the compressed term ({exc})", pos) from None
    if not inflater.eof:
        raise DecodeError("compressed term is truncated", pos)
    if len(body) != size:
        raise DecodeError(
            f"compressed term declares {size} bytes but holds {len(body)}", pos)
    end = len(data) - len(inflater.unused_data)
    try:
        term, used = _decode(body, 0, max_depth, 0)
    except DecodeError as exc:
        raise DecodeError(
            f"{exc.reason} (at byte {exc.offset} of the decompressed data)", pos) from None
    if used != size:
        raise DecodeError(
            f"{size - used} unexpected bytes after the term in the decompressed data", pos)
    return term, end


def _decode(data: bytes, pos: int, max_depth: int, depth: int) -> tuple[Term, int]:
    """The term at ``pos`` and the offset after it; ``depth`` containers already enclose it."""
    size = len(data)
    atoms = _ATOMS
    pids = _PIDS
    u32 = _U32
    budget = max_depth - depth
    # The open container: its kind, the items decoded so far, and how many are still
    # missing. Containers further out wait on ``stack``.
    kind = _TOP
    items: list[Any] = []
    left = 1
    stack: list[tuple[int, list[Any], int]] = []
    tag = -1
    term: Any
    try:
        while True:
            tag = data[pos]
            if tag == 119:  # SMALL_ATOM_UTF8_EXT
                n = pos + 2 + data[pos + 1]
                # The key holds the tag and length, so a short slice never matches.
                term = atoms.get(data[pos:n])
                if term is None:
                    term = _new_atom(data, pos, n)
                pos = n
            elif tag == 100:  # ATOM_EXT
                n = pos + 3 + ((data[pos + 1] << 8) | data[pos + 2])
                term = atoms.get(data[pos:n])
                if term is None:
                    term = _new_atom(data, pos, n)
                pos = n
            elif tag == 104:  # SMALL_TUPLE_EXT
                n = data[pos + 1]
                pos += 2
                if n:
                    if n > size - pos:
                        raise _too_many(tag, n, pos - 2)
                    if len(stack) >= budget:
                        raise _too_deep(max_depth, pos - 2)
                    stack.append((kind, items, left))
                    kind = _TUPLE
                    items = []
                    left = n
                    continue
                term = ()
            elif tag == 98:  # INTEGER_EXT
                term = _I32(data, pos + 1)[0]
                pos += 5
            elif tag == 97:  # SMALL_INTEGER_EXT
                term = data[pos + 1]
                pos += 2
            elif tag == 116:  # MAP_EXT: n key/value pairs
                n = u32(data, pos + 1)[0] * 2
                pos += 5
                if n:
                    if n > size - pos:
                        raise _too_many(tag, n // 2, pos - 5)
                    if len(stack) >= budget:
                        raise _too_deep(max_depth, pos - 5)
                    stack.append((kind, items, left))
                    kind = _MAP
                    items = []
                    left = n
                    continue
                term = {}
            elif tag == 108:  # LIST_EXT: n elements, then the tail
                n = u32(data, pos + 1)[0] + 1
                pos += 5
                if n > size - pos:
                    raise _too_many(tag, n - 1, pos - 5)
                if len(stack) >= budget:
                    raise _too_deep(max_depth, pos - 5)
                stack.append((kind, items, left))
                kind = _LIST
                items = []
                left = n
                continue
            elif tag == 106:  # NIL_EXT
                term = []
                pos += 1
            elif tag == 88:  # NEW_PID_EXT
                n = data[pos + 1]
                if n in {119, 115}:
                    n = pos + 15 + data[pos + 2]
                else:
                    n = pos + 16 + ((data[pos + 2] << 8) | data[pos + 3])
                term = pids.get(data[pos:n])
                if term is None:
                    term = _new_pid(data, pos, n)
                pos = n
            elif tag == 109:  # BINARY_EXT
                n = pos + 5 + u32(data, pos + 1)[0]
                if n > size:
                    raise _truncated(tag, pos)
                term = data[pos + 5:n]
                pos = n
            elif tag == 107:  # STRING_EXT: bytes that mean a list of small integers
                n = pos + 3 + ((data[pos + 1] << 8) | data[pos + 2])
                if n > size:
                    raise _truncated(tag, pos)
                term = list(data[pos + 3:n])
                pos = n
            elif tag == 70:  # NEW_FLOAT_EXT
                term = _F64(data, pos + 1)[0]
                if term - term != 0.0:
                    raise DecodeError("NEW_FLOAT_EXT (70) is not a finite number", pos)
                pos += 9
            elif tag == 105:  # LARGE_TUPLE_EXT
                n = u32(data, pos + 1)[0]
                pos += 5
                if n:
                    if n > size - pos:
                        raise _too_many(tag, n, pos - 5)
                    if len(stack) >= budget:
                        raise _too_deep(max_depth, pos - 5)
                    stack.append((kind, items, left))
                    kind = _TUPLE
                    items = []
                    left = n
                    continue
                term = ()
            elif tag == 112:  # NEW_FUN_EXT decodes its parts itself
                if len(stack) >= budget:
                    raise _too_deep(max_depth, pos)
                term, pos = _fun(data, pos, max_depth, depth + len(stack) + 1)
            else:
                term, pos = _scalar(data, tag, pos)

            # ``term`` is complete: add it to its container and close every container
            # that this completes.
            items.append(term)
            left -= 1
            while not left:
                if kind == _TUPLE:
                    term = tuple(items)
                elif kind == _MAP:
                    try:
                        term = dict(zip(items[::2], items[1::2], strict=True))
                    except TypeError:
                        term = None  # an unhashable key: a list, a map, ...
                    if term is None or len(term) * 2 != len(items):
                        term = _odd_map(items, pos)
                elif kind == _LIST:
                    term = items.pop()
                    if type(term) is list:
                        # NIL_EXT, or a LIST_EXT tail that the VM never writes: [1 | [2]].
                        if term:
                            items += term
                        term = items
                    else:
                        term = _improper_list(items, term)
                else:
                    return items[0], pos
                kind, items, left = stack.pop()
                items.append(term)
                left -= 1
    except (IndexError, struct.error):
        if pos >= size:
            raise DecodeError("data ends where a term should start", pos) from None
        raise _truncated(tag, pos) from None


def _improper_list(items: list[Any], tail: Any) -> Any:
    if not items:
        return tail
    if type(tail) is ImproperList:
        return ImproperList(items + tail.items, tail.tail)
    return ImproperList(items, tail)


def _odd_map(items: list[Any], pos: int) -> PairMap:
    """A map Python's dict cannot hold: keys it merges (1, 1.0, True) or cannot hash.
    Real duplicates are still an error, as in the VM."""
    keys = items[::2]
    ordered = sorted(term_order_key(key, exact=True) for key in keys)
    if any(a == b for a, b in itertools.pairwise(ordered)):
        raise DecodeError("MAP_EXT (116) ending here has a duplicate key", pos)
    return PairMap(zip(keys, items[1::2], strict=True))


def _scalar(data: bytes, tag: int, pos: int) -> tuple[Term, int]:
    """The tags the hot loop leaves out; each is a single term without children."""
    size = len(data)
    if tag in {115, 118}:  # SMALL_ATOM_EXT / ATOM_UTF8_EXT
        return _atom(data, pos)
    if tag in {110, 111}:  # SMALL_BIG_EXT / LARGE_BIG_EXT
        if tag == 110:
            n, head = data[pos + 1], pos + 2
        else:
            n, head = _U32(data, pos + 1)[0], pos + 5
        end = head + 1 + n
        if n > MAX_BIG_BYTES:
            raise DecodeError(f"integer of {n} bytes is larger than the VM allows", pos)
        if end > size:
            raise _truncated(tag, pos)
        value = int.from_bytes(data[head + 1:end], "little")
        return (-value if data[head] else value), end
    if tag == 77:  # BIT_BINARY_EXT
        n = _U32(data, pos + 1)[0]
        bits = data[pos + 5]
        end = pos + 6 + n
        if end > size:
            raise _truncated(tag, pos)
        if n == 0 and bits == 0:
            return b"", end
        if n == 0 or not 1 <= bits <= 8:
            raise DecodeError(f"BIT_BINARY_EXT (77) of {n} bytes cannot have {bits} bits "
                              "in its last byte", pos)
        if bits == 8:
            return data[pos + 6:end], end
        return BitString(data[pos + 6:end], bits), end
    if tag in {90, 114}:  # NEWER_REFERENCE_EXT / NEW_REFERENCE_EXT
        words = _U16(data, pos + 1)[0]
        if not 1 <= words <= MAX_REFERENCE_WORDS:
            raise DecodeError(f"{tags.name(tag)} with {words} id words (1 to "
                              f"{MAX_REFERENCE_WORDS} allowed)", pos)
        node, p = _node(data, pos + 3)
        if tag == 90:
            creation, p = _U32(data, p)[0], p + 4
        else:
            creation, p = data[p], p + 1
        end = p + 4 * words
        if end > size:
            raise _truncated(tag, pos)
        ids = struct.unpack_from(f">{words}I", data, p)
        return Reference(node, creation, ids), end
    if tag == 101:  # REFERENCE_EXT
        node, p = _node(data, pos + 1)
        ident, creation = _OLD_PORT(data, p)
        return Reference(node, creation, (ident,)), p + 5
    if tag == 89:  # NEW_PORT_EXT
        node, p = _node(data, pos + 1)
        ident, creation = _PORT(data, p)
        return Port(node, ident, creation), p + 8
    if tag == 120:  # V4_PORT_EXT
        node, p = _node(data, pos + 1)
        ident, creation = _V4_PORT(data, p)
        return Port(node, ident, creation), p + 12
    if tag == 102:  # PORT_EXT
        node, p = _node(data, pos + 1)
        ident, creation = _OLD_PORT(data, p)
        return Port(node, ident, creation), p + 5
    if tag == 103:  # PID_EXT
        node, p = _node(data, pos + 1)
        ident, serial, creation = _OLD_PID(data, p)
        return Pid(node, ident, serial, creation), p + 9
    if tag == 113:  # EXPORT_EXT
        module, p = _node(data, pos + 1)
        function, p = _node(data, p)
        if data[p] != tags.SMALL_INTEGER:
            raise DecodeError("EXPORT_EXT (113) arity must be a SMALL_INTEGER_EXT", p)
        return Export(module, function, data[p + 1]), p + 2
    if tag == 99:  # FLOAT_EXT: 31 bytes of "%.20e" text padded with zero bytes
        end = pos + 32
        if end > size:
            raise _truncated(tag, pos)
        text = data[pos + 1:end].split(b"\0", 1)[0]
        try:
            number = float(text.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise DecodeError("FLOAT_EXT (99) does not hold a number", pos) from None
        if number - number != 0.0:
            raise DecodeError("FLOAT_EXT (99) is not a finite number", pos)
        return number, end
    if tag == tags.COMPRESSED:
        raise DecodeError("COMPRESSED_EXT (80) may only follow the version byte", pos)
    if tag == tags.ATOM_CACHE_REF:
        raise DecodeError("ATOM_CACHE_REF (82) is only meaningful inside a distribution "
                          "message with its atom cache header", pos)
    if tag == tags.LOCAL:
        raise DecodeError("LOCAL_EXT (121) is node-local and cannot be decoded off the node "
                          "that encoded it", pos)
    if tag == tags.VERSION:
        raise DecodeError("a version byte (131) inside a term", pos)
    raise DecodeError(f"{tags.name(tag)} is not supported", pos)


def _fun(data: bytes, pos: int, max_depth: int, depth: int) -> tuple[Fun, int]:
    """NEW_FUN_EXT: kept as raw bytes; the parts are decoded for display."""
    total, arity, uniq, index, free_count = _FUN_HEAD(data, pos + 1)
    end = pos + 1 + total
    if total < 29 or end > len(data):
        raise DecodeError(f"NEW_FUN_EXT (112) declares {total} bytes, which do not fit", pos)
    if free_count > end - pos:
        raise _too_many(tags.NEW_FUN, free_count, pos)
    module, p = _node(data, pos + 30)
    old_index, p = _decode(data, p, max_depth, depth)
    old_uniq, p = _decode(data, p, max_depth, depth)
    pid, p = _decode(data, p, max_depth, depth)
    if type(old_index) is not int or type(old_uniq) is not int or type(pid) is not Pid:
        raise DecodeError("NEW_FUN_EXT (112) has a malformed index, uniq or pid", pos)
    free: list[Term] = []
    for _ in range(free_count):
        value, p = _decode(data, p, max_depth, depth)
        free.append(value)
    if p != end:
        raise DecodeError(f"NEW_FUN_EXT (112) declares {total} bytes but its parts take "
                          f"{p - pos - 1}", pos)
    fun = Fun(raw=data[pos:end], module=module, arity=arity, uniq=uniq, index=index,
              old_index=old_index, old_uniq=old_uniq, pid=pid, free_vars=tuple(free))
    return fun, end


def _atom_end(data: bytes, pos: int) -> int:
    """The offset after the atom whose tag is at ``pos``."""
    tag = data[pos]
    if tag in {119, 115}:
        return pos + 2 + data[pos + 1]
    if tag in {118, 100}:
        return pos + 3 + ((data[pos + 1] << 8) | data[pos + 2])
    raise DecodeError(f"expected an atom, found {tags.name(tag)}", pos)


def _atom(data: bytes, pos: int) -> tuple[Any, int]:
    """The atom at ``pos`` (``True``/``False`` for true and false) and the offset after it."""
    end = _atom_end(data, pos)
    term = _ATOMS.get(data[pos:end])
    if term is None:
        term = _new_atom(data, pos, end)
    return term, end


def _node(data: bytes, pos: int) -> tuple[Atom, int]:
    """An atom that names a node, module or function: never a bool."""
    term, end = _atom(data, pos)
    if type(term) is not Atom:
        term = Atom("true" if term else "false")
    return term, end


def _new_atom(data: bytes, pos: int, end: int) -> Any:
    tag = data[pos]
    if end > len(data):
        raise _truncated(tag, pos)
    raw = data[pos:end]
    name = raw[2:] if tag in {119, 115} else raw[3:]
    try:
        text = name.decode("utf-8") if tag in {119, 118} else name.decode("latin-1")
    except UnicodeDecodeError:
        raise DecodeError(f"{tags.name(tag)} is not valid UTF-8", pos) from None
    if len(text) > MAX_ATOM_CHARS:
        raise DecodeError(f"atom of {len(text)} characters (at most {MAX_ATOM_CHARS})", pos)
    term = True if text == "true" else False if text == "false" else Atom(text)
    if len(_ATOMS) < _CACHE_LIMIT:
        _ATOMS[raw] = term
    return term


def _new_pid(data: bytes, pos: int, end: int) -> Pid:
    node, fields = _node(data, pos + 1)
    if fields + 12 != end or end > len(data):
        raise _truncated(tags.NEW_PID, pos)
    pid = Pid(node, *_PID(data, fields))
    if len(_PIDS) < _CACHE_LIMIT:
        _PIDS[data[pos:end]] = pid
    return pid


def _truncated(tag: int, pos: int) -> DecodeError:
    return DecodeError(f"data ends inside {tags.name(tag)}", pos)


def _too_many(tag: int, count: int, pos: int) -> DecodeError:
    return DecodeError(f"{tags.name(tag)} declares {count} elements, more than the bytes left "
                       "can hold", pos)


def _nested_funs(pos: int) -> DecodeError:
    # Funs decode their free variables through Python calls; the depth limit stops
    # nesting before the Python stack runs out unless the limit is set very high.
    return DecodeError("funs are nested too deeply for the Python stack", pos)


def _too_deep(max_depth: int, pos: int) -> DecodeError:
    return DecodeError(f"term is nested deeper than the limit of {max_depth}", pos)
