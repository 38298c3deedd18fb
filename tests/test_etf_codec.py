"""The ETF codec on fixed vectors: bytes the VM wrote, Python values, and hostile input."""

from __future__ import annotations

import collections
import enum
import struct
import time
import zlib

import pytest

from elixirscope.etf import (
    Atom,
    BitString,
    ETFDecodeError,
    ETFEncodeError,
    Export,
    Fun,
    ImproperList,
    PairMap,
    Pid,
    Port,
    Reference,
    decode,
    decode_body,
    decode_prefix,
    encode,
    encode_body,
)

NODE = Atom("a@h")

# term_to_binary(T, [{minor_version, 2}]) on OTP 25.
VM_VECTORS = [
    (255, "8361FF"),
    (256, "836200000100"),
    (-1, "8362FFFFFFFF"),
    (2147483647, "83627FFFFFFF"),
    (2147483648, "836E040000000080"),
    (-2147483649, "836E040101000080"),
    (1.5, "83463FF8000000000000"),
    (Atom("ok"), "8377026F6B"),
    (Atom("héllo"), "83770668C3A96C6C6F"),
    (True, "83770474727565"),
    ((), "836800"),
    ([], "836A"),
    ([104, 105], "836B00026869"),
    ([1, 300], "836C000000026101620000012C6A"),
    (ImproperList([1], Atom("a")), "836C000000016101770161"),
    (b"hi", "836D000000026869"),
    (BitString(b"\x20", 3), "834D000000010320"),
    (PairMap([(1, Atom("x")), (1.0, Atom("y")), (Atom("a"), 2), (Atom("b"), 1)]),
     "8374000000046101770178463FF000000000000077017977016161027701626101"),
    (Pid(NODE, 1, 2, 3), "83587703614068000000010000000200000003"),
    (Port(NODE, 5, 3), "835977036140680000000500000003"),
    (Port(NODE, 2**32, 3), "83787703614068000000010000000000000003"),
    (Reference(NODE, 3, (1, 2, 3)), "835A0003770361406800000003000000010000000200000003"),
    (Export(Atom("lists"), Atom("map"), 2), "837177056C6973747377036D61706102"),
]

# term_to_binary(fun() -> ok end) evaluated in an erl shell on OTP 25.
VM_CLOSURE = bytes([
    131, 112, 0, 0, 0, 143, 0, 6, 83, 97, 170, 70, 21, 144, 209, 189, 241, 235, 98, 209, 166,
    235, 8, 0, 0, 0, 43, 0, 0, 0, 1, 100, 0, 8, 101, 114, 108, 95, 101, 118, 97, 108, 97, 43,
    98, 0, 50, 155, 13, 88, 100, 0, 13, 110, 111, 110, 111, 100, 101, 64, 110, 111, 104, 111,
    115, 116, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 104, 6, 97, 11, 106, 100, 0, 4, 110, 111, 110,
    101, 100, 0, 4, 110, 111, 110, 101, 116, 0, 0, 0, 0, 108, 0, 0, 0, 1, 104, 5, 100, 0, 6, 99,
    108, 97, 117, 115, 101, 97, 11, 106, 106, 108, 0, 0, 0, 1, 104, 3, 100, 0, 4, 97, 116, 111,
    109, 97, 11, 100, 0, 2, 111, 107, 106, 106,
])


def error_of(data: bytes, **limits: int) -> ETFDecodeError:
    with pytest.raises(ETFDecodeError) as info:
        decode(data, **limits)
    return info.value


# --- encoding ---------------------------------------------------------------------------

@pytest.mark.parametrize(("term", "hex_bytes"), VM_VECTORS)
def test_encode_matches_the_vm(term: object, hex_bytes: str) -> None:
    assert encode(term).hex().upper() == hex_bytes


@pytest.mark.parametrize(("term", "hex_bytes"), VM_VECTORS)
def test_decode_reads_the_vm(term: object, hex_bytes: str) -> None:
    assert decode(bytes.fromhex(hex_bytes)) == term


@pytest.mark.parametrize(("value", "tag"), [
    (0, 97), (255, 97), (256, 98), (-1, 98), (2**31 - 1, 98), (-(2**31), 98),
    (2**31, 110), (-(2**31) - 1, 110), (2**2040 - 1, 110), (2**2040, 111), (-(2**2040), 111),
])
def test_integers_take_the_smallest_form(value: int, tag: int) -> None:
    data = encode(value)
    assert data[1] == tag
    assert decode(data) == value


