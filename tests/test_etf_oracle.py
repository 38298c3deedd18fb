"""The codec against the real VM: one ``erl`` process re-encodes our corpus, makes terms of
its own (pids, refs, ports, funs, big maps, ...), sorts everything, and we compare bytes.

Our encoding is compared with ``term_to_binary(T, [{minor_version, 2}])``: UTF-8 atoms, the
form the distribution uses and OTP 26+ writes by default. OTP 25's default writes Latin-1
``ATOM_EXT``; we decode that form too (the ``made_v1`` entries).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path
from typing import Any

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
    decode,
    encode,
    term_order_key,
)

pytestmark = pytest.mark.node

A = Atom
NODE = A("a@h")

ORACLE = r"""
-module(es_etf_oracle).
-export([run/2]).

run(InPath, OutPath) ->
    {ok, In} = file:read_file(InPath),
    Ours = frames(In, 0),
    {ok, Out} = file:open(OutPath, [write, binary]),
    Put = fun(Key, Bin) -> ok = file:write(Out, [Key, $\s, binary:encode_hex(Bin), $\n]) end,
    Decoded = [begin
                   Id = integer_to_list(I),
                   try binary_to_term(B) of
                       T ->
                           Put(["term ", Id], term_to_binary(T, [{minor_version, 2}])),
                           Put(["compressed ", Id],
                               term_to_binary(T, [compressed, {minor_version, 2}])),
                           {I, Canonical, T}
                   catch _:_ ->
                       Put(["badarg ", Id], <<>>),
                       {I, false, badarg}
                   end
               end || {I, Canonical, B} <- Ours],
    Keys = [{T, I} || {I, true, T} <- Decoded],
    [Put(["chunk ", integer_to_list(K)], term_to_binary(maps:from_list(C), [{minor_version, 2}]))
     || {K, C} <- chunks(Keys, 32, 0)],
    Made = made(),
    [Put(["made ", atom_to_list(N)], term_to_binary(T, [{minor_version, 2}])) || {N, T} <- Made],
    [Put(["made_v1 ", atom_to_list(N)], term_to_binary(T)) || {N, T} <- Made],
    All = [T || {_, _, T} <- Decoded] ++ [T || {_, T} <- Made],
    Sorted = [I || {_, I} <- lists:sort(lists:zip(All, lists:seq(0, length(All) - 1)))],
    Put("sorted", list_to_binary(lists:join(",", [integer_to_list(I) || I <- Sorted]))),
    ok = file:close(Out).

frames(<<>>, _) -> [];
frames(<<Canonical, Size:32, B:Size/binary, Rest/binary>>, I) ->
    [{I, Canonical =:= 1, B} | frames(Rest, I + 1)].

chunks([], _, _) -> [];
chunks(L, N, K) when length(L) =< N -> [{K, L}];
chunks(L, N, K) -> {H, T} = lists:split(N, L), [{K, H} | chunks(T, N, K + 1)].

