"""What ``elixir_format.inspect`` prints where Elixir cannot be the oracle: the documented
differences from Elixir, the options of our own, and the guards. Everything Elixir can
print itself is compared with Elixir in ``test_elixir_format_oracle.py``."""

from __future__ import annotations

import collections
import enum
from typing import Any

import pytest

from elixirscope import elixir_format
from elixirscope.elixir_format import MAX_DEPTH, inspect, register_records
from elixirscope.etf import Atom, Fun, ImproperList, PairMap, Pid, Port, Reference

A = Atom
HERE = A("app@host")
THERE = A("db@other.example.com")


def struct_of(module: str, **fields: Any) -> dict[Atom, Any]:
    return {A("__struct__"): A(module), **{A(k): v for k, v in fields.items()}}


def test_identifiers_of_the_local_node_print_like_elixir() -> None:
    assert inspect(Pid(HERE, 123, 4, 1), local_node="app@host") == "#PID<0.123.4>"
    assert inspect(Port(HERE, 6, 1), local_node="app@host") == "#Port<0.6>"
    assert inspect(Reference(HERE, 1, (3, 2, 1)), local_node="app@host") == "#Reference<0.1.2.3>"


def test_identifiers_of_other_nodes_show_the_node_name() -> None:
    assert inspect(Pid(THERE, 80, 0, 1), local_node="app@host") == (
        "#PID<db@other.example.com.80.0>")
    assert inspect(Port(THERE, 6, 1), local_node="app@host") == "#Port<db@other.example.com.6>"
    assert inspect([Reference(THERE, 1, (3, 2, 1))], local_node="app@host") == (
        "[#Reference<db@other.example.com.1.2.3>]")


def test_without_a_local_node_every_identifier_prints_as_local() -> None:
    assert inspect((Pid(HERE, 1, 2, 1), Pid(THERE, 3, 4, 1))) == "{#PID<0.1.2>, #PID<0.3.4>}"


def test_closures_print_without_the_defining_function() -> None:
    fun = Fun(raw=b"", module=A("Elixir.MyApp.Worker"), arity=1, uniq=bytes(16), index=3,
              old_index=3, old_uniq=7916743, pid=None, free_vars=())
    assert inspect(fun) == "#Function<3.7916743/1 in MyApp.Worker>"
    erlang_fun = Fun(raw=b"x", module=A("erl_eval"), arity=2, uniq=bytes(16), index=42,
                     old_index=42, old_uniq=3316493, pid=None, free_vars=(1,))
    assert inspect(erlang_fun) == "#Function<42.3316493/2 in :erl_eval>"


def test_structs_of_unknown_modules_print_as_structs_by_default() -> None:
    account = struct_of("Elixir.MyApp.Account", name=b"Ann", id=1)
    assert inspect(account) == '%MyApp.Account{id: 1, name: "Ann"}'
    assert inspect(struct_of("Elixir.MyApp.Error", __exception__=True, message=b"x")) == (
        '%MyApp.Error{message: "x"}')


def test_known_structs_follow_elixirs_rule() -> None:
    account = struct_of("Elixir.MyApp.Account", name=b"Ann", id=1)
    fields = {"MyApp.Account": ["name", "id"]}
    assert inspect(account, known_structs=fields) == '%MyApp.Account{name: "Ann", id: 1}'
    assert inspect(account, known_structs={"Elixir.MyApp.Account": ["id", "name"]}) == (
        '%MyApp.Account{id: 1, name: "Ann"}')
    # Not a loaded module, or not its fields: Elixir prints the map.
    assert inspect(account, known_structs={}) == (
        '%{__struct__: MyApp.Account, id: 1, name: "Ann"}')
    assert inspect(account, known_structs={"MyApp.Account": ["id"]}) == (
        '%{__struct__: MyApp.Account, id: 1, name: "Ann"}')


def test_standard_library_structs_need_no_field_list() -> None:
    error = struct_of("Elixir.KeyError", __exception__=True, key=A("a"), term={}, message=None)
    assert inspect(error, known_structs={}) == "%KeyError{key: :a, term: %{}, message: nil}"


def test_malformed_special_structs_print_as_plain_structs() -> None:
    # Elixir raises inside its Inspect implementation for these.
    assert inspect(struct_of("Elixir.Range", first=1)) == "%Range{first: 1}"
    assert inspect(struct_of("Elixir.Date", calendar=A("Elixir.Cal"), year=2024, month=1,
                             day=1)) == "%Date{calendar: Cal, day: 1, month: 1, year: 2024}"