def test_lists_of_bytes_are_strings_up_to_65535_elements() -> None:
    assert encode([7] * 65535)[1] == 107
    assert encode([7] * 65536)[1] == 108
    assert encode([256])[1] == 108
    assert encode([True]) == bytes.fromhex("836c00000001770474727565" "6a")
    assert decode(encode([7] * 65536)) == [7] * 65536


def test_python_values_without_their_own_term() -> None:
    assert encode("héllo") == encode("héllo".encode())
    assert encode(None) == encode(Atom("nil"))
    assert encode(bytearray(b"ab")) == encode(memoryview(b"ab")) == encode(b"ab")
    assert encode(False) == b"\x83w\x05false"


def test_improper_lists_nested_in_tails_are_one_list() -> None:
    nested = ImproperList([1], ImproperList([2], Atom("t")))
    assert encode(nested) == encode(ImproperList([1, 2], Atom("t")))


def test_subclasses_of_builtin_types_encode_as_their_base() -> None:
    class Colour(enum.IntEnum):
        RED = 300

    point = collections.namedtuple("point", "x y")
    assert encode(Colour.RED) == encode(300)
    assert encode(point(1, 2)) == encode((1, 2))
    assert encode(collections.OrderedDict([(Atom("b"), 1), (Atom("a"), 2)])) == encode(
        {Atom("a"): 2, Atom("b"): 1})


def test_small_maps_list_keys_in_exact_term_order() -> None:
    term = {(1,): 0, Atom("z"): 1, 2.5: 2, 7: 3, b"b": 4}
    keys_in_order = [7, 2.5, Atom("z"), (1,), b"b"]
    expected = b"\x83t" + struct.pack(">I", 5) + b"".join(
        encode_body(k) + encode_body(term[k]) for k in keys_in_order)
    assert encode(term) == expected


def test_pair_maps_keep_keys_python_would_merge() -> None:
    term = PairMap([(1.0, Atom("b")), (1, Atom("a")), (True, Atom("c"))])
    decoded = decode(encode(term))
    assert decoded == PairMap([(1, Atom("a")), (1.0, Atom("b")), (True, Atom("c"))])


def test_compressed_encoding() -> None:
    term = [Atom("ok")] * 200
    packed = encode(term, compressed=True)
    assert packed[:2] == b"\x83P"
    assert struct.unpack(">I", packed[2:6])[0] == len(encode_body(term))
    assert zlib.decompress(packed[6:]) == encode_body(term)
    assert decode(packed) == term
    assert encode(term, compressed=9) == b"\x83P" + packed[2:6] + zlib.compress(
        encode_body(term), 9)
    # Like the VM: compression that saves nothing is not used, and breaking even is enough.
    assert encode(b"x", compressed=True) == encode(b"x")
    even = bytes(i % 7 for i in range(1, 22))
    assert encode(even, compressed=True)[:2] == b"\x83P"
    assert len(encode(even, compressed=True)) == len(encode(even))
    assert encode(term, compressed=False) == encode(term)


@pytest.mark.parametrize("level", [10, -1, 1.5, "6"])
def test_compression_level_must_be_1_to_9(level: object) -> None:
    with pytest.raises(ValueError, match="zlib level"):
        encode([1], compressed=level)  # type: ignore[arg-type]


@pytest.mark.parametrize(("value", "words"), [
    ({1, 2}, "set"),
    (object(), "object"),
    (1j, "complex"),
    (float("nan"), "nan"),
    (float("inf"), "inf"),
    pytest.param(2 ** (8 * 4_194_296), "larger than the VM allows", id="huge-int"),
    (Atom("a" * 256), "at most 255"),
    ("\udc80", "surrogates"),
    (Atom("\udc80"), "surrogates"),
    (Reference(NODE, 0, (1, 2, 3, 4, 5, 6)), "1 to 5"),
    (Reference(NODE, 0, ()), "1 to 5"),
    (Pid(NODE, -1, 0, 0), "Pid field is outside its encoded range"),
    (Pid(NODE, 2**32, 0, 0), "Pid field is outside its encoded range"),
    pytest.param(Port(NODE, 10**5000, 0), "Port field", id="huge-port"),
    (Export(Atom("m"), Atom("f"), 256), "arity"),
    (Pid(42, 1, 1, 1), "atom, not int"),  # type: ignore[arg-type]
    ({Atom("k"): frozenset()}, "frozenset"),
    (PairMap([(frozenset(), 1), (1, 2)]), "map key"),
])
def test_values_without_a_term_form_raise(value: object, words: str) -> None:
    with pytest.raises(ETFEncodeError, match=words):
        encode(value)


