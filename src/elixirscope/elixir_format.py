"""Decoded terms printed the way Elixir 1.14's ``Kernel.inspect/2`` prints them.

``inspect(term)`` returns the text ``Kernel.inspect(term, limit: ..., printable_limit:
...)`` returns on an Elixir 1.14 node (``pretty: false``, so always one line); the oracle
tests compare the two on a corpus of terms printed by Elixir itself.

Deliberate differences, all about facts the VM knows and a term does not carry:

* Structs. Elixir prints a map with a ``__struct__`` key as ``%Mod{...}`` only if ``Mod``
  is loaded and the map has exactly its fields, in the order the fields were defined;
  otherwise as a plain map. By default every such map prints as ``%Mod{...}``, in
  definition order for the standard-library structs listed in ``_STDLIB_STRUCTS`` and
  in key order for the rest. Pass ``known_structs`` (module -> fields in definition
  order) to get Elixir's rule exactly: then a struct of an unknown module, or one whose
  keys differ from its fields, prints as a map. Inspect implementations outside Elixir's
  standard library (``#Ecto.Changeset<...>``, ``@derive {Inspect, only: ...}``) are not
  known and print as ordinary structs.
* Pids, ports and references of other nodes. Elixir shows the node as its index in the
  printing node's own table (``#PID<12.80.0>``), which means nothing elsewhere, so they
  print with the node name in its place: ``#PID<other@host.80.0>``. Identifiers whose
  node is ``local_node`` (every identifier when ``local_node`` is ``None``) print with
  ``0`` like Elixir's local ones.
* Closures print as ``#Function<3.7916743/1 in MyMod>``, exactly what Elixir prints on a
  node where ``MyMod`` is not loaded. With the module loaded Elixir appends the defining
  function (``in MyMod.handle_call/3``), which comes from the loaded code, not the term.
* Maps of more than 32 keys print in the dict's order. The VM prints them in its
  internal hash order, which is also the order they arrive in, so a decoded map prints
  like Elixir; a dict built in Python prints in its insertion order. Smaller maps are
  sorted in the VM's key order, as the VM does.
* Nesting. Elixir's ``limit`` shrinks by one per element at each level, so a finite
  limit already bounds the depth; beyond ``MAX_DEPTH`` levels (reachable only with
  ``limit=None``, Elixir's ``:infinity``) containers print as if the limit were 0:
  ``[...]``, ``{...}``, ``%{...}``.
* Non-ASCII atoms. Elixir quotes atoms that break the Unicode identifier-security rules
  (UTS 39); the script and restriction data behind them are approximated here, so a
  rare atom may be quoted where Elixir does not quote it, or the reverse.
* Where Elixir raises instead of printing (``charlists: :as_charlists`` on a list that is
  not a charlist, a malformed ``%Range{}`` or ``%Date{}``, a non-ISO calendar), the term
  prints as the plain list, struct or map it is.

Only one-line output is produced; Elixir's ``pretty: true`` layout is not implemented.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from typing import Any, Literal

from elixirscope.etf.order import term_order_key
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
)

__all__ = ["CHARLIST_STYLE", "MAX_DEPTH", "Charlists", "inspect"]

Charlists = Literal["infer", "as_lists", "as_charlists"]

CHARLIST_STYLE: Literal["quotes", "sigil"] = "quotes"
"""``'abc'`` as Elixir 1.14 prints charlists, or ``~c"abc"`` as Elixir 1.15 and later do."""

MAX_DEPTH = 100
"""Containers nested deeper than this print as ``[...]``, ``{...}``, ``%{...}``."""

_INFINITY = 1 << 62
_SMALL_MAP = 32  # the VM keeps maps of up to 32 keys sorted, and prints them that way


def inspect(
    term: Any,
    *,
    limit: int | None = 50,
    printable_limit: int | None = 4096,
    charlists: Charlists = "infer",
    local_node: str | None = None,
    known_structs: Mapping[str, Sequence[str]] | None = None,
    records: Mapping[tuple[str, int], Sequence[str]] | None = None,
) -> str:
    """``term`` as Elixir prints it, on one line.

    ``limit`` caps the elements shown of each list, tuple, map and binary, and
    ``printable_limit`` the characters of each string and charlist; ``None`` means no
    cap (Elixir's ``:infinity``). ``charlists`` is Elixir's option of the same name.
    ``local_node`` names the node whose pids, ports and references print with ``0``.
    ``known_structs`` maps modules (``"MyApp.User"`` or ``"Elixir.MyApp.User"``) to their
    fields in definition order; when given, a struct of any other module prints as a map.
    ``records`` maps Erlang record names and tuple sizes to field names (as
    ``register_records`` does for a node's pids' ``local_node``): a tuple that is such a
    record prints as ``#ch{conf: ..., ...}``, a form Elixir has no literal for.
    """
    if charlists not in ("infer", "as_lists", "as_charlists"):
        raise ValueError(f"charlists must be infer, as_lists or as_charlists, not {charlists!r}")
    if (limit is not None and limit < 0) or (printable_limit is not None and printable_limit < 0):
        raise ValueError("limit and printable_limit must not be negative")
    printer = _Printer(
        _INFINITY if printable_limit is None else printable_limit,
        charlists,
        local_node,
        known_structs,
        records if records is not None else _NODE_RECORDS.get(local_node or ""),
    )
    return printer.term(term, _INFINITY if limit is None else limit, 0)


_NODE_RECORDS: dict[str, Mapping[tuple[str, int], Sequence[str]]] = {}


def register_records(node: str, records: Mapping[tuple[str, int], Sequence[str]]) -> None:
    """The record definitions of ``node``'s modules: terms printed with ``local_node``
    set to it show its records with field names."""
    _NODE_RECORDS[node] = {**_NODE_RECORDS.get(node, {}), **records}


def format_call(module: str, function: str, args: Any, *, limit: int | None = 50,
                printable_limit: int | None = 4096, local_node: str | None = None) -> str:
    """A call as Elixir writes it: ``Catalog.page(80)``, ``:lists.seq(1, 3)``. ``module``
    is written as Elixir writes it (``Catalog``, ``:lists``); each argument is printed on
    its own, so a list of small integers stays a list of arguments, never a charlist."""
    target = f"{module}.{_atom_remote(function)}"
    if not isinstance(args, list):
        return f"{target}({inspect(args, limit=limit, local_node=local_node)})"
    return target + "(" + ", ".join(
        inspect(arg, limit=limit, printable_limit=printable_limit, local_node=local_node)
        for arg in args) + ")"


Handler = Callable[["_Printer", Any, int, int], str]


class _Printer:
    __slots__ = ("charlists", "known_structs", "local_node", "plimit", "records")

    def __init__(
        self,
        plimit: int,
        charlists: Charlists,
        local_node: str | None,
        known_structs: Mapping[str, Sequence[str]] | None,
        records: Mapping[tuple[str, int], Sequence[str]] | None = None,
    ) -> None:
        self.plimit = plimit
        self.charlists = charlists
        self.local_node = local_node
        self.known_structs = known_structs
        self.records = records

    def tuple_text(self, items: tuple[Any, ...], limit: int, depth: int) -> str:
        fields = (self.records.get((str(items[0]), len(items)))
                  if self.records and items and type(items[0]) is Atom else None)
        if fields is None:
            return "{" + ", ".join(self.elements(items, limit, depth)) + "}"
        pairs = list(zip((Atom(name) for name in fields), items[1:], strict=True))
        return f"#{_atom_key(items[0])[:-1]}{{" + ", ".join(
            self.entries(pairs, limit, depth)) + "}"

    def term(self, term: Any, limit: int, depth: int) -> str:
        kind = type(term)
        if kind is Atom:  # the most common terms first, without a handler call
            text = _LITERALS.get(term)
            return _atom_literal(term) if text is None else text
        if kind is int:
            return _int_text(term)
        handler = _HANDLERS.get(kind)
        if handler is None:
            handler, term = _by_base_type(term)
        if depth > MAX_DEPTH:
            limit = 0
        return handler(self, term, limit, depth)

    def elements(self, items: Sequence[Any], limit: int, depth: int) -> list[str]:
        """Elixir's container rule: element ``i`` gets ``limit - i - 1``, and ``...``
        stands for everything from element ``limit`` on."""
        parts: list[str] = []
        term = self.term
        depth += 1
        for i, item in enumerate(items):
            if i == limit:
                parts.append("...")
                break
            parts.append(term(item, limit - i - 1, depth))
        return parts

    def entries(self, pairs: Sequence[tuple[Any, Any]], limit: int, depth: int) -> list[str]:
        keyword = _is_keyword(pairs)
        parts: list[str] = []
        term = self.term
        depth += 1
        for i, (key, value) in enumerate(pairs):
            if i == limit:
                parts.append("...")
                break
            child = limit - i - 1
            if keyword:
                parts.append(f"{_atom_key(key)} {term(value, child, depth)}")
            else:
                parts.append(f"{term(key, child, depth)} => {term(value, child, depth)}")
        return parts

    def binary(self, data: bytes, limit: int) -> str:
        if not data:
            return '""'
        text = _printable_text(data, self.plimit)
        if text is None:
            return _bytes_text(data, limit)
        body, cut = _escape(text, '"', self.plimit)
        return f'"{body}" <> ...' if cut else f'"{body}"'

    def proper_list(self, items: list[Any], limit: int, depth: int) -> str:
        if not items:
            return "[]"
        text = self.charlist(items, None)
        if text is not None:
            return text
        if _is_keyword(items):
            return "[" + ", ".join(self.entries(items, limit, depth)) + "]"
        return "[" + ", ".join(self.elements(items, limit, depth)) + "]"

    def charlist(self, items: list[Any], tail: Any) -> str | None:
        """``'abc'``, if Elixir prints the list (with ``tail``, if improper) that way."""
        mode, plimit = self.charlists, self.plimit
        if mode == "as_lists":
            return None
        if mode == "infer":
            if not _ascii_printable(items, plimit):
                return None
            if tail is None and len(items) > 2 * plimit + 2:
                # Only the first plimit characters show (``#{`` counts once), so the
                # rest need not be converted. Elixir would raise if it is not chardata.
                text = _chardata(items[: 2 * plimit + 2], None)
                return None if text is None else _charlist_text(text, plimit, True)
            if tail is not None and len(items) < plimit:
                return None  # List.ascii_printable? reaches the tail
        text = _chardata(items, tail)
        return None if text is None else _charlist_text(text, plimit, False)

    def map(self, pairs: list[tuple[Any, Any]], limit: int, depth: int) -> str:
        return "%{" + ", ".join(self.entries(_map_order(pairs), limit, depth)) + "}"

    def struct(self, fields: dict[Any, Any], module: Atom, limit: int, depth: int) -> str:
        special = _SPECIAL_STRUCTS.get(module)
        if special is not None:
            text = special(self, fields, limit, depth)
            if text is not None:
                return text
        order = self._field_order(module)
        if order is not None and fields.keys() == order[1]:
            pairs = [(name, fields[name]) for name in order[0]]
        elif self.known_structs is not None:
            return self.map(list(fields.items()), limit, depth)
        else:
            pairs = [pair for pair in _map_order(list(fields.items())) if pair[0] not in _HIDDEN]
        body = ", ".join(self.entries(pairs, limit, depth))
        return f"%{_atom_literal(module)}{{{body}}}"

    def _field_order(self, module: Atom) -> tuple[tuple[Atom, ...], frozenset[Atom]] | None:
        known = self.known_structs
        if known is not None:
            fields = known.get(str(module))
            if fields is None and module.startswith("Elixir."):
                fields = known.get(module[7:])
            if fields is not None:
                return _field_spec(tuple(fields))
        fields = _STDLIB_STRUCTS.get(module)
        return None if fields is None else _field_spec(fields)

    def node(self, node: str) -> str:
        local = self.local_node
        return "0" if local is None or str.__eq__(node, local) else str(node)


# --- scalars ---------------------------------------------------------------------------

def _int_text(n: int) -> str:
    try:
        return str(n)
    except ValueError:  # Python caps int -> str at 4300 digits; the VM allows far more
        if n < 0:
            return "-" + _int_text(-n)
        half = int(n.bit_length() * 0.30103) // 2
        high, low = divmod(n, 10**half)
        return _int_text(high) + _int_text(low).zfill(half)


def _float_text(f: float) -> str:
    magnitude = abs(f)
    if 1.0 <= magnitude < 1e16 and magnitude.is_integer():
        return f"{int(f)}.0"
    if magnitude == 0.0:
        return "-0.0" if math.copysign(1.0, f) < 0 else "0.0"
    if not math.isfinite(f):  # not an Erlang float; shown the Python way
        return repr(f)
    # Shortest round-trip digits (the VM uses the same criterion) and the position of
    # the decimal point relative to them: value = 0.DIGITS * 10**place.
    mantissa, _, exponent = repr(magnitude).partition("e")
    whole, _, fraction = mantissa.partition(".")
    digits = whole + fraction
    place = len(whole) + int(exponent or 0)
    stripped = digits.lstrip("0")
    place -= len(digits) - len(stripped)
    digits = stripped.rstrip("0") or "0"
    sign = "-" if f < 0 else ""
    if 0 < place < len(digits):
        return f"{sign}{digits[:place]}.{digits[place:]}"
    scientific = f"{digits[0]}.{digits[1:] or '0'}e{place - 1}"
    if place <= 0:
        fixed = "0." + "0" * -place + digits
        if len(fixed) <= len(scientific):
            return sign + fixed
    return sign + scientific


# Characters String.printable?/2 accepts.
_NOT_PRINTABLE = re.compile(
    "[^\x20-\x7e\n\r\t\v\b\f\x1b\x7f\x07\u00a0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
_PRINTABLE_ASCII = bytes([*range(0x20, 0x7F), *b"\n\r\t\v\b\f\x1b\x7f\x07"])


def _printable_text(data: bytes, plimit: int) -> str | None:
    """The text to show if Elixir prints ``data`` as a string (its first ``plimit``
    characters are printable), else None. Bytes that are not UTF-8 come out as lone
    surrogates ("surrogateescape"), for ``_escape`` to show as ``\\xFF``."""
    # At most 2 * plimit characters are shown (``#{`` counts once), 4 bytes each.
    head = data if len(data) <= 8 * plimit + 8 else data[: 8 * plimit + 8]
    if head.isascii():
        return None if head[:plimit].translate(None, _PRINTABLE_ASCII) else head.decode("ascii")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as error:
        text = head[: error.start].decode("utf-8")
        if len(text) < plimit:
            return None  # the bad byte is among the characters String.printable? checks
        if error.reason != "unexpected end of data" or len(head) == len(data):
            text = head.decode("utf-8", "surrogateescape")
    return None if _NOT_PRINTABLE.search(text, 0, plimit) else text


def _escape_char(code: int) -> str:
    if 0xDC80 <= code <= 0xDCFF:  # a byte that is not UTF-8, from "surrogateescape"
        return f"\\x{code - 0xDC00:02X}"
    if code < 0x100:
        return f"\\x{code:02X}"
    if code < 0x10000:
        return f"\\x{{{code:04X}}}"
    return f"\\x{{{code:06X}}}"


def _escape_table(named: dict[str, str]) -> dict[int, str]:
    table = {code: _escape_char(code) for code in [
        *range(0x20), *range(0x7F, 0xA0), *range(0xDC80, 0xDD00), 0xFFFE, 0xFFFF,
    ]}
    table[0] = "\\0"
    table[0xFEFF] = "\\uFEFF"
    table.update({ord(char): text for char, text in named.items()})
    return table


_NAMED_ESCAPES = {
    "\a": "\\a", "\b": "\\b", "\x7f": "\\d", "\x1b": "\\e", "\f": "\\f", "\n": "\\n",
    "\r": "\\r", "\t": "\\t", "\v": "\\v", "\\": "\\\\",
}
_ESCAPES = {
    quote: _escape_table({**_NAMED_ESCAPES, quote: "\\" + quote}) for quote in "\"'"
}
_NEEDS_ESCAPE = {
    quote: re.compile(f"[\\x00-\\x1f\\x7f-\\x9f\\\\{quote}\ufeff\ufffe\uffff\udc80-\udcff]")
    for quote in "\"'"
}
_PLAIN_ASCII = {quote: bytes(set(range(0x20, 0x7F)) - {ord(quote), 0x5C}) for quote in "\"'"}


def _escape(text: str, quote: str, limit: int) -> tuple[str, bool]:
    """Elixir's string escaping, for at most ``limit`` characters (``#{`` counts as one);
    also says whether text was left out."""
    cut = False
    if len(text) > limit:
        end = limit
        if "#{" in text[: 2 * limit]:
            end = units = 0
            while units < limit and end < len(text):
                end += 2 if text.startswith("#{", end) else 1
                units += 1
        cut = end < len(text)
        text = text[:end]
    if text.isascii():
        plain = not text.encode("ascii").translate(None, _PLAIN_ASCII[quote])
    else:
        plain = _NEEDS_ESCAPE[quote].search(text) is None
    if plain and "#{" not in text:
        return text, cut
    return text.translate(_ESCAPES[quote]).replace("#{", "\\#{"), cut


_BYTE_TEXT = [str(byte) for byte in range(256)]


def _bytes_text(data: bytes, limit: int, tail: str | None = None) -> str:
    """``<<1, 2, 3>>``: bytes, then an optional ``h::size(n)`` element for the bits."""
    parts = [_BYTE_TEXT[byte] for byte in data[:limit]]
    if len(data) > limit:
        parts.append("...")
    elif tail is not None:
        parts.append(tail if len(data) < limit else "...")
    return "<<" + ", ".join(parts) + ">>"


def _bitstring_text(bits: BitString, limit: int) -> str:
    if bits.bits == 8:
        return _bytes_text(bits.data, limit)
    last = bits.data[-1] >> (8 - bits.bits)
    return _bytes_text(bits.data[:-1], limit, f"{last}::size({bits.bits})")


# Characters List.ascii_printable?/2 accepts.
_ASCII_PRINTABLE = frozenset([*range(0x20, 0x7F), *b"\n\r\t\v\b\f\x1b\x07"])


def _ascii_printable(items: list[Any], plimit: int) -> bool:
    for code in items[:plimit]:
        if type(code) is not int or code not in _ASCII_PRINTABLE:
            return False
    return True


def _chardata(items: list[Any], tail: Any) -> str | None:
    """The text of an Elixir chardata list (code points, UTF-8 binaries and nested
    chardata; ``tail``, if not None, is a binary ending an improper list), or None."""
    if tail is not None and type(tail) is not bytes:
        return None
    chunks: list[str] = []
    stack = [iter(items if tail is None else [*items, tail])]
    while stack:
        for item in stack[-1]:
            kind = type(item)
            if kind is int and (0 <= item < 0xD800 or 0xE000 <= item <= 0x10FFFF):
                chunks.append(chr(item))
            elif kind is bytes:
                try:
                    chunks.append(item.decode("utf-8"))
                except UnicodeDecodeError:
                    return None
            elif kind is list:
                stack.append(iter(item))
                break
            elif kind is ImproperList and type(item.tail) is bytes:
                stack.append(iter([*item.items, item.tail]))
                break
            else:
                return None
        else:
            stack.pop()
    return "".join(chunks)


def _charlist_text(text: str, plimit: int, cut: bool) -> str:
    if CHARLIST_STYLE == "sigil":
        body, more = _escape(text, '"', plimit)
        shown = f'~c"{body}"'
    else:
        body, more = _escape(text, "'", plimit)
        shown = f"'{body}'"
    return f"{shown} ++ ..." if cut or more else shown


# --- atoms -----------------------------------------------------------------------------

# How an atom may be written: the classes of Elixir's Macro.classify_atom, refined by
# where the atom stands (``:atom``, ``key:`` or ``Mod.fun``).
_IDENTIFIER = 0  # bare everywhere: :ok, ok:, Mod.ok
_UNQUOTED = 1  # bare except as a function name: :Foo, :a@b, :%{}
_OPERATOR = 2  # bare everywhere: :+, +:, Kernel.+
_QUOTED_OPERATOR = 3  # quoted except as a function name: :"::", Kernel.::
_ALIAS = 4  # Elixir.Foo, printed Foo
_QUOTED = 5

_OPERATORS = frozenset([
    "!", "!=", "!==", "&", "&&", "&&&", "*", "**", "+", "++", "+++", "-", "--", "---", "/",
    "<", "<-", "<<<", "<<~", "<=", "<>", "<~", "<~>", "=", "==", "===", "=~", ">", ">=", ">>>",
    "@", "\\\\", "^", "|", "|>", "||", "|||", "~>", "~>>",
])
_QUOTED_OPERATORS = frozenset(["::", "^^^", "~~~", "<|>"])
_NOT_CALLABLE = frozenset(["%", "%{}", "{}", "<<>>", "->", ".", "..", "...", "..//"])
_ALIAS_NAME = re.compile(r"Elixir(?:\.[A-Z][A-Za-z0-9_]*)*")
_ASCII_WORD = re.compile(r"(?:([a-z_])|[A-Z])[A-Za-z0-9_@]*[?!]?")
# Scripts UTS 39 lets one identifier mix (besides a single script).
_SCRIPT_MIXES = (
    frozenset(["LATIN", "CJK", "HIRAGANA", "KATAKANA"]),
    frozenset(["LATIN", "CJK", "BOPOMOFO"]),
    frozenset(["LATIN", "CJK", "HANGUL"]),
)


def _classify(name: str) -> int:
    name = str(name)  # an Atom is never equal to the strings in the tables
    if name in _OPERATORS:
        return _OPERATOR
    if name in _QUOTED_OPERATORS:
        return _QUOTED_OPERATOR
    if name in _NOT_CALLABLE:
        return _UNQUOTED
    if _ALIAS_NAME.fullmatch(name):
        return _ALIAS
    if name.isascii():
        match = _ASCII_WORD.fullmatch(name)
        if match is None:
            return _QUOTED
        return _IDENTIFIER if match.group(1) and "@" not in name else _UNQUOTED
    return _classify_unicode(name)


def _classify_unicode(name: str) -> int:
    first = name[0]
    if not first.isidentifier() or first in "\u2118\u212e":
        return _QUOTED
    identifier = unicodedata.category(first) not in ("Lu", "Lt") and not "A" <= first <= "Z"
    end = len(name)
    for i in range(1, len(name)):
        char = name[i]
        if char in "?!":
            end = i + 1
            break
        if char == "@":
            identifier = False
        elif not ("a" + char).isidentifier():
            return _QUOTED
    if end != len(name) or not _secure(name[:end]):
        return _QUOTED
    return _IDENTIFIER if identifier else _UNQUOTED


_NO_SCRIPT = frozenset(["COMBINING", "DIGIT", "MODIFIER", ""])


def _secure(name: str) -> bool:
    """UTS 39 as Elixir applies it: NFC, no restricted characters (approximated as the
    ones NFKC changes), and one script or a mix ``_SCRIPT_MIXES`` allows (the script
    approximated by the first word of the character's name)."""
    if not unicodedata.is_normalized("NFC", name):
        return False
    scripts = set()
    for char in name:
        if char.isascii():
            if char.isalpha():
                scripts.add("LATIN")
            continue
        if not unicodedata.is_normalized("NFKC", char) or char in "\u2118\u212e":
            return False
        if unicodedata.category(char)[0] in "LMN":
            word = unicodedata.name(char, "").split(" ")[0].split("-")[0]
            if word not in _NO_SCRIPT and char != "\u03bc":  # Elixir lets μ mix
                scripts.add(word)
    return len(scripts) <= 1 or any(scripts <= mix for mix in _SCRIPT_MIXES)


# What the agent puts where it did not copy a value: a process's state (recorded as
# states, not with each call), an argument too large to ship, a value not recorded, a
# plug's conn and options (a request's plug pipeline ships neither).
MARKERS = {"$state": "#state", "$elided": "#elided", "$not_recorded": "#not_recorded",
           "$conn": "#conn", "$opts": "#opts"}
_LITERALS: dict[str, str] = {Atom(name): name for name in ("nil", "true", "false")}
_LITERALS.update((Atom(name), text) for name, text in MARKERS.items())
_KEYS: dict[str, str] = {}
_REMOTES: dict[str, str] = {}
_ATOM_CACHE_LIMIT = 100_000


def _quoted(name: str) -> str:
    return '"' + _escape(name, '"', _INFINITY)[0] + '"'


def _cached(cache: dict[str, str], name: str, text: str) -> str:
    if len(cache) >= _ATOM_CACHE_LIMIT:
        cache.clear()
    cache[name] = text
    return text


def _atom_literal(name: str) -> str:
    """``:ok``, ``nil``, ``Foo.Bar``, ``:"with space"``."""
    text = _LITERALS.get(name)
    if text is not None:
        return text
    kind = _classify(name)
    if kind == _ALIAS:
        short = str(name) in ("Elixir", "Elixir.Elixir") or name.startswith("Elixir.Elixir.")
        text = str(name) if short else name[7:]
    elif kind in (_IDENTIFIER, _UNQUOTED, _OPERATOR):
        text = ":" + name
    else:
        text = ":" + _quoted(name)
    return _cached(_LITERALS, name, text)


def _atom_key(key: Any) -> str:
    """``ok:``, ``"with space":`` (a keyword key; ``key`` is an atom, True, False or None)."""
    name = "nil" if key is None else ("true" if key else "false") if type(key) is bool else key
    text = _KEYS.get(name)
    if text is None:
        bare = _classify(name) in (_IDENTIFIER, _UNQUOTED, _OPERATOR)
        text = _cached(_KEYS, name, name + ":" if bare else _quoted(name) + ":")
    return text


def _atom_remote(name: str) -> str:
    """A function name after ``Mod.``: ``map``, ``+``, ``"Foo"``."""
    text = _REMOTES.get(name)
    if text is None:
        bare = _classify(name) in (_IDENTIFIER, _OPERATOR, _QUOTED_OPERATOR)
        text = _cached(_REMOTES, name, str(name) if bare else _quoted(name))
    return text


def _is_keyword(items: Sequence[Any]) -> bool:
    for item in items:
        if type(item) is not tuple or len(item) != 2:
            return False
        key = item[0]
        if type(key) is Atom:
            if key.startswith("Elixir."):
                return False
        elif key is not None and type(key) is not bool:
            return False
    return True


# --- maps ------------------------------------------------------------------------------

def _exact_key(pair: tuple[Any, Any]) -> Any:
    return term_order_key(pair[0], exact=True)


def _map_order(pairs: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    if len(pairs) > _SMALL_MAP or len(pairs) < 2:
        return pairs
    if all(type(key) is Atom for key, _ in pairs):
        return sorted(pairs, key=itemgetter(0))
    try:
        return sorted(pairs, key=_exact_key)
    except RecursionError:  # keys nested too deeply to order: show them as they came
        return pairs


_STRUCT = Atom("__struct__")
_EXCEPTION = Atom("__exception__")
_HIDDEN = frozenset([_STRUCT, _EXCEPTION])  # struct keys Elixir does not print

# Field orders of standard-library structs that print as ``%Mod{...}`` (Elixir 1.14).
_STDLIB_STRUCTS: dict[str, tuple[str, ...]] = {
    Atom(f"Elixir.{module}"): tuple(fields.split()) for module, fields in {
        "File.Stat": "size type access atime mtime ctime mode links major_device "
                     "minor_device inode uid gid",
        "Task": "mfa owner pid ref",
        "IO.Stream": "device raw line_or_bytes",
        "ArgumentError": "__exception__ message",
        "ArithmeticError": "__exception__ message",
        "BadArityError": "__exception__ function args",
        "BadBooleanError": "__exception__ term operator",
        "BadFunctionError": "__exception__ term",
        "BadMapError": "__exception__ term",
        "BadStructError": "__exception__ struct term",
        "CaseClauseError": "__exception__ term",
        "CompileError": "__exception__ file line description",
        "CondClauseError": "__exception__",
        "Enum.EmptyError": "__exception__ message",
        "Enum.OutOfBoundsError": "__exception__ message",
        "ErlangError": "__exception__ original reason",
        "File.Error": "__exception__ reason path action",
        "FunctionClauseError": "__exception__ module function arity kind args clauses",
        "KeyError": "__exception__ key term message",
        "MatchError": "__exception__ term",
        "Protocol.UndefinedError": "__exception__ protocol value description",
        "RuntimeError": "__exception__ message",
        "SystemLimitError": "__exception__ message",
        "TryClauseError": "__exception__ term",
        "UndefinedFunctionError": "__exception__ module function arity reason message",
        "UnicodeConversionError": "__exception__ encoded message",
        "WithClauseError": "__exception__ term",
    }.items()
}

_FIELD_SPECS: dict[tuple[str, ...], tuple[tuple[Atom, ...], frozenset[Atom]]] = {}


def _field_spec(fields: tuple[str, ...]) -> tuple[tuple[Atom, ...], frozenset[Atom]]:
    """The fields to print, in order, and the key set a map needs to be the struct."""
    spec = _FIELD_SPECS.get(fields)
    if spec is None:
        atoms = tuple(Atom(field) for field in fields)
        spec = (
            tuple(atom for atom in atoms if atom not in _HIDDEN),
            frozenset([_STRUCT, *atoms]),
        )
        if len(_FIELD_SPECS) >= _ATOM_CACHE_LIMIT:
            _FIELD_SPECS.clear()
        _FIELD_SPECS[fields] = spec
    return spec


# --- standard-library structs with their own Inspect implementation --------------------

def _keys(*names: str) -> frozenset[Atom]:
    return frozenset([_STRUCT, *(Atom(name) for name in names)])


def _get(fields: dict[Any, Any], name: str) -> Any:
    return fields[Atom(name)]


_ISO = Atom("Elixir.Calendar.ISO")


def _ints(*values: Any) -> bool:
    return all(type(value) is int for value in values)


def _pad(n: int, width: int) -> str:
    return "-" + _pad(-n, width) if n < 0 else str(n).zfill(width)


def _iso_date(fields: dict[Any, Any]) -> str | None:
    year, month, day = (_get(fields, name) for name in ("year", "month", "day"))
    if _get(fields, "calendar") != _ISO or not _ints(year, month, day):
        return None
    return f"{_pad(year, 4)}-{_pad(month, 2)}-{_pad(day, 2)}"


def _iso_time(fields: dict[Any, Any]) -> str | None:
    hour, minute, second, micro = (
        _get(fields, name) for name in ("hour", "minute", "second", "microsecond"))
    if (_get(fields, "calendar") != _ISO or not _ints(hour, minute, second)
            or type(micro) is not tuple or len(micro) != 2 or not _ints(*micro)
            or not 0 <= micro[1] <= 6):
        return None
    text = f"{_pad(hour, 2)}:{_pad(minute, 2)}:{_pad(second, 2)}"
    return f"{text}.{_pad(micro[0], 6)[: micro[1]]}" if micro[1] else text


def _date(p: _Printer, fields: dict[Any, Any], limit: int, depth: int) -> str | None:
    if fields.keys() != _DATE_KEYS:
        return None
    date = _iso_date(fields)
    return None if date is None else f"~D[{date}]"


def _time(p: _Printer, fields: dict[Any, Any], limit: int, depth: int) -> str | None:
    if fields.keys() != _TIME_KEYS:
        return None
    time = _iso_time(fields)
    return None if time is None else f"~T[{time}]"


def _naive_datetime(p: _Printer, fields: dict[Any, Any], limit: int, depth: int) -> str | None:
    if fields.keys() != _NAIVE_KEYS:
        return None
    date, time = _iso_date(fields), _iso_time(fields)
    return None if date is None or time is None else f"~N[{date} {time}]"


def _datetime(p: _Printer, fields: dict[Any, Any], limit: int, depth: int) -> str | None:
    if fields.keys() != _DATETIME_KEYS:
        return None
    date, time = _iso_date(fields), _iso_time(fields)
    zone, abbr, utc, std = (
        _get(fields, name) for name in ("time_zone", "zone_abbr", "utc_offset", "std_offset"))
    if date is None or time is None or type(zone) is not bytes or type(abbr) is not bytes \
            or not _ints(utc, std):
        return None
    utc_zone = zone == b"Etc/UTC"
    if utc_zone and utc == 0 and std == 0:
        return f"~U[{date} {time}Z]"
    total = utc + std
    offset = f"{'-' if total < 0 else '+'}{_pad(abs(total) // 3600, 2)}:" \
             f"{_pad(abs(total) % 3600 // 60, 2)}"
    names = "" if utc_zone else " " + abbr.decode("utf-8", "replace") + " " + zone.decode(
        "utf-8", "replace")
    return f"#DateTime<{date} {time}{offset}{names}>"


def _range(p: _Printer, fields: dict[Any, Any], limit: int, depth: int) -> str | None:
    keys = fields.keys()
    if keys not in (_RANGE_KEYS, _LEGACY_RANGE_KEYS):
        return None
    first, last = _get(fields, "first"), _get(fields, "last")
    text = f"{p.term(first, limit, depth)}..{p.term(last, limit, depth)}"
    if keys == _LEGACY_RANGE_KEYS:
        return text
    step = _get(fields, "step")
    if type(step) is int and step == 1 and _ascending(first, last):
        return text
    return f"{text}//{p.term(step, limit, depth)}"


def _ascending(first: Any, last: Any) -> bool:
    if type(first) is int and type(last) is int:
        return first <= last
    try:
        return bool(term_order_key(first) <= term_order_key(last))
    except RecursionError:
        return False


def _mapset(p: _Printer, fields: dict[Any, Any], limit: int, depth: int) -> str | None:
    if fields.keys() not in (_MAPSET_KEYS, _LEGACY_MAPSET_KEYS):
        return None
    members = _get(fields, "map")
    if type(members) is dict:
        pairs = list(members.items())
    elif type(members) is PairMap:
        pairs = members.pairs
    else:
        return None
    items = [key for key, _ in _map_order(pairs)]
    as_lists = _Printer(p.plimit, "as_lists", p.local_node, p.known_structs)
    return f"MapSet.new({as_lists.proper_list(items, limit, depth + 1)})"


def _date_range(p: _Printer, fields: dict[Any, Any], limit: int, depth: int) -> str | None:
    if fields.keys() != _DATE_RANGE_KEYS:
        return None
    first, last, step = (_get(fields, name) for name in ("first", "last", "step"))
    shown = [p.term(first, limit, depth), p.term(last, limit, depth)]
    if not (type(step) is int and step == 1):
        shown.append(p.term(step, limit, depth))
    return f"Date.range({', '.join(shown)})"


def _stream(p: _Printer, fields: dict[Any, Any], limit: int, depth: int) -> str | None:
    funs = _get(fields, "funs") if fields.keys() == _STREAM_KEYS else None
    if type(funs) is not list:
        return None
    shown = [(Atom("enum"), _get(fields, "enum")), (Atom("funs"), funs[::-1])]
    return f"#Stream<{p.proper_list(shown, limit, depth + 1)}>"


_REGEX_ESCAPES = _escape_table({
    "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v", "\f": "\\f", "\a": "\\a", "/": "\\/",
})
_REGEX_SPECIAL = re.compile(
    "\\\\.|#\\{|[/\\x00-\\x1f\\x7f-\\x9f\ufeff\ufffe\uffff\udc80-\udcff]", re.DOTALL)


def _regex_escape(match: re.Match[str]) -> str:
    text = match.group()
    if text[0] == "\\":  # an escape already in the source stays as written
        return text
    return "\\#{" if text == "#{" else text.translate(_REGEX_ESCAPES)


def _regex(p: _Printer, fields: dict[Any, Any], limit: int, depth: int) -> str | None:
    source, opts = _get(fields, "source"), _get(fields, "opts")
    if fields.keys() != _REGEX_KEYS or type(source) is not bytes or type(opts) is not bytes:
        return None
    text = source.decode("utf-8", "surrogateescape")
    return f"~r/{_REGEX_SPECIAL.sub(_regex_escape, text)}/{opts.decode('utf-8', 'replace')}"


def _version_requirement(
        p: _Printer, fields: dict[Any, Any], limit: int, depth: int) -> str | None:
    source = _get(fields, "source") if fields.keys() == _REQUIREMENT_KEYS else None
    if type(source) is not bytes:
        return None
    # Elixir prints the source with the default options, whatever the caller's.
    return f"Version.parse_requirement!({_Printer(4096, 'infer', None, None).binary(source, 50)})"


def _shown_fields(p: _Printer, name: str, pairs: list[tuple[Atom, Any]], limit: int,
                  depth: int) -> str:
    return f"%{name}{{{', '.join(p.entries(pairs, limit, depth))}}}"


def _uri(p: _Printer, fields: dict[Any, Any], limit: int, depth: int) -> str | None:
    # Elixir 1.14 leaves out the deprecated authority when it is nil.
    names = [name for name in _URI_FIELDS
             if name != "authority" or fields.get(Atom(name)) is not None]
    return _shown_fields(p, "URI", [(Atom(n), fields.get(Atom(n))) for n in names], limit, depth)


def _version(p: _Printer, fields: dict[Any, Any], limit: int, depth: int) -> str | None:
    # Elixir 1.14 leaves out an empty pre-release and a nil build.
    pairs = [(Atom(name), fields.get(Atom(name))) for name in ("major", "minor", "patch")]
    pre, build = fields.get(Atom("pre")), fields.get(Atom("build"))
    if pre != []:
        pairs.append((Atom("pre"), pre))
    if build is not None:
        pairs.append((Atom("build"), build))
    return _shown_fields(p, "Version", pairs, limit, depth)


_URI_FIELDS = ["scheme", "authority", "userinfo", "host", "port", "path", "query", "fragment"]
_DATE_KEYS = _keys("calendar", "year", "month", "day")
_TIME_KEYS = _keys("calendar", "hour", "minute", "second", "microsecond")
_NAIVE_KEYS = _DATE_KEYS | _TIME_KEYS
_DATETIME_KEYS = _NAIVE_KEYS | _keys("time_zone", "zone_abbr", "utc_offset", "std_offset")
_RANGE_KEYS = _keys("first", "last", "step")
_LEGACY_RANGE_KEYS = _keys("first", "last")
_MAPSET_KEYS = _keys("map", "version")
_LEGACY_MAPSET_KEYS = _keys("map")
_DATE_RANGE_KEYS = _keys("first", "last", "first_in_iso_days", "last_in_iso_days", "step")
_STREAM_KEYS = _keys("enum", "funs", "accs", "done")
_REGEX_KEYS = _keys("re_pattern", "re_version", "source", "opts")
_REQUIREMENT_KEYS = _keys("source", "lexed")

_SPECIAL_STRUCTS: dict[str, Callable[[_Printer, dict[Any, Any], int, int], str | None]] = {
    Atom(f"Elixir.{module}"): printer for module, printer in {
        "Date": _date,
        "Time": _time,
        "NaiveDateTime": _naive_datetime,
        "DateTime": _datetime,
        "Range": _range,
        "MapSet": _mapset,
        "Date.Range": _date_range,
        "Stream": _stream,
        "Regex": _regex,
        "Version.Requirement": _version_requirement,
        "URI": _uri,
        "Version": _version,
    }.items()
}


# --- dispatch --------------------------------------------------------------------------

def _print_dict(p: _Printer, term: dict[Any, Any], limit: int, depth: int) -> str:
    module = term.get(_STRUCT)
    if type(module) is Atom:
        return p.struct(term, module, limit, depth)
    return p.map(list(term.items()), limit, depth)


def _print_pair_map(p: _Printer, term: PairMap, limit: int, depth: int) -> str:
    return p.map(term.pairs, limit, depth)


def _print_improper(p: _Printer, term: ImproperList, limit: int, depth: int) -> str:
    items = term.items
    text = p.charlist(items, term.tail)
    if text is not None:
        return text
    parts = p.elements(items, limit, depth)
    if len(items) <= limit:  # the last element is shown, so is the tail, with its limit
        parts[-1] += " | " + p.term(term.tail, limit - len(items), depth + 1)
    return "[" + ", ".join(parts) + "]"


def _print_export(p: _Printer, term: Export, limit: int, depth: int) -> str:
    return f"&{_atom_literal(term.module)}.{_atom_remote(term.function)}/{term.arity}"


def _print_fun(p: _Printer, term: Fun, limit: int, depth: int) -> str:
    return f"#Function<{term.index}.{term.old_uniq}/{term.arity} in {_atom_literal(term.module)}>"


def _print_pid(p: _Printer, term: Pid, limit: int, depth: int) -> str:
    return f"#PID<{p.node(term.node)}.{term.id}.{term.serial}>"


def _print_port(p: _Printer, term: Port, limit: int, depth: int) -> str:
    return f"#Port<{p.node(term.node)}.{term.id}>"


def _print_reference(p: _Printer, term: Reference, limit: int, depth: int) -> str:
    words = [*reversed(term.ids)]
    if len(words) < 3:  # the VM shows at least three words
        words[:0] = [0] * (3 - len(words))
    return f"#Reference<{p.node(term.node)}.{'.'.join(map(str, words))}>"


_HANDLERS: dict[type, Handler] = {
    Atom: lambda p, term, limit, depth: _atom_literal(term),
    int: lambda p, term, limit, depth: _int_text(term),
    bytes: lambda p, term, limit, depth: p.binary(term, limit),
    tuple: lambda p, term, limit, depth: p.tuple_text(term, limit, depth),
    list: lambda p, term, limit, depth: p.proper_list(term, limit, depth),
    dict: _print_dict,
    bool: lambda p, term, limit, depth: "true" if term else "false",
    type(None): lambda p, term, limit, depth: "nil",
    float: lambda p, term, limit, depth: _float_text(term),
    str: lambda p, term, limit, depth: p.binary(term.encode("utf-8", "surrogatepass"), limit),
    Pid: _print_pid,
    Reference: _print_reference,
    Port: _print_port,
    Export: _print_export,
    Fun: _print_fun,
    ImproperList: _print_improper,
    PairMap: _print_pair_map,
    BitString: lambda p, term, limit, depth: _bitstring_text(term, limit),
}


_BASE_TYPES: tuple[tuple[type, Callable[[Any], Any]], ...] = (
    (bool, bool), (int, int), (float, float), (str, str), (bytes, bytes), (bytearray, bytes),
    (memoryview, bytes), (tuple, tuple), (list, list), (dict, dict),
)


def _by_base_type(term: Any) -> tuple[Handler, Any]:
    """The handler for an instance of a subclass of a term type (an ``IntEnum``, an
    ``OrderedDict``...), with the value converted to the base type."""
    for base, convert in _BASE_TYPES:
        if isinstance(term, base):
            value = convert(term)
            return _HANDLERS[type(value)], value
    raise TypeError(f"a {type(term).__name__} is not an Erlang term")
