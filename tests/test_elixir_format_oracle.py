"""Elixir itself is the oracle: every term here is printed by ``Kernel.inspect/2`` on
Elixir 1.14 and by ``elixirscope.elixir_format.inspect``, and the two texts must match.

One ``elixir`` process serves the whole module over stdin/stdout (4-byte length-prefixed
``term_to_binary`` frames). It answers two requests:

* ``{:inspect, [{term, opts}, ...]}``: terms built in Python, sent with our encoder.
* ``{:eval, [{expression, opts}, ...]}``: terms only the VM makes (pids, references,
  ports, closures, structs like ``Date`` or ``MapSet``, maps of more than 32 keys): the
  VM evaluates each expression and sends back the term's encoding and its inspect text.
"""

from __future__ import annotations

import math
import random
import shutil
import struct
import subprocess
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from elixirscope.elixir_format import inspect
from elixirscope.etf import (
    Atom,
    BitString,
    Export,
    ImproperList,
    PairMap,
    Pid,
    Port,
    Reference,
    decode,
    encode,
)

pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(shutil.which("elixir") is None, reason="needs Elixir"),
]

_SERVER = r"""
:ok = :io.setopts(:standard_io, binary: true, encoding: :latin1)

defmodule ElixirScope.Oracle.Account do
  defstruct [:id, :name, balance: 0]
end

defmodule ElixirScope.Oracle.Boom do
  defexception [:message, :code]
end

# Closures whose module is then unloaded: Elixir prints them without the name of the
# defining function, which is all a term carries.
defmodule ElixirScope.Oracle.Gone do
  def adder(y), do: fn x -> x + y end
  def thunk, do: fn -> :ok end
end

gone = :erlang.term_to_binary([ElixirScope.Oracle.Gone.adder(1), ElixirScope.Oracle.Gone.thunk()])
:code.purge(ElixirScope.Oracle.Gone)
:code.delete(ElixirScope.Oracle.Gone)
:code.purge(ElixirScope.Oracle.Gone)
:persistent_term.put(:gone_funs, :erlang.binary_to_term(gone))

defmodule ElixirScope.Oracle do
  def serve do
    case IO.binread(:stdio, 4) do
      <<size::32>> ->
        request = IO.binread(:stdio, size)
        reply = :erlang.term_to_binary(safely(fn -> handle(:erlang.binary_to_term(request)) end))
        IO.binwrite(:stdio, <<byte_size(reply)::32, reply::binary>>)
        serve()

      _ ->
        :ok
    end
  end

  defp handle({:inspect, cases}) do
    for {term, opts} <- cases, do: safely(fn -> inspect(term, opts) end)
  end

  defp handle({:eval, cases}) do
    for {expression, opts} <- cases do
      safely(fn ->
        {value, _} = Code.eval_string(expression)
        {:erlang.term_to_binary(value), inspect(value, opts)}
      end)
    end
  end

  defp safely(fun) do
    {:ok, fun.()}
  rescue
    error -> {:error, Exception.message(error)}
  end
end

ElixirScope.Oracle.serve()
"""

NODE = Atom("nonode@nohost")  # the oracle is not distributed; its identifiers have creation 0
# The structs the server defines, for ``known_structs`` (the server ignores that option).
KNOWN = {
    "ElixirScope.Oracle.Account": ["id", "name", "balance"],
    "ElixirScope.Oracle.Boom": ["__exception__", "message", "code"],
}

Opts = dict[str, Any]
Reply = tuple[Atom, Any]


