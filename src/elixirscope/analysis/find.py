"""``find``: the events whose payload (arguments, return value, exception, message,
exit reason, captured state) contains a value, or a subterm a predicate accepts.

A value is searched the way ``Recording.events(text=...)`` searches text, in two
passes: SQL keeps the events whose raw ETF bytes hold every fragment of the value's
own encoding (``needles``), then each candidate is decoded and checked. The fragments
are the value's ETF (``elixirscope.etf.encode`` without the version byte) cut around
each atom's header (a node on OTP 25 writes atoms as ``ATOM_EXT``, ours as
``SMALL_ATOM_UTF8_EXT``; the name's bytes are the same) and between map entries (the
VM orders big maps by hash). A ``str`` or ``bytes`` value is searched as a substring of
binaries (and, for ``str``, of atoms).

Matching is exact: ``1`` is not ``1.0`` and not ``true``. An integer 0..255 is also
found inside a list the VM encodes as a string of bytes (a charlist); the SQL pass
keeps more candidates for it (every payload holding a charlist and that byte).

A predicate cannot be turned into SQL: every event that passes the other filters is
decoded and each of its subterms is given to it (slower: about 10-20 k events/s), until
``limit`` events match. Exceptions the predicate raises propagate.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from elixirscope.errors import ETFDecodeError, ETFEncodeError, QueryError
from elixirscope.etf import Atom, ImproperList, PairMap, Pid, Port, Reference, decode
from elixirscope.etf.encoder import encode_body
from elixirscope.etf.tags import LIST, MAP, NIL, STRING
from elixirscope.recording import sql
from elixirscope.recording.results import Event

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries
    from elixirscope.recording.timespec import TimeSpec

Predicate = Callable[[Any], bool]
# At most this many fragments go into the SQL filter (the longest ones).
_MAX_NEEDLES = 4
_CUT = None
_HOLDS = "contains(payload::VARCHAR, ?::BLOB::VARCHAR)"


def find(rec: RecordingQueries, what: Any, *, pid: str | int | None = None,
         module: str | None = None, function: str | None = None,
         kind: str | Iterable[str] | None = None, since: TimeSpec | None = None,
         until: TimeSpec | None = None, limit: int | None = 1000,
         order: str = "asc") -> list[Event]:
    """The events, in time order (``order="desc"``: latest first), whose payload holds
    ``what`` (a term, or a ``str``/``bytes`` to find inside binaries), or, if ``what``
    is callable, a subterm for which ``what(subterm)`` is true; at most ``limit``.
    Each event's ``span_id`` is the traced call it happened in."""
    where = rec.event_filter(pid, module, function, kind, since, until)
    direction = sql.direction(order)
    if not callable(what) and type(what) is not str:
        what = _binaries(what)
    test = what if callable(what) else contains(what)
    if not callable(what):
        for needle in needles(what):
            if type(what) is int and 0 <= what <= 255:
                # Inside a charlist the VM writes the integer as one byte of a
                # STRING_EXT: such payloads hold that tag and the byte somewhere.
                where.add(f"({_HOLDS} OR ({_HOLDS} AND {_HOLDS}))", needle,
                          bytes([STRING]), bytes([what]))
            else:
                where.add(_HOLDS, needle)
    found: list[Event] = []
    if limit == 0:
        return found
    with rec.con.cursor() as cur:
        cur.execute(sql.event_sql(where, direction), where.params)
        while rows := cur.fetchmany(sql.SEARCH_CHUNK):
            for row in rows:
                try:
                    value = decode(bytes(row[12]))
                except ETFDecodeError:
                    continue
                if any(test(sub) for sub in subterms(value)):
                    found.append(rec.event_of_row(row))
                    if len(found) == limit:
                        return found
    return found


def recorded_pid(rec: RecordingQueries, spec: str | int) -> Pid:
    """The pid term of a recorded process (``#PID<0.5.0>``, a registered name or a
    ``pid_id``), as the recording stored it."""
    pid_id = rec.pid_ids(spec)[0]
    row = rec.con.execute("SELECT term FROM pids WHERE pid_id = ?", [pid_id]).fetchone()
    term = decode(bytes(row[0])) if row else None
    if not isinstance(term, Pid):
        raise QueryError(f"the recording holds no pid term for {spec}")
    return term