def test_encoding_a_very_deep_term_raises_encode_error() -> None:
    term: object = ()
    for _ in range(100_000):
        term = (term,)
    with pytest.raises(ETFEncodeError, match="nested too deeply"):
        encode(term)


# --- decoding -----------------------------------------------------------------------------

def test_decode_accepts_the_latin1_and_old_forms() -> None:
    assert decode(b"\x83d\x00\x02ok") == Atom("ok")
    assert decode(b"\x83d\x00\x05false") is False
    assert decode(b"\x83s\x01\xe9") == Atom("é")
    assert decode(b"\x83v\x00\x02\xc3\xa9") == Atom("é")
    assert decode(b"\x83c" + b"1.50000000000000000000e+00".ljust(31, b"\0")) == 1.5
    assert decode(b"\x83gw\x03a@h" + struct.pack(">IIB", 1, 2, 3)) == Pid(NODE, 1, 2, 3)
    assert decode(b"\x83fw\x03a@h" + struct.pack(">IB", 5, 3)) == Port(NODE, 5, 3)
    assert decode(b"\x83ew\x03a@h" + struct.pack(">IB", 7, 3)) == Reference(NODE, 3, (7,))
    assert decode(b"\x83r\x00\x02w\x03a@h\x03" + struct.pack(">II", 7, 8)) == Reference(
        NODE, 3, (7, 8))
    assert decode(b"\x83k\x00\x00") == []
    # Any sign byte other than 0 means negative, as in the VM.
    assert decode(b"\x83n\x01\x02\x05") == -5
    assert decode(b"\x83n\x00\x00") == 0


def test_atom_true_and_false_are_bools_and_atoms_are_shared() -> None:
    assert decode(b"\x83w\x04true") is True
    assert decode(b"\x83v\x00\x04true") is True
    assert decode(b"\x83w\x02ok") is decode(b"\x83d\x00\x02ok")


def test_node_names_stay_atoms_even_when_they_read_true() -> None:
    pid = decode(b"\x83Xw\x04true" + struct.pack(">III", 1, 2, 3))
    assert pid == Pid(Atom("true"), 1, 2, 3)
    assert type(pid.node) is Atom


def test_lists_with_odd_tails() -> None:
    assert decode(b"\x83l\x00\x00\x00\x00w\x01a") == Atom("a")
    assert decode(b"\x83l\x00\x00\x00\x00j") == []
    # [1 | [2]] and [1 | [2 | a]] written cell by cell, which the VM accepts.
    assert decode(b"\x83l\x00\x00\x00\x01a\x01l\x00\x00\x00\x01a\x02j") == [1, 2]
    assert decode(b"\x83l\x00\x00\x00\x01a\x01l\x00\x00\x00\x01a\x02w\x01a") == ImproperList(
        [1, 2], Atom("a"))


def test_bit_binaries() -> None:
    assert decode(b"\x83M\x00\x00\x00\x00\x00") == b""
    assert decode(b"\x83M\x00\x00\x00\x01\x08\x05") == b"\x05"
    # Bits past the declared count are dropped, as the VM does.
    assert decode(b"\x83M\x00\x00\x00\x01\x03\xff") == BitString(b"\xe0", 3)


def test_maps_whose_keys_python_merges_or_cannot_hash() -> None:
    assert decode(b"\x83t\x00\x00\x00\x02a\x01w\x01aF?\xf0\x00\x00\x00\x00\x00\x00w\x01b") == (
        PairMap([(1, Atom("a")), (1.0, Atom("b"))]))
    assert decode(encode(PairMap([([1], 2)]))) == PairMap([([1], 2)])
    assert decode(encode(PairMap([({1: 2}, 3), ((1, [2]), 4)]))) == PairMap(
        [((1, [2]), 4), ({1: 2}, 3)])


def test_closures_round_trip_byte_for_byte() -> None:
    fun = decode(VM_CLOSURE)
    assert isinstance(fun, Fun)
    assert (fun.module, fun.arity, fun.index, fun.old_index) == (Atom("erl_eval"), 0, 43, 43)
    assert fun.uniq == VM_CLOSURE[7:23]
    assert fun.pid == Pid(Atom("nonode@nohost"), 9, 0, 0)
    assert len(fun.free_vars) == 1
    assert fun.raw == VM_CLOSURE[1:]
    assert encode(fun) == VM_CLOSURE
    assert decode(encode((fun, [fun]))) == (fun, [fun])