made() ->
    Self = self(),
    Port = case erlang:ports() of [P | _] -> P; [] -> open_port({spawn, "cat"}, []) end,
    [{pid, Self}, {ref, make_ref()}, {alias, alias()},
     {monitor, erlang:monitor(process, Self)}, {port, Port},
     {export, fun lists:map/2}, {closure, fun() -> ok end},
     {closure_free, fun(Y) -> {Self, Y} end},
     {big, 1 bsl 100}, {neg_big, -(1 bsl 100)}, {huge, 1 bsl 3000}, {float, 1.5},
     {map40, maps:from_list([{list_to_atom("k" ++ integer_to_list(I)), I}
                             || I <- lists:seq(1, 40)])},
     {bits, <<1:3>>}, {improper, [1, 2 | 3]},
     {unicode_atoms, ['héllo', '日本語', 'Elixir.Ünïcode', ok]},
     {charlist, "hello"}, {utf8_binary, <<"héllo"/utf8>>},
     {nested, {ok, [#{a => {1, 2.0}, <<"k">> => [x]}], <<"x">>, self()}},
     {large_tuple, list_to_tuple(lists:seq(1, 300))},
     {long_charlist, lists:duplicate(70000, $a)},
     {struct, #{'__struct__' => 'Elixir.User', name => <<"ann">>, age => 33}}].
"""

LARGE_MAP = {A(f"k{i}"): i for i in range(1, 41)}

# (term, canonical): canonical terms have exactly one encoding the VM can write.
CORPUS: list[tuple[Any, bool]] = [(term, True) for term in [
    0, 255, 256, -1, -256, 2**31 - 1, -(2**31), 2**31, -(2**31) - 1, 2**64, -(2**64),
    2**2040 - 1, 2**2040, -(2**3000),
    -0.0, 1.5, -2.25, 1e300, 5e-324, 0.1,
    A("ok"), A(""), A("Elixir.MyApp.Worker"), A("héllo"), A("日本"), A("a" * 255),
    A("é" * 255), A("nil"), True, False,
    b"", b"hello", bytes(range(256)), b"x" * 300, bytes(i % 7 for i in range(1, 22)),
    BitString(b"\x20", 3), BitString(b"\xff\x80", 1), BitString(b"\x01\x02\xfe", 7),
    [104, 105], [0] * 10, list(range(256)), [7] * 65535, [7] * 65536, [1, 300],
    [A("a"), (1,)], [[1], [[2]], []], ImproperList([1, 2], A("t")),
    ImproperList([A("a")], b"tail"), ImproperList([1], 2.5), ImproperList([[]], ()),
    (), (1,), tuple(range(300)), ((A("ok"), [1.5]), {A("x"): ()}),
    {}, {A("a"): 1}, PairMap([(1, A("a")), (1.0, A("b"))]),
    PairMap([(2, 0), (1.5, 1), (True, 2), (A("a"), 3), ((1,), 4), ((1.0,), 5), ([], 6),
             ([1], 7), (b"k", 8), (BitString(b"\x80", 1), 9), ({}, 10), ({1: 2}, 11),
             (Pid(NODE, 1, 0, 0), 12), (Reference(NODE, 0, (1, 2, 3)), 13),
             (Port(NODE, 1, 0), 14), (Export(A("m"), A("f"), 0), 15)]),
    {A(f"key{i:02}"): i for i in range(32)},
    {A("__struct__"): A("Elixir.User"), A("name"): b"ann", A("roles"): [A("admin")]},
    Pid(NODE, 1, 2, 3), Pid(A("ö@höst"), 2**32 - 1, 2**32 - 1, 2**32 - 1), Pid(NODE, 0, 1, 0),
    Pid(A("b@h"), 1, 0, 0), Pid(NODE, 2, 0, 0), Pid(NODE, 1, 0, 5),
    Port(NODE, 5, 1), Port(NODE, 2**40, 2), Port(A("b@h"), 1, 1), Port(NODE, 6, 0),
    Reference(NODE, 3, (1, 2, 3)), Reference(NODE, 3, (1, 2, 3, 4, 5)), Reference(NODE, 3, (9,)),
    Reference(NODE, 3, (2, 1, 3)), Reference(A("b@h"), 0, (1, 1, 1)),
    Export(A("lists"), A("map"), 2), Export(A("Elixir.Enum"), A("map"), 2),
    Export(A("lists"), A("map"), 3),
]] + [(LARGE_MAP, False), ({A("big"): LARGE_MAP}, False)]


def expected_decode(term: Any) -> Any:
    if isinstance(term, PairMap):
        return PairMap(sorted(term.pairs, key=lambda kv: term_order_key(kv[0], exact=True)))
    return term


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    erl = shutil.which("erl")
    if erl is None:
        pytest.skip("needs Erlang/OTP (erl)")
    tmp = tmp_path_factory.mktemp("etf_oracle")
    source = tmp / "es_etf_oracle.erl"
    source.write_text(ORACLE, encoding="utf-8")
    ours, theirs = tmp / "ours.bin", tmp / "theirs.txt"
    ours.write_bytes(b"".join(
        struct.pack(">BI", canonical, len(data)) + data
        for term, canonical in CORPUS for data in [encode(term)]))
    script = (f'{{ok, M, Bin}} = compile:file("{source}", [binary, report]), '
              f'{{module, M}} = code:load_binary(M, "{source}", Bin), '
              f'ok = M:run("{ours}", "{theirs}"), halt().')
    subprocess.run([erl, "-noshell", "-eval", script], check=True, timeout=60,
                   capture_output=True)
    return parse(theirs)


def parse(path: Path) -> dict[str, bytes]:
    results = {}
    for line in path.read_text().splitlines():
        key, _, hex_bytes = line.rpartition(" ")
        results[key] = bytes.fromhex(hex_bytes)
    return results


def test_corpus_is_free_of_exact_duplicates() -> None:
    keys = [term_order_key(term, exact=True) for term, _ in CORPUS]
    assert len(set(keys)) == len(keys)


def test_vm_accepts_everything_we_encode(vm: dict[str, bytes]) -> None:
    assert [key for key in vm if key.startswith("badarg")] == []


def test_our_encoding_is_the_vms(vm: dict[str, bytes]) -> None:
    for index, (term, canonical) in enumerate(CORPUS):
        if canonical:
            assert vm[f"term {index}"] == encode(term), term


def test_our_compressed_encoding_is_the_vms(vm: dict[str, bytes]) -> None:
    compressed = 0
    for index, (term, canonical) in enumerate(CORPUS):
        if canonical:
            assert vm[f"compressed {index}"] == encode(term, compressed=True), term
            compressed += vm[f"compressed {index}"][1] == 80
    assert compressed >= 5


def test_we_decode_what_the_vm_writes_back(vm: dict[str, bytes]) -> None:
    for index, (term, _) in enumerate(CORPUS):
        assert decode(vm[f"term {index}"]) == expected_decode(term), term
        assert decode(vm[f"compressed {index}"]) == expected_decode(term), term


def test_large_maps_need_only_the_same_content(vm: dict[str, bytes]) -> None:
    index = next(i for i, (term, _) in enumerate(CORPUS) if term is LARGE_MAP)
    theirs = vm[f"term {index}"]
    assert theirs != encode(LARGE_MAP)  # the VM's hash order, not term order
    assert decode(theirs) == LARGE_MAP
    assert decode(vm["made map40"]) == LARGE_MAP


def test_map_keys_in_the_vms_exact_order(vm: dict[str, bytes]) -> None:
    keys = [(term, index) for index, (term, canonical) in enumerate(CORPUS) if canonical]
    chunks = [keys[i:i + 32] for i in range(0, len(keys), 32)]
    for number, chunk in enumerate(chunks):
        assert vm[f"chunk {number}"] == encode(PairMap(chunk))
    assert f"chunk {len(chunks)}" not in vm


def test_terms_the_vm_made_round_trip_byte_for_byte(vm: dict[str, bytes]) -> None:
    made = {key.removeprefix("made "): data for key, data in vm.items()
            if key.startswith("made ")}
    assert len(made) == 22
    for name, data in made.items():
        term = decode(data)
        if name != "map40":
            assert encode(term) == data, name
        assert decode(encode(term)) == term, name
    for name in ("ref", "alias", "monitor"):
        assert isinstance(decode(made[name]), Reference)
    assert decode(made["huge"]) == 2**3000
    assert decode(made["bits"]) == BitString(b"\x20", 3)
    assert decode(made["improper"]) == ImproperList([1, 2], 3)
    assert decode(made["unicode_atoms"]) == [A("héllo"), A("日本語"), A("Elixir.Ünïcode"),
                                             A("ok")]
    assert decode(made["long_charlist"]) == [97] * 70000


def test_funs_the_vm_made(vm: dict[str, bytes]) -> None:
    pid = decode(vm["made pid"])
    assert isinstance(pid, Pid)
    assert isinstance(decode(vm["made port"]), Port)
    assert decode(vm["made export"]) == Export(A("lists"), A("map"), 2)
    for name, arity, free in (("closure", 0, ()), ("closure_free", 1, (pid,))):
        fun = decode(vm[f"made {name}"])
        assert isinstance(fun, Fun)
        assert (fun.module, fun.arity, fun.pid, fun.free_vars) == (
            A("es_etf_oracle"), arity, pid, free)
        assert b"\x83" + fun.raw == vm[f"made {name}"]


def fun_fields(fun: Fun) -> tuple[Any, ...]:
    return (fun.module, fun.arity, fun.uniq, fun.index, fun.old_index, fun.old_uniq, fun.pid,
            fun.free_vars)


def test_we_read_otp25_default_encoding(vm: dict[str, bytes]) -> None:
    for key, data in vm.items():
        if key.startswith("made_v1 "):
            old, new = decode(data), decode(vm[key.replace("made_v1", "made")])
            if isinstance(new, Fun):
                # A Fun is its bytes; the same closure with Latin-1 atoms is other bytes.
                assert isinstance(old, Fun)
                assert old != new
                assert fun_fields(old) == fun_fields(new)
            else:
                assert old == new, key
    assert vm["made_v1 unicode_atoms"] != vm["made unicode_atoms"]  # Latin-1 ATOM_EXT


def test_term_order_is_the_vms(vm: dict[str, bytes]) -> None:
    made = [decode(data) for key, data in vm.items() if key.startswith("made ")]
    everything = [expected_decode(term) for term, _ in CORPUS] + made
    ours = sorted(range(len(everything)), key=lambda i: (term_order_key(everything[i]), i))
    theirs = [int(i) for i in vm["sorted"].decode().split(",")]
    assert [everything[i] for i in ours] == [everything[i] for i in theirs]
    assert ours == theirs
