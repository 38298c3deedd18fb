"""State deltas: the agent's diff on a real node, applied in Python, must give back
the new state exactly; and the structural diff prints what changed."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import elixirscope
from elixirscope.etf import Atom, encode
from elixirscope.recording.state_delta import StateChainError, apply_delta, parse_record
from elixirscope.recording.state_diff import MISSING, delta_changes, diff_terms, lookup
from elixirscope.sample_nodes import BeamNode
from tracing_support import erl

KEYS = st.one_of(st.sampled_from([Atom(n) for n in ("a", "b", "c", "balance", "history")]),
                 st.integers(-3, 3), st.binary(max_size=3))
LEAVES = st.one_of(st.integers(-1000, 10**20), st.binary(max_size=8), KEYS,
                   st.floats(allow_nan=False, allow_infinity=False))
TERMS = st.recursive(
    LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=6),
                            st.lists(inner, max_size=4).map(tuple),
                            st.dictionaries(KEYS, inner, max_size=6)),
    max_leaves=30)


def mutate(term: Any, rng: random.Random, fresh: Any) -> Any:
    """A copy of ``term`` with a few edits somewhere inside, as a state changes."""
    roll = rng.random()
    if isinstance(term, dict) and term:
        out = dict(term)
        key = rng.choice(list(out))
        if roll < 0.5:
            out[key] = mutate(out[key], rng, fresh)
        elif roll < 0.7:
            del out[key]
        else:
            out[Atom(f"k{rng.randrange(5)}")] = fresh
        return out
    if isinstance(term, list) and term:
        out_list = list(term)
        if roll < 0.3:
            return [fresh, *out_list[:-1]]  # a bounded history gets a new head
        if roll < 0.5:
            return [fresh, *out_list]
        if roll < 0.8:
            i = rng.randrange(len(out_list))
            out_list[i] = mutate(out_list[i], rng, fresh)
            return out_list
        return out_list[: rng.randrange(len(out_list))]
    if isinstance(term, tuple) and term:
        items = list(term)
        i = rng.randrange(len(items))
        items[i] = mutate(items[i], rng, fresh)
        return tuple(items)
    return fresh if roll < 0.9 else term


@pytest.fixture(scope="module")
def agent(erl_node: BeamNode) -> Iterator[tuple[elixirscope.Scope, Atom]]:
    with elixirscope.attach(erl_node.name, erl_node.cookie) as scope:
        yield scope, scope.ascope.module


@settings(max_examples=25, deadline=None)
@given(bases=st.lists(TERMS, min_size=1, max_size=12), fresh=TERMS, seed=st.integers(0, 2**32))
def test_agent_deltas_rebuild_the_new_state(agent: tuple[elixirscope.Scope, Atom],
                                            bases: list[Any], fresh: Any, seed: int) -> None:
    scope, module = agent
    rng = random.Random(seed)
    pairs = [(old, mutate(old, rng, fresh)) for old in bases]
    deltas = erl(scope.node, "[M:diff(A, B) || {A, B} <- Pairs]", M=module, Pairs=pairs)
    for (old, new), delta in zip(pairs, deltas, strict=True):
        assert apply_delta(old, delta) == new
        # What the delta says changed is what a diff of the two states says.
        assert bool(delta_changes(old, delta)) == bool(diff_terms(old, new))


def test_a_bounded_history_costs_its_new_head(agent: tuple[elixirscope.Scope, Atom]) -> None:
    scope, module = agent
    history = [(Atom("deposit"), i, b"x" * 50) for i in range(20)]
    new = [(Atom("withdraw"), 99, b"y"), *history[:-1]]
    delta = erl(scope.node, "M:diff(A, B)", M=module, A={Atom("history"): history},
                B={Atom("history"): new})
    assert len(encode(delta)) < 80 and apply_delta({Atom("history"): history}, delta) == {
        Atom("history"): new}


def test_deltas_that_do_not_fit_are_errors() -> None:
    with pytest.raises(StateChainError):
        apply_delta([1, 2], (Atom("m"), [(Atom("a"), (Atom("v"), 1))], []))
    with pytest.raises(StateChainError):
        apply_delta({Atom("a"): 1}, (Atom("m"), [], [Atom("gone")]))
    with pytest.raises(StateChainError):
        parse_record(encode((Atom("not"), Atom("a"), Atom("record"))))


def test_diffs_print_paths_the_way_elixir_writes_keys() -> None:
    old = {Atom("balance"): 100, Atom("accounts"): {b"alice": {Atom("balance"): 5}},
           Atom("opts"): [(Atom("timeout"), 5), (Atom("mode"), Atom("fast"))],
           Atom("history"): [1, 2]}
    new = {Atom("balance"): 150, Atom("accounts"): {b"alice": {Atom("balance"): 7}},
           Atom("opts"): [(Atom("timeout"), 9), (Atom("mode"), Atom("fast"))],
           Atom("history"): [0, 1, 2], Atom("extra"): True}
    lines = str(diff_terms(old, new)).splitlines()
    assert lines == [
        "~ [:balance]: 100 -> 150",
        '~ [:accounts, "alice", :balance]: 5 -> 7',
        "~ [:opts, :timeout]: 5 -> 9",
        "+ [:history, 0]: 0",
        "+ [:extra]: true",
    ]
    assert str(diff_terms(new, new)) == "(no change)"
    assert lookup(new, [Atom("accounts"), b"alice", Atom("balance")]) == 7
    assert lookup(new, [Atom("opts"), Atom("timeout")]) == 9
    assert lookup(new, [Atom("nothing")]) is MISSING