def test_decode_prefix_and_body_walk_terms_back_to_back() -> None:
    first, second = encode((Atom("send"), 1)), encode(b"payload")
    data = b"junk" + first + second
    term, offset = decode_prefix(data, 4)
    assert (term, offset) == ((Atom("send"), 1), 4 + len(first))
    assert decode_prefix(data, offset) == (b"payload", len(data))
    assert decode_body(encode_body([1, 2]) + b"rest") == ([1, 2], 5)
    packed = encode([Atom("ok")] * 100, compressed=True)
    assert decode_prefix(packed + first) == ([Atom("ok")] * 100, len(packed))


def test_decode_takes_any_buffer() -> None:
    data = encode({Atom("k"): [1, b"v"]})
    assert decode(bytearray(data)) == decode(memoryview(data)) == {Atom("k"): [1, b"v"]}
    assert decode_prefix(memoryview(b"xx" + data)[2:]) == ({Atom("k"): [1, b"v"]}, len(data))


def test_decode_rejects_wrong_arguments() -> None:
    with pytest.raises(TypeError):
        decode("\x83a\x01")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        decode_prefix(b"\x83a\x01", -1)


@pytest.mark.parametrize(("data", "offset", "words"), [
    (b"", 0, "the data ends here"),
    (b"\x83", 1, "where a term should start"),
    (b"\x84a\x01", 0, "version byte"),
    (b"\x83a\x01\x00", 3, "1 unexpected bytes"),
    (b"\x83a", 1, "SMALL_INTEGER_EXT"),
    (b"\x83b\x00\x00", 1, "INTEGER_EXT"),
    (b"\x83m\x00\x00\x00\x05ab", 1, "BINARY_EXT"),
    (b"\x83w\x05ab", 1, "SMALL_ATOM_UTF8_EXT"),
    (b"\x83d\x00\x05ab", 1, "ATOM_EXT"),
    (b"\x83h\x02a\x01", 5, "where a term should start"),
    (b"\x83i\xff\xff\xff\xffa\x01", 1, "4294967295 elements"),
    (b"\x83l\xff\xff\xff\xffa\x01", 1, "4294967295 elements"),
    (b"\x83t\xff\xff\xff\xffa\x01", 1, "4294967295 elements"),
    (b"\x83h\x05a\x01", 1, "5 elements"),
    (b"\x83w\x02\xff\xfe", 1, "not valid UTF-8"),
    (b"\x83v\x01\x00" + b"a" * 256, 1, "256 characters"),
    (b"\x83d\x01\x00" + b"a" * 256, 1, "256 characters"),
    (b"\x83M\x00\x00\x00\x01\x00\x05", 1, "0 bits"),
    (b"\x83M\x00\x00\x00\x01\x09\x05", 1, "9 bits"),
    (b"\x83M\x00\x00\x00\x00\x03", 1, "3 bits"),
    (b"\x83o\xff\xff\xff\xff\x00", 1, "larger than the VM allows"),
    (b"\x83o\x00\x00\x10\x00\x00\x01", 1, "LARGE_BIG_EXT"),
    (b"\x83n\x05\x00\x01", 1, "SMALL_BIG_EXT"),
    (b"\x83F\x7f\xf0\x00\x00\x00\x00\x00\x00", 1, "not a finite number"),
    (b"\x83F\x7f\xf8\x00\x00\x00\x00\x00\x00", 1, "not a finite number"),
    (b"\x83c" + b"inf".ljust(31, b"\0"), 1, "not a finite number"),
    (b"\x83c" + b"x1.5".ljust(31, b"\0"), 1, "does not hold a number"),
    (b"\x83t\x00\x00\x00\x02a\x01a\x02a\x01a\x03", 14, "duplicate key"),
    (b"\x83Xa\x01\x00\x00\x00\x01\x00\x00\x00\x01\x00\x00\x00\x01", 2, "expected an atom"),
    (b"\x83Xw\x03a@h\x00\x00\x00\x01", 1, "NEW_PID_EXT"),
    (b"\x83Z\x00\x00w\x01a\x00\x00\x00\x01", 1, "0 id words"),
    (b"\x83Z\x00\x06w\x01a\x00\x00\x00\x01" + bytes(24), 1, "6 id words"),
    (b"\x83Z\x00\x03w\x01a\x00\x00\x00\x01" + bytes(8), 1, "NEWER_REFERENCE_EXT"),
    (b"\x83qw\x01mw\x01fb\x00\x00\x00\x01", 8, "arity must be a SMALL_INTEGER_EXT"),
    (b"\x83R\x01", 1, "ATOM_CACHE_REF"),
    (b"\x83y\x00\x00", 1, "node-local"),
    (b"\x83u\x00\x00", 1, "FUN_EXT (117) is not supported"),
    (b"\x83\x01", 1, "unknown tag 1"),
    (b"\x83h\x01\x83a\x01", 3, "version byte (131) inside a term"),
    (b"\x83h\x01P\x00\x00\x00\x01", 3, "may only follow the version byte"),
    (VM_CLOSURE[:-1], 1, "do not fit"),
    (VM_CLOSURE[:5] + bytes([VM_CLOSURE[5] + 1]) + VM_CLOSURE[6:] + b"j", 1, "parts take"),
])
def test_malformed_input_names_the_offset(data: bytes, offset: int, words: str) -> None:
    error = error_of(data)
    assert error.offset == offset
    assert words in str(error)