def contains(value: Any) -> Predicate:
    """A test of one subterm: equal to ``value`` (type for type), or for a ``str`` or
    ``bytes`` value a binary, an Erlang string (a charlist) or, for ``str``, an atom
    that contains it."""
    if type(value) is str:
        data = value.encode("utf-8")
        return lambda sub: ((type(sub) is bytes and data in sub)
                            or (type(sub) is Atom and value in sub)
                            or value in _charlist_text(sub))
    if type(value) is bytes:
        text = value.decode("utf-8", errors="surrogateescape")
        return lambda sub: (type(sub) is bytes and value in sub) or text in _charlist_text(sub)
    return lambda sub: same(sub, value)


def _charlist_text(term: Any) -> str:
    """The text of a non-empty list of character codes, else ``""`` (never a match)."""
    if type(term) is not list or not term:
        return ""
    if not all(type(c) is int and 0 <= c <= 0x10FFFF for c in term):
        return ""
    return "".join(map(chr, term))


def same(a: Any, b: Any) -> bool:
    """Equal as Erlang terms: ``1``, ``1.0`` and ``true`` are three different terms."""
    if type(a) is not type(b) or a != b:
        return False
    if type(a) in (int, float, bytes, Atom, bool):
        return True
    try:
        return encode_body(a) == encode_body(b)
    except ETFEncodeError:
        return True


def subterms(term: Any) -> Iterator[Any]:
    """``term`` and every term inside it (elements, map keys and values, tails)."""
    stack = [term]
    while stack:
        item = stack.pop()
        yield item
        kind = type(item)
        if kind is tuple or kind is list:
            stack.extend(item)
        elif kind is dict:
            for key, value in item.items():
                stack += (key, value)
        elif kind is PairMap:
            for key, value in item.pairs:
                stack += (key, value)
        elif kind is ImproperList:
            stack.extend(item.items)
            stack.append(item.tail)


def _binaries(term: Any) -> Any:
    """``term`` with every ``str`` inside it as the bytes of the binary it encodes as
    (the decoder gives binaries as ``bytes``)."""
    kind = type(term)
    if kind is str:
        return term.encode("utf-8")
    if kind is tuple:
        return tuple(_binaries(item) for item in term)
    if kind is list:
        return [_binaries(item) for item in term]
    if kind is dict:
        return {_binaries(key): _binaries(value) for key, value in term.items()}
    return term


def needles(value: Any) -> list[bytes]:
    """Byte strings that the raw ETF of any payload holding ``value`` contains, longest
    first (at most four)."""
    if type(value) is str:
        pieces: list[bytes | None] = [value.encode("utf-8")]
    elif type(value) is bytes:
        pieces = [value]
    else:
        pieces = []
        _pieces(value, pieces)
    found: list[bytes] = []
    current = b""
    for piece in [*pieces, _CUT]:
        if piece is None:
            if len(current) >= 2 and current not in found:
                found.append(current)
            current = b""
        else:
            current += piece
    return sorted(found, key=len, reverse=True)[:_MAX_NEEDLES]


def _pieces(term: Any, out: list[bytes | None]) -> None:
    """The encoding of ``term`` as pieces of bytes that any encoding the VM may choose
    keeps together, ``None`` where it may differ."""
    kind = type(term)
    if kind is Atom or kind is bool or term is None:
        name = "nil" if term is None else str(term).lower() if kind is bool else str(term)
        out += [_CUT, name.encode() if name.isascii() else _CUT]
    elif kind is tuple:
        out.append(encode_body(term)[:2 if len(term) < 256 else 5])
        for item in term:
            _pieces(item, out)
    elif kind is list:
        body = encode_body(term)
        if body[0] in (STRING, NIL):
            out.append(body)
            return
        out.append(bytes([LIST]) + len(term).to_bytes(4, "big"))
        for item in term:
            _pieces(item, out)
        out.append(bytes([NIL]))
    elif kind is ImproperList:
        out.append(bytes([LIST]) + len(term.items).to_bytes(4, "big"))
        for item in [*term.items, term.tail]:
            _pieces(item, out)
    elif kind is dict or kind is PairMap:
        pairs = term.pairs if kind is PairMap else list(term.items())
        out.append(bytes([MAP]) + len(pairs).to_bytes(4, "big"))
        for key, value in pairs:
            out.append(_CUT)
            _pieces(key, out)
            _pieces(value, out)
        out.append(_CUT)
    elif kind in (Pid, Port, Reference):
        body = encode_body(term)
        node = encode_body(term.node)
        at = body.index(node)
        out += [body[:at], _CUT]
        _pieces(term.node, out)
        out.append(body[at + len(node):])
    elif kind in (int, float, bytes, str):
        out.append(encode_body(term))
    else:  # funs, exports, bitstrings: checked after decoding only
        out.append(_CUT)