class Oracle:
    def __init__(self) -> None:
        self._process = subprocess.Popen(
            ["elixir", "-e", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def _call(self, request: Any) -> list[Reply]:
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        data = encode(request)
        stdin.write(struct.pack(">I", len(data)) + data)
        stdin.flush()
        header = stdout.read(4)
        assert len(header) == 4, "the Elixir oracle exited"
        status, replies = decode(stdout.read(struct.unpack(">I", header)[0]))
        assert status == Atom("ok"), f"the Elixir oracle failed: {replies.decode()}"
        assert isinstance(replies, list)
        return replies

    def inspect(self, cases: Sequence[tuple[Any, Opts]]) -> list[Reply]:
        return self._call((Atom("inspect"), [(term, _elixir_opts(opts)) for term, opts in cases]))

    def evaluate(self, cases: Sequence[tuple[str, Opts]]) -> list[Reply]:
        return self._call(
            (Atom("eval"), [(expr.encode(), _elixir_opts(opts)) for expr, opts in cases]))

    def close(self) -> None:
        assert self._process.stdin is not None
        self._process.stdin.close()  # the server stops at end of input
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _elixir_opts(opts: Opts) -> list[tuple[Atom, Any]]:
    pairs = []
    for name in ("limit", "printable_limit", "charlists"):
        if name in opts:
            value = opts[name]
            pairs.append((Atom(name), Atom("infinity") if value is None else
                          Atom(value) if isinstance(value, str) else value))
    return pairs


def _ours(term: Any, opts: Opts) -> str:
    return inspect(term, **opts)


@pytest.fixture(scope="module")
def oracle() -> Iterator[Oracle]:
    server = Oracle()
    yield server
    server.close()


def _difference(label: str, ours: str, theirs: str) -> str:
    at = next((i for i, (a, b) in enumerate(zip(ours, theirs, strict=False)) if a != b),
              min(len(ours), len(theirs)))
    return (f"{label}\n  elixir: {theirs!r}\n  ours:   {ours!r}\n"
            f"  first difference at {at}: elixir {theirs[at:at + 24]!r}, ours {ours[at:at + 24]!r}")


def _check(labels: Sequence[str], ours: Sequence[str], replies: Sequence[Reply]) -> None:
    failures = []
    for label, mine, (status, theirs) in zip(labels, ours, replies, strict=True):
        if status != Atom("ok"):
            failures.append(f"{label}\n  elixir raised: {theirs.decode()}")
        elif mine != theirs.decode():
            failures.append(_difference(label, mine, theirs.decode()))
    assert not failures, f"{len(failures)} of {len(labels)} differ:\n" + "\n".join(failures)


def _label(term: Any, opts: Opts) -> str:
    try:
        text = repr(term)
    except ValueError:  # an integer of more than 4300 digits
        text = f"<{type(term).__name__} too large for repr>"
    return f"{text:.200} {opts}"


def check_python_terms(oracle: Oracle, cases: Sequence[tuple[Any, Opts]]) -> None:
    _check([_label(term, opts) for term, opts in cases],
           [_ours(term, opts) for term, opts in cases], oracle.inspect(cases))


def check_vm_terms(oracle: Oracle, cases: Sequence[tuple[str, Opts]]) -> None:
    replies = oracle.evaluate(cases)
    ours, texts = [], []
    for (_, opts), (status, reply) in zip(cases, replies, strict=True):
        if status == Atom("ok"):
            blob, text = reply
            ours.append(_ours(decode(blob), opts))
            texts.append((status, text))
        else:
            ours.append("")
            texts.append((status, reply))
    _check([f"{expr} {opts}" for expr, opts in cases], ours, texts)


def A(name: str) -> Atom:
    return Atom(name)


def struct_of(module: str, **fields: Any) -> dict[Atom, Any]:
    return {A("__struct__"): A(module), **{A(k): v for k, v in fields.items()}}


# --- atoms -----------------------------------------------------------------------------

ATOM_NAMES = [
    "ok", "nil", "true", "false", "", "with space", "a\nb", "a\tb", "Elixir", "Elixir.Foo",
    "Elixir.Foo.Bar", "Elixir.Elixir", "Elixir.Elixir.Foo", "Elixir.foo", "Elixir.Foo.bar",
    "Elixir.Foo.Bar9_x", "Elixir.Foo..Bar", "Elixir.", "Elixir.Foo.", "Elixir.Foo.É",
    "Elixir.Foo?", "Foo.Bar", "Foo", "foo?", "foo!", "foo?!", "foo?x", "foo@bar", "foo@",
    "@foo", "a@b@c", "_@", "A@b", "_", "__MODULE__", "_foo", "_?", "_A", "A_b", "Ab9", "Ab?",
    "A!", "1a", "a1", "a-b", "Foo-Bar", "foo.bar", "do", "end", "fn", "when", "in", "not",
    "and", "or", "xor", "not in", "\"", "\\", "\\\\\\", "a'b", "a#{}", "#{x}", "#", "\x1b",
    "\x00", "\x01", "\x7f", "\x80", "\x9f", "ab\x07", "\u00a0", "foo\u00a0", "\ufeff",
    "\u2028", "\ufffe", "😀", "a😀", "?", "!", "a?b", "...a", ".a", "&&&&", "..//x", "=>",
    "[]", "()", "é", "ólá", "Ólá", "ä", "Ä", "aä", "ℕ", "aа", "a\u0301", "ſ", "ǅx", "ᾈ",
    "ⅰ", "ﬁ", "µ", "x·y", "x·", "·x", "℘", "℮", "Ⅸ", "a\u200d", "aα", "abc漢字", "日本語",
    "ひらがなカタカナ漢字", "한국어", "привет", "привет_мир", "ελληνικά", "ñandú", "naïve",
    "Straße", "ẞ", "x_日本", "한국어abc", "漢字ㄅ", "ㄅabc", "a١", "١", "ab٣", "ﾊﾝｶｸ",
    "αβγ_1", "Ωmega", "dž", "ǆ", "ά", "ᾳ", "ı", "ŉ", "ß", "ⓐ", "𝐀", "ä̈", "a̐", "é̐",
    "ँa", "क़", "अ", "ँ", "a_ँ", "Ǆ", "ϐ", "aμ", "μа", "aπ", "ʼa", "aˬ", "aʰ", "aー", "aـ",
    # operators and punctuation
    "+", "-", "*", "/", "**", "++", "--", "+++", "---", "<>", "^", "!", "@", "&", "=", "==",
    "===", "!=", "!==", "=~", "<", ">", "<=", ">=", "|", "||", "|||", "&&", "&&&", "<<<",
    ">>>", "<<~", "~>>", "<~", "~>", "<~>", "|>", "<-", "\\\\", "::", "^^^", "~~~", "<|>",
    "//", "%", "%{}", "{}", "<<>>", "->", ".", "..", "...", "..//", "~", "<<", ">>", "!!",
    "^^", "=<", "=:=", "=/=", "/=", ";", ",", "`", "$", "'",
]


def test_atoms_in_every_position(oracle: Oracle) -> None:
    cases: list[tuple[Any, Opts]] = []
    for name in ATOM_NAMES:
        atom = A(name)
        cases += [
            (atom, {}),
            ([(atom, 1)], {}),  # keyword key
            ({atom: 1, A("ok"): 2}, {}),  # map key
            (Export(A("m"), atom, 1), {}),  # function name
            (Export(atom, A("f"), 1), {}),  # module name
        ]
    check_python_terms(oracle, cases)


# --- numbers ---------------------------------------------------------------------------

INTEGERS = [0, 1, -1, 255, 256, 2**27 - 1, 2**27, -(2**27) - 1, 2**31, 2**63, -(2**64),
            10**30, -(10**100), 10**300 + 7, 10**5000 + 12345]

FLOATS = [
    0.0, -0.0, 1.0, -1.0, 0.1, -0.1, 1.5, 123.456, 0.30000000000000004, 1e15, 1e16, -1e16,
    1.5e16, 9007199254740992.0, 9007199254740993.0, 1.2345678901234568e17, 1e17, 1.23e18,
    1e20, 1e21, 1e22, 1.2e21, 9.999999999999999e22, 1e100, 1.7976931348623157e308, 1e-3,
    1e-4, 1e-5, 1e-6, 1e-7, 1e-10, 1.234e-5, 1.2345e-5, 0.00012345, 0.0012345, 5e-324,
    2.2250738585072014e-308, 12345678.9, 1234567890123456.8, 0.5, 0.25, 100.5, 3.14159,
]


def _random_floats(count: int) -> list[float]:
    rng = random.Random(1914)
    floats: list[float] = []
    while len(floats) < count:
        if rng.random() < 0.5:
            value = struct.unpack(">d", rng.getrandbits(64).to_bytes(8, "big"))[0]
        else:
            value = round(rng.uniform(-1, 1) * 10 ** rng.randint(-25, 25), rng.randint(0, 20))
        if math.isfinite(value):
            floats.append(value)
    return floats


def test_numbers(oracle: Oracle) -> None:
    cases: list[tuple[Any, Opts]] = [(n, {}) for n in INTEGERS + FLOATS]
    cases.append((_random_floats(3000), {"limit": None}))
    check_python_terms(oracle, cases)


# --- binaries and bitstrings -----------------------------------------------------------

STRINGS = [
    b"", b"hello", "héllo wörld".encode(), "日本語".encode(), b"\x00", b"a\x00",
    b"\n\t\r\x0b\x08\x0c\x1b\x7f\x07", b'"quoted"', b"back\\slash", b"#{interp}", b"#",
    b"{", b"#{", b"##{{", "\ufeff BOM".encode(), "\u00a0nbsp".encode(), b"\xc2\x80",
    b"\xff", b"\xe6\x97", b"\xe6\x97a", "😀".encode(), "\U0010ffff".encode(),
    "\ufffe".encode(), "\ufffd".encode(), "\ud7ff\ue000".encode(), b"\xed\xa0\x80",
    b"\xc0\x80", b"\xf4\x90\x80\x80", b"a'b", b"\x01\x02\x03", bytes(range(256)),
    "\u2028\u0085".encode(), b"a" * 5000, "é".encode() * 3000,
]


def test_binaries(oracle: Oracle) -> None:
    cases: list[tuple[Any, Opts]] = [(s, {}) for s in STRINGS]
    for s in [b"abcdef", b"ab#{cd", b"#{\x01", b"#{\xff", b"ab\x01", b"ab\xff", "é日x".encode(),
              b"\x01\x02\x03\x04", b"a\"b\\c"]:
        cases += [(s, {"printable_limit": n, "limit": n}) for n in (0, 1, 2, 3, 4, None)]
    bits = [BitString(b"\x80", 1), BitString(b"\xa0", 3), BitString(b"\xff\xe0", 3),
            BitString(b"\x01\x02\x03\x40", 2), BitString(b"\xfe", 7), BitString(b"ab\x00", 1)]
    cases += [(b, {"limit": n}) for b in bits for n in (0, 1, 2, 3, 4, 50)]
    check_python_terms(oracle, cases)


# --- lists, tuples, maps ---------------------------------------------------------------

KEYWORDS = [
    [(A("a"), 1), (A("b"), 2)], [(A("nil"), 1), (True, 2), (False, 3), (None, 4)],
    [(A("with space"), 1)], [(A("Elixir.Foo"), 1)], [(A("a"), 1), (b"b", 2)],
    [(A("a"), 1, 2)], [(A("::"), 1), (A("+"), 2), (A("Foo"), 3), (A("Elixir"), 4)],
    [(A("a"), [(A("b"), [(A("c"), 1)])])], [(A("a"), 1), 2],
]

LISTS = [
    [], [1], [1, 2, 3], [97, 98, 99], [7, 8, 9, 10, 11, 12, 13, 27, 127], [32, 126], [31],
    [127], [128], [955, 956], [0], list(range(60)), [97, 35, 123, 98], [39, 34, 92],
    [[1, 2, 3], [4, 5, 6]], [[[[[[[[[[1]]]]]]]]]], [[97], [98]], [97, b"bc"], [b"x"],
    [1.0, A("a"), b"b", (1,)], [97] * 5000, [[]],
    ImproperList([1], 2), ImproperList([1, 2], 3), ImproperList([97], 98),
    ImproperList([97, 98], b"c"), ImproperList([1, 2, 3], 4), ImproperList([[1]], (2,)),
]

TUPLES = [(), (1,), (1, 2, 3), ((1, 2), (3, (4, (5,)))), tuple(range(60)), (A("ok"), b"x")]

MAPS: list[Any] = [
    {}, {A("a"): 1}, {b"a": 1}, {A("b"): 1, A("a"): 2}, {A("a"): 1, b"b": 2},
    {1: A("a"), 2.5: A("b"), 0.5: A("d"), 2: A("c")}, {A("Elixir.Foo"): 1},
    {True: 1, None: 2, A("ok"): 3}, {(1,): 1, (1, 2): 2, (0, 0, 0): 3},
    {A("a"): 1, b"b": 2, 3: 4, (1,): 5, BitString(b"\x80", 1): 8, Pid(NODE, 9, 0, 0): 9},
    {A("with space"): 1, A("::"): 2}, {A("__exception__"): True, A("message"): b"x"},
    {i: i for i in range(32)}, {A(f"k{i}"): i for i in range(32)},
    {b"a": {A("b"): [(A("c"), (1, b"d"))]}}, {A("a"): [1, 2, 3], A("b"): [4, 5, 6], A("c"): 3},
    PairMap([(1, b"int"), (1.0, b"float"), (True, b"true")]),
    PairMap([(A("b"), 1), (A("a"), 2)]),
]


def test_collections(oracle: Oracle) -> None:
    cases: list[tuple[Any, Opts]] = []
    for term in KEYWORDS + LISTS + TUPLES + MAPS:
        cases += [(term, {}), (term, {"limit": 3, "printable_limit": 2}),
                  (term, {"limit": 0}), (term, {"limit": 1})]
    for term in [[97, 98, 99], [1, 2, 3], [955], [], [[97], b"b"], ImproperList([97], b"b"),
                 [97, 98 + 0x10000], [(A("a"), 1)], [7, 8]]:
        cases += [(term, {"charlists": mode}) for mode in ("as_lists", "infer")]
    cases += [(term, {"charlists": "as_charlists"}) for term in [
        [97, 98, 99], [1, 2, 3], [955], [], [[97], b"b"], ImproperList([97], b"b"),
        [0x80, 0xFFFE, 0x10FFFF], [35, 123]]]
    check_python_terms(oracle, cases)


def test_identifiers(oracle: Oracle) -> None:
    terms = [
        Pid(NODE, 0, 0, 0), Pid(NODE, 123, 4, 0), Port(NODE, 6, 0), Port(NODE, 2**20, 0),
        Reference(NODE, 0, (1, 2, 3)), Reference(NODE, 0, (7,)),
        Reference(NODE, 0, (1, 2)), Reference(NODE, 0, (2**18 - 1, 0, 2**32 - 1)),
        Export(A("Elixir.Enum"), A("map"), 2), Export(A("lists"), A("map"), 2),
        Export(A("erlang"), A("+"), 2), Export(A("Elixir.Kernel"), A("::"), 2),
        Export(A("Elixir.Foo"), A("Bar"), 0), Export(A("nil"), A("nil"), 0),
        {Pid(NODE, 5, 1, 0): 1, Pid(NODE, 6, 0, 0): 2, Port(NODE, 1, 0): 3,
         Reference(NODE, 0, (1, 2, 3)): 4, Export(A("a"), A("b"), 1): 5},
    ]
    check_python_terms(oracle, [(term, {}) for term in terms])


# --- structs ---------------------------------------------------------------------------

ISO = A("Elixir.Calendar.ISO")


def _datetime(zone: bytes, abbr: bytes, utc: int, std: int, micro: tuple[int, int] = (0, 0),
              ) -> dict[Atom, Any]:
    return struct_of("Elixir.DateTime", calendar=ISO, year=2024, month=7, day=1, hour=12,
                  minute=0, second=5, microsecond=micro, time_zone=zone, zone_abbr=abbr,
                  utc_offset=utc, std_offset=std)


STRUCTS: list[Any] = [
    *(struct_of("Elixir.Range", first=first, last=last, step=step)
      for first, last, step in [(1, 10, 1), (1, 10, 2), (10, 1, -1), (1, 0, 1), (-1, -5, 1)]),
    struct_of("Elixir.Range", first=1, last=3),
    struct_of("Elixir.Range", first=A("a"), last=A("b"), step=3),
    struct_of("Elixir.MapSet", map={1: [], 2: [], 3: []}, version=2),
    struct_of("Elixir.MapSet", map={97: [], 98: []}, version=2),
    struct_of("Elixir.MapSet", map={(A("a"), 1): []}, version=2),
    struct_of("Elixir.MapSet", map={}),
    struct_of("Elixir.Date", calendar=ISO, year=2024, month=1, day=1),
    struct_of("Elixir.Date", calendar=ISO, year=-1, month=12, day=31),
    struct_of("Elixir.Date", calendar=ISO, year=12345, month=13, day=1),
    struct_of("Elixir.Time", calendar=ISO, hour=1, minute=2, second=3, microsecond=(0, 0)),
    struct_of("Elixir.Time", calendar=ISO, hour=1, minute=2, second=3, microsecond=(5, 3)),
    struct_of("Elixir.Time", calendar=ISO, hour=23, minute=59, second=59,
           microsecond=(123456, 6)),
    struct_of("Elixir.NaiveDateTime", calendar=ISO, year=2024, month=1, day=1, hour=0, minute=0,
           second=0, microsecond=(1000, 3)),
    _datetime(b"Etc/UTC", b"UTC", 0, 0), _datetime(b"Etc/UTC", b"UTC", 0, 0, (123456, 6)),
    _datetime(b"Etc/UTC", b"XYZ", 3600, 0), _datetime(b"Europe/Paris", b"CET", 3600, 0),
    _datetime(b"Europe/London", b"BST", 0, 3600, (1000, 3)),
    _datetime(b"America/New_York", b"EST", -18000, 0), _datetime(b"X", b"Y", 5430, 0),
    _datetime(b"UTC", b"UTC", 0, 0),
    struct_of("Elixir.Regex", source=b"a/b\n", opts=b"iu", re_pattern=None, re_version=None),
    struct_of("Elixir.Regex", source=b"\\/ /\\\\/\\d#{x}\x1b\x7f\x00\x08\"\xef\xbb\xbf",
           opts=b"", re_pattern=None, re_version=None),
    struct_of("Elixir.Regex", source=b"a\xffb\x01\t\r\x0b\x0c\x07", opts=b"", re_pattern=None,
           re_version=None),
    struct_of("Elixir.Version.Requirement", source=b"~> 1.0", lexed=[]),
    struct_of("Elixir.Stream", enum=[1, 2], funs=[Export(A("Elixir.Enum"), A("map"), 2),
                                              Export(A("lists"), A("sort"), 1)],
           accs=[], done=None),
    struct_of("Elixir.URI", scheme=b"http", authority=None, userinfo=None, host=b"x.org",
           port=80, path=b"/", query=None, fragment=None),
    struct_of("Elixir.Version", major=1, minor=2, patch=3, pre=[b"rc", 1], build=None),
    struct_of("Elixir.Version", major=1, minor=2, patch=3, pre=[], build=b"b"),
    struct_of("Elixir.Version", major=1, minor=2, patch=3),
    struct_of("Elixir.URI", a=1),
    struct_of("Elixir.RuntimeError", __exception__=True, message=b"boom"),
    struct_of("Elixir.KeyError", __exception__=True, key=A("a"), term={}, message=None),
    struct_of("Elixir.File.Stat", size=1, type=A("regular"), access=None, atime=None,
           mtime=None, ctime=None, mode=None, links=None, major_device=None,
           minor_device=None, inode=None, uid=None, gid=None),
    struct_of("Elixir.ElixirScope.Oracle.Account", id=1, name=b"Ann", balance=0),
    struct_of("Elixir.ElixirScope.Oracle.Account", id=1),  # not all the fields: a map
    struct_of("Elixir.ElixirScope.Oracle.Boom", __exception__=True, message=b"x", code=7),
    struct_of("Elixir.No.Such.Module", a=1),  # module not loaded: a map
    struct_of("Elixir.No.Such.Module", A=1),
    {A("__struct__"): b"Foo", A("a"): 1},
]


def test_structs(oracle: Oracle) -> None:
    cases: list[tuple[Any, Opts]] = []
    for term in STRUCTS:
        cases += [(term, {"known_structs": KNOWN}), (term, {"limit": 1, "known_structs": KNOWN}),
                  (term, {"limit": 0, "printable_limit": 1, "known_structs": KNOWN})]
    check_python_terms(oracle, cases)


# --- terms only the VM makes -----------------------------------------------------------

EXPRESSIONS = [
    "self()", "make_ref()", "hd(Port.list())", "spawn(fn -> :ok end)",
    ":erlang.monitor(:process, self())", ":erlang.alias()", "&Enum.map/2", "&:erlang.node/0",
    "&Kernel.+/2", ":persistent_term.get(:gone_funs)", "{:ok, self(), make_ref()}",
    "%{self() => 1, make_ref() => 2, hd(Port.list()) => 3, &Enum.map/2 => 4, 1 => 5}",
    "Map.new(1..5, fn i -> {make_ref(), i} end)",
    "Map.new(1..5, fn i -> {spawn(fn -> :ok end), i} end)",
    "1..10", "1..10//2", "10..1//-1", "1..0//1", "-1..-5//1",
    "MapSet.new([1, 2, 3])", "MapSet.new([97, 98])", "MapSet.new()", "MapSet.new(1..40)",
    "MapSet.new([{:a, 1}])", "MapSet.new(1..5)",
    "~D[2024-01-01]", "~D[-0001-01-01]", "~T[12:34:56]", "~T[12:34:56.789]",
    "~N[2024-01-01 12:00:00.000001]", "~U[2024-01-01 12:00:00Z]",
    'DateTime.from_naive!(~N[2024-01-01 12:00:00.123], "Etc/UTC")',
    "Date.range(~D[2024-01-01], ~D[2024-01-31])",
    "Date.range(~D[2024-01-01], ~D[2024-01-31], 2)",
    "Date.range(~D[2024-01-31], ~D[2024-01-01])",
    "~r/foo/", r"~r/fo\/o/i", "~r{a/b}", r'Regex.compile!("a\nb\t/")', r"~r/a#\{b/u",
    r'Regex.compile!("\\d+\x01é", "ix")',
    'URI.parse("http://example.com/path?q=1")', 'Version.parse!("1.2.3-rc.1+build")',
    'Version.parse_requirement!("~> 1.0")',
    '%RuntimeError{message: "boom"}', "%ArgumentError{}", "%KeyError{key: :a, term: %{}}",
    "%File.Stat{}", "%ElixirScope.Oracle.Account{}", "%ElixirScope.Oracle.Boom{code: 1}",
    "Map.new(1..40, fn i -> {i, i} end)", 'Map.new(1..40, fn i -> {:"k#{i}", i} end)',
    'Map.new(1..100, fn i -> {"key#{i}", [i]} end)',
    "Map.new(1..33, fn i -> {i * 1.5, i} end)",
    "<<1::3>>", "<<1, 2::4>>", ':binary.copy("a", 5000)', 'String.duplicate("é", 5000)',
    ":crypto.strong_rand_bytes(64)", "Enum.to_list(1..100)", "List.duplicate(?a, 5000)",
    "1.0e16", ":math.pi()", "0.1 + 0.2", "-0.0", "2 ** 200", "-(2 ** 64)",
    ":erlang.list_to_pid('<0.0.0>')", "[a: 1, b: [c: 2]]", '%{"a" => %{b: [c: {1, "d"}]}}',
]


def test_terms_made_by_the_vm(oracle: Oracle) -> None:
    cases: list[tuple[str, Opts]] = []
    for expr in EXPRESSIONS:
        cases += [(expr, {"known_structs": KNOWN}),
                  (expr, {"limit": 3, "printable_limit": 5, "known_structs": KNOWN})]
    check_vm_terms(oracle, cases)


# --- generated terms -------------------------------------------------------------------

PRINTABLE = [*range(32, 127), 7, 8, 9, 10, 11, 12, 13, 27]
HYPOTHESIS_ATOMS = [name for name in ATOM_NAMES if name.isascii()] + ["é", "日本語", "Ólá"]

atoms = st.sampled_from(HYPOTHESIS_ATOMS).map(Atom) | st.text(
    "abcXYZ_09@?!. é", max_size=6).map(Atom)
texts = st.text(max_size=12).map(str.encode) | st.sampled_from(STRINGS[:30])
scalars = st.one_of(
    st.integers(), st.integers(-300, 300), st.floats(allow_nan=False, allow_infinity=False),
    atoms, st.sampled_from([None, True, False]), st.binary(max_size=12), texts,
    st.builds(BitString, st.binary(min_size=1, max_size=4), st.integers(1, 7)),
    st.builds(Pid, st.just(NODE), st.integers(0, 2**15 - 1), st.integers(0, 2**13 - 1),
              st.just(0)),
    st.builds(lambda *ids: Reference(NODE, 0, ids), st.integers(0, 2**18 - 1),
              st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
)
keys = st.recursive(scalars, lambda inner: st.tuples(inner, inner), max_leaves=3)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(
        st.lists(inner, max_size=6), st.lists(inner, max_size=6).map(tuple),
        st.dictionaries(keys, inner, max_size=6),
        st.lists(st.tuples(atoms, inner), max_size=4),
        st.lists(st.sampled_from(PRINTABLE), min_size=1, max_size=8),
        st.builds(ImproperList, st.lists(inner, min_size=1, max_size=4), scalars),
    )


terms = st.recursive(scalars, _containers, max_leaves=24)
options = st.fixed_dictionaries({}, optional={
    "limit": st.sampled_from([None, 0, 1, 2, 3, 5, 50]),
    "printable_limit": st.sampled_from([None, 0, 1, 2, 5, 4096]),
    "charlists": st.sampled_from(["infer", "as_lists", "as_charlists"]),
})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(term=terms, opts=options)
def test_generated_terms(oracle: Oracle, term: Any, opts: Opts) -> None:
    [(status, theirs)] = oracle.inspect([(term, opts)])
    if status != Atom("ok"):
        reject()  # Elixir raises for this term (a list that is not chardata with
        # charlists: :as_charlists); the unit tests cover what we print instead
    ours = _ours(term, opts)
    assert ours == theirs.decode(), _difference(_label(term, opts), ours, theirs.decode())