def compressed(body: bytes, declared: int | None = None) -> bytes:
    size = len(body) if declared is None else declared
    return b"\x83P" + struct.pack(">I", size) + zlib.compress(body)


@pytest.mark.parametrize(("data", "words"), [
    (compressed(b"a\x01", declared=3), "declares 3 bytes but holds 2"),
    (compressed(b"a\x01", declared=1), "holds more than its declared 1"),
    (compressed(b"a\x01", declared=0), "declares 0 bytes"),
    (compressed(b"a\x01a\x02"), "2 unexpected bytes"),
    (compressed(b"a\x01")[:-3], "truncated"),
    (b"\x83P\x00\x00\x00\x02garbage", "invalid zlib data"),
    (b"\x83P\x00\x00", "COMPRESSED_EXT (80) header"),
    (compressed(b"h\x02a\x01"), "where a term should start (at byte 4 of the decompressed"),
    (compressed(b"\x00" * 100), "unknown tag 0 is not supported (at byte 0"),
    (b"\x83P\xff\xff\xff\xff" + zlib.compress(b"a\x01"), "more than the limit"),
])
def test_malformed_compressed_terms(data: bytes, words: str) -> None:
    error = error_of(data)
    assert error.offset == 1
    assert words in str(error)


def test_compression_bombs_stop_at_the_declared_size() -> None:
    bomb = zlib.compress(bytes(32 * 1024 * 1024), 1)
    started = time.perf_counter()
    error = error_of(b"\x83P" + struct.pack(">I", 1000) + bomb)
    assert "holds more than its declared 1000" in str(error)
    error = error_of(b"\x83P" + struct.pack(">I", 2**20) + bomb, max_decompressed=2**16)
    assert "more than the limit of 65536" in str(error)
    assert time.perf_counter() - started < 1.0


@pytest.mark.parametrize(("opener", "closer"), [
    (b"h\x01", b""),
    (b"l\x00\x00\x00\x01", b"j"),
    (b"t\x00\x00\x00\x01a\x01", b""),
])
def test_nesting_is_limited_without_recursion_errors(opener: bytes, closer: bytes) -> None:
    def nested(depth: int) -> bytes:
        return b"\x83" + opener * depth + b"j" + closer * depth

    assert "nested deeper than the limit of 512" in str(error_of(nested(513)))
    assert decode(nested(512)) is not None
    assert "limit of 10" in str(error_of(nested(200_000), max_depth=10))
    assert decode(nested(50_000), max_depth=50_000) is not None


def test_funs_nested_in_funs_stop_cleanly() -> None:
    free = encode_body(Pid(NODE, 1, 0, 0))
    data = b"j"
    for _ in range(2000):
        inner = (b"\x00" + bytes(16) + struct.pack(">II", 0, 1) + b"w\x01ma\x00a\x00" + free
                 + data)
        data = b"p" + struct.pack(">I", len(inner) + 4) + inner
    assert "nested too deeply" in str(error_of(b"\x83" + data, max_depth=100_000))
    assert "nested" in str(error_of(b"\x83" + data))
    assert "limit of 50" in str(error_of(b"\x83" + data, max_depth=50))


def test_huge_counts_fail_fast() -> None:
    started = time.perf_counter()
    for tag in (b"i", b"l", b"t"):
        error_of(b"\x83" + tag + b"\xff\xff\xff\xff" + b"a\x01" * 1000)
    error_of(b"\x83m\xff\xff\xff\xff" + b"x" * 1000)
    error_of(b"\x83o\x00\x3f\xff\xf8\x00" + b"\xff" * 1000)
    assert time.perf_counter() - started < 0.5