def test_small_maps_are_sorted_and_large_maps_keep_their_order() -> None:
    small = {A("b"): 1, 2: 2, A("a"): 3}
    assert inspect(small) == "%{2 => 2, :a => 3, :b => 1}"
    large = {i: i for i in reversed(range(33))}
    assert inspect(large, limit=3) == "%{32 => 32, 31 => 31, 30 => 30, ...}"


def test_deep_nesting_stops_at_max_depth() -> None:
    term: Any = A("bottom")
    for _ in range(10_000):
        term = [term]
    text = inspect(term, limit=None)
    assert text == "[" * (MAX_DEPTH + 1) + "[...]" + "]" * (MAX_DEPTH + 1)
    assert inspect(term) == "[" * 50 + "[...]" + "]" * 50  # the limit shrinks per level


def test_deep_nesting_of_every_container_needs_no_deep_stack() -> None:
    term: Any = 1
    for level in range(2_000):
        term = [
            [term], (term,), {A("k"): term}, [(A("k"), term)], ImproperList([term], 1),
            struct_of("Elixir.MapSet", map=PairMap([(term, [])]), version=2),
            struct_of("Elixir.Range", first=term, last=0, step=1),
        ][level % 7]
    assert inspect(term, limit=None).count("...") >= 1
    assert inspect(PairMap([(term, 1), (2, 2)]), limit=None).endswith(" => 1, 2 => 2}")


def test_integers_longer_than_pythons_str_limit() -> None:
    assert inspect(10**5000 + 1) == "1" + "0" * 4999 + "1"
    assert inspect(-(10**9000)) == "-1" + "0" * 9000


def test_charlists_in_the_elixir_1_15_style(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(elixir_format, "CHARLIST_STYLE", "sigil")
    assert inspect([97, 34, 39]) == '~c"a\\"\'"'
    assert inspect([97, 98, 99], printable_limit=2) == '~c"ab" ++ ...'


def test_as_charlists_prints_lists_elixir_cannot_convert_as_lists() -> None:
    assert inspect([97, A("b")], charlists="as_charlists") == "[97, :b]"
    assert inspect([0x110000], charlists="as_charlists") == "[1114112]"
    assert inspect(ImproperList([97], 98), charlists="as_charlists") == "[97 | 98]"
    assert inspect([[97], b"b"], charlists="as_charlists") == "'ab'"


def test_python_strings_and_subclasses_print_as_their_terms() -> None:
    class Color(enum.IntEnum):
        RED = 1

    assert inspect("héllo") == '"héllo"'
    assert inspect(Color.RED) == "1"
    assert inspect(collections.OrderedDict([(A("a"), 1)])) == "%{a: 1}"
    assert inspect(bytearray(b"\x01")) == "<<1>>"


def test_invalid_input_is_refused() -> None:
    with pytest.raises(TypeError, match="not an Erlang term"):
        inspect([object()])
    with pytest.raises(ValueError, match="charlists"):
        inspect([], charlists="as_strings")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        inspect([], limit=-1)


def test_a_call_prints_as_it_was_written() -> None:
    from elixirscope.elixir_format import format_call

    # A list of small integers is the argument list, never a charlist.
    assert format_call("Catalog", "page", [80]) == "Catalog.page(80)"
    assert format_call(":lists", "seq", [1, 3]) == ":lists.seq(1, 3)"
    assert format_call("Bank", "deposit", [b"alice", 12]) == 'Bank.deposit("alice", 12)'
    assert format_call("Kernel", "+", [1, 2]) == "Kernel.+(1, 2)"
    assert format_call("M", "with space", []) == 'M."with space"()'
    state, elided = Atom("$state"), Atom("$elided")
    assert format_call("S", "handle_cast", [Atom("bump"), state]) == "S.handle_cast(:bump, #state)"
    assert format_call("S", "f", [elided, 2]) == "S.f(#elided, 2)"


def test_records_print_with_field_names_when_known() -> None:
    records = {("ch", 3): ["conf", "n"], ("basic.publish", 2): ["exchange"]}
    assert inspect((Atom("ch"), 1, [2]), records=records) == "#ch{conf: 1, n: [2]}"
    assert inspect((Atom("basic.publish"), b"x"), records=records) == (
        '#"basic.publish"{exchange: "x"}')
    # Another size, or no definitions: the tuple it is.
    assert inspect((Atom("ch"), 1), records=records) == "{:ch, 1}"
    assert inspect((Atom("ch"), 1, 2)) == "{:ch, 1, 2}"
    assert inspect([(Atom("ch"), 1, 2)], records=records, limit=1) == "[#ch{...}]"
    register_records("rec@host", records)
    assert inspect((Atom("ch"), 1, 2), local_node="rec@host") == "#ch{conf: 1, n: 2}"
    assert inspect((Atom("ch"), 1, 2), local_node="other@host") == "{:ch, 1, 2}"
