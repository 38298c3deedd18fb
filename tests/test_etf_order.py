"""Erlang's term order (the live VM checks the same orders in test_etf_oracle)."""

from __future__ import annotations

import random
import struct
from collections.abc import Sequence

import pytest

from elixirscope.etf import (
    Atom,
    BitString,
    Export,
    Fun,
    ImproperList,
    PairMap,
    Pid,
    Port,
    Reference,
    compare,
    decode,
    encode,
    sort_terms,
    term_order_key,
)

A, B = Atom("a@h"), Atom("b@h")


def closure() -> Fun:
    parts = (b"\x00" + bytes(16) + struct.pack(">II", 0, 0) + b"w\x01ma\x00a\x00"
             + encode(Pid(A, 1, 0, 0))[1:])
    fun = decode(b"\x83p" + struct.pack(">I", len(parts) + 4) + parts)
    assert isinstance(fun, Fun)
    return fun


def shuffled_sort(terms: Sequence[object], *, exact: bool = False) -> list[object]:
    copy = list(terms)
    random.Random(7).shuffle(copy)
    return sort_terms(copy, exact=exact)


def test_types_in_order() -> None:
    ordered = [
        -(10**30), -1, 0.5, 1, 2**70, Atom("a"), False, None, Atom("z"),
        Reference(A, 0, (1,)), closure(), Export(Atom("m"), Atom("f"), 1), Port(A, 1, 0),
        Pid(A, 1, 0, 0), (), (Atom("z"),), (1, 2), {}, {1: 2}, [], ImproperList([1], 2), [1],
        [1, 2], b"", BitString(b"\x00", 1), b"\x01", "\x02",
    ]
    assert shuffled_sort(ordered) == ordered


def test_numbers_compare_by_value_except_in_exact_order() -> None:
    assert compare(1, 1.0) == 0
    assert compare(2, 1.5) == 1
    assert compare(1, 1.0, exact=True) == -1
    assert compare(2, 1.5, exact=True) == -1
    assert compare(2**64, 1.0e30) == -1
    assert shuffled_sort([3.5, 3, 2, 10.0, -1.5]) == [-1.5, 2, 3, 3.5, 10.0]
    assert shuffled_sort([3.5, 3, 2, 10.0, -1.5], exact=True) == [2, 3, -1.5, 3.5, 10.0]


def test_exactness_reaches_inside_map_keys_only() -> None:
    assert compare({1: Atom("a")}, {1.0: Atom("a")}) == -1
    assert compare({2: Atom("a")}, {1.0: Atom("a")}) == -1
    assert compare({Atom("k"): 1}, {Atom("k"): 1.0}) == 0
    assert compare({Atom("k"): (1,)}, {Atom("k"): (1.0,)}) == 0
    assert compare({(1,): 0}, {(1.0,): 0}) == -1


def test_tuples_by_size_then_elements() -> None:
    assert shuffled_sort([(1, 1), (9,), (1, 2), (0, 5)]) == [(9,), (0, 5), (1, 1), (1, 2)]


def test_maps_by_size_then_keys_then_values() -> None:
    maps = [{Atom("b"): 0}, {Atom("a"): 9}, {Atom("a"): 1}, {1: 1, 2: 2}, {}]
    assert shuffled_sort(maps) == [{}, {Atom("a"): 1}, {Atom("a"): 9}, {Atom("b"): 0},
                                   {1: 1, 2: 2}]
    # Exact order puts the integer 2 before the float 1.0.
    assert compare(PairMap([(1, 0), (1.0, 0)]), {1: 0, 2: 0}) == 1


def test_lists_cell_by_cell_with_tails() -> None:
    lists = [[1, 2], ImproperList([1], 2), [1], [], ImproperList([1], b"x"), [0, 9, 9]]
    # [1 | 2] < [1] because the tails compare: a number sorts before [].
    assert shuffled_sort(lists) == [[], [0, 9, 9], ImproperList([1], 2), [1], [1, 2],
                                    ImproperList([1], b"x")]


def test_bitstrings_bit_by_bit() -> None:
    # lists:sort([<<1:1>>, <<128>>, <<1:3>>, <<>>, <<0:1>>, <<255>>, <<1,2>>]) on OTP 25.
    expected = [b"", BitString(b"\x00", 1), b"\x01\x02", BitString(b"\x20", 3),
                BitString(b"\x80", 1), b"\x80", b"\xff"]
    assert shuffled_sort(expected) == expected
    assert compare("é", "é".encode()) == 0


def test_identifiers_in_the_order_otp_25_uses() -> None:
    pids = [Pid(n, i, s, c) for n in (A, B) for c in (1, 2) for i in (1, 2) for s in (0, 1)]
    assert shuffled_sort(pids) == sorted(pids, key=lambda p: (p.serial, p.id, p.node,
                                                               p.creation))
    ports = [Port(n, i, c) for n in (A, B) for c in (1, 2) for i in (1, 2)]
    assert shuffled_sort(ports) == sorted(ports, key=lambda p: (p.node, p.creation, p.id))
    refs = [Reference(A, 1, ids) for ids in [(1, 2, 3), (2, 1, 3), (1,), (5,), (0, 0, 0, 1)]]
    assert shuffled_sort(refs) == [Reference(A, 1, ids) for ids in
                                   [(1,), (5,), (2, 1, 3), (1, 2, 3), (0, 0, 0, 1)]]


def test_keys_are_total_on_exact_equality() -> None:
    assert term_order_key((1, [Atom("a")]), exact=True) == term_order_key(
        (1, [Atom("a")]), exact=True)
    assert term_order_key(1, exact=True) != term_order_key(1.0, exact=True)


def test_non_terms_are_rejected() -> None:
    with pytest.raises(TypeError):
        term_order_key({1, 2})
