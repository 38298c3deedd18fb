"""Generated terms of every type: round trips, canonical form, and mutated input."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elixirscope.etf import (
    Atom,
    BitString,
    ETFDecodeError,
    Export,
    Fun,
    ImproperList,
    PairMap,
    Pid,
    Port,
    Reference,
    compare,
    decode,
    decode_body,
    decode_prefix,
    encode,
    encode_body,
    term_order_key,
)

u32 = st.integers(0, 2**32 - 1)
names = st.text(st.characters(codec="utf-8"), max_size=12) | st.text(
    "aé€😀", min_size=250, max_size=255)
atoms = names.filter(lambda s: s not in ("true", "false")).map(Atom)
nodes = st.sampled_from(["nonode@nohost", "a@h", "true", "ö@höst"]).map(Atom)

integers = (st.integers(-300, 300) | st.integers(-(2**31) - 2, 2**31 + 1)
            | st.builds(lambda bits, sign: sign * (2**bits - 1), st.integers(0, 2100),
                        st.sampled_from([1, -1])))
floats = st.floats(allow_nan=False, allow_infinity=False)
bitstrings = st.builds(BitString, st.binary(min_size=1, max_size=6), st.integers(1, 7))
pids = st.builds(Pid, nodes, u32, u32, u32)
ports = st.builds(Port, nodes, st.integers(0, 2**64 - 1), u32)
references = st.builds(Reference, nodes, u32, st.lists(u32, min_size=1, max_size=5))
exports = st.builds(Export, atoms, atoms, st.integers(0, 255))

hashable_leaves = (integers | floats | atoms | st.booleans() | st.binary(max_size=12)
                   | bitstrings | pids | ports | references | exports)


@st.composite
def funs(draw: st.DrawFn, free: st.SearchStrategy[Any] = hashable_leaves) -> Fun:
    """A NEW_FUN_EXT put together from generated parts, decoded into a Fun."""
    free_vars = draw(st.lists(free, max_size=3))
    parts = (bytes([draw(st.integers(0, 255))]) + draw(st.binary(min_size=16, max_size=16))
             + struct.pack(">II", draw(u32), len(free_vars)) + encode_body(draw(atoms))
             + encode_body(draw(st.integers(0, 2**31 - 1)))
             + encode_body(draw(st.integers(-(2**31), 2**31 - 1))) + encode_body(draw(pids))
             + b"".join(encode_body(value) for value in free_vars))
    fun = decode(b"\x83p" + struct.pack(">I", len(parts) + 4) + parts)
    assert isinstance(fun, Fun)
    assert list(fun.free_vars) == free_vars
    return fun


leaves = hashable_leaves | funs()


def containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    keys = st.recursive(hashable_leaves, lambda k: st.lists(k, max_size=3).map(tuple),
                        max_leaves=4)
    tails = hashable_leaves | st.lists(children, max_size=2).map(tuple)
    # 1 and 1.0 are one dict key in Python and two map keys in Erlang; keys that are
    # lists cannot be dict keys at all. Numbering the keys keeps them distinct.
    colliding = st.lists(st.tuples(children, children), min_size=1, max_size=3).map(
        lambda values: PairMap([(k, a) for k, (a, _) in enumerate(values)]
                               + [(float(k), b) for k, (_, b) in enumerate(values)]))
    unhashable = st.lists(st.lists(children, max_size=2), min_size=1, max_size=3).map(
        lambda keys: PairMap([([k, *key], k) for k, key in enumerate(keys)]))
    return (st.lists(children, max_size=5)
            | st.lists(children, max_size=5).map(tuple)
            | st.builds(ImproperList, st.lists(children, min_size=1, max_size=4), tails)
            | st.dictionaries(keys, children, max_size=5)
            | unhashable
            | colliding)


terms = st.recursive(leaves, containers, max_leaves=25)


def canonical(term: Any) -> Any:
    """What the decoder gives back for ``term``: PairMap pairs come out in key order."""
    if isinstance(term, PairMap):
        pairs = [(canonical(k), canonical(v)) for k, v in term.pairs]
        return PairMap(sorted(pairs, key=lambda kv: term_order_key(kv[0], exact=True)))
    if isinstance(term, dict):
        return {k: canonical(v) for k, v in term.items()}
    if isinstance(term, tuple):
        return tuple(canonical(x) for x in term)
    if isinstance(term, list):
        return [canonical(x) for x in term]
    if isinstance(term, ImproperList):
        return ImproperList([canonical(x) for x in term.items], canonical(term.tail))
    return term


FAST = settings(max_examples=120, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@FAST
@given(terms)
def test_round_trip(term: Any) -> None:
    data = encode(term)
    assert decode(data) == canonical(term)
    assert encode(decode(data)) == data
    assert compare(decode(data), term) == 0


@settings(max_examples=40, deadline=None)
@given(terms, st.sampled_from([True, 1, 9]))
def test_compressed_round_trip(term: Any, level: bool | int) -> None:
    assert decode(encode(term, compressed=level)) == canonical(term)


@settings(max_examples=50, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(terms, terms, st.binary(max_size=3))
def test_terms_back_to_back(first: Any, second: Any, junk: bytes) -> None:
    one, two = encode(first), encode(second)
    data = junk + one + two
    term, offset = decode_prefix(data, len(junk))
    assert term == canonical(first)
    assert offset == len(junk) + len(one)
    assert decode_prefix(data, offset) == (canonical(second), len(data))
    assert decode_body(data, len(junk) + 1) == (canonical(first), offset)


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    """A valid encoding, then cut, overwritten, stretched or given huge counts."""
    data = bytearray(encode(draw(terms), compressed=draw(st.sampled_from([False, False, 1]))))
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        action = draw(st.sampled_from(["cut", "byte", "insert", "huge", "tag"]))
        if action == "cut":
            del data[at:]
        elif action == "byte" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif action == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif action == "huge":
            data[at:at + 4] = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff",
                                                    b"\x00\x01\x00\x00"]))
        elif action == "tag" and at < len(data):
            data[at] = draw(st.sampled_from([*range(70, 122), 131]))
    return bytes(data)


def decodes_or_rejects(data: bytes) -> None:
    for attempt in (lambda: decode(data), lambda: decode_prefix(data),
                    lambda: decode_body(data, 1 if len(data) > 1 else 0)):
        with contextlib.suppress(ETFDecodeError):
            attempt()


@settings(max_examples=200, deadline=1000,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(damaged())
def test_damaged_input_only_raises_decode_errors(data: bytes) -> None:
    decodes_or_rejects(data)


@settings(max_examples=300, deadline=1000)
@given(st.binary(max_size=64))
def test_random_bytes_only_raise_decode_errors(data: bytes) -> None:
    decodes_or_rejects(b"\x83" + data)
