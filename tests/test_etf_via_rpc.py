"""Generated terms through a real node over the wire: the node decodes what we send,
encodes it with term_to_binary, and both agree with our codec."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import elixirscope
from elixirscope.etf import Atom, encode
from elixirscope.sample_nodes import BeamNode
from test_etf_properties import canonical, containers, hashable_leaves

pytestmark = pytest.mark.node

# Funs are left out: generated closures point at code the node does not have.
wire_terms = st.recursive(hashable_leaves, containers, max_leaves=20)
UTF8_ATOMS = [(Atom("minor_version"), 2)]


@pytest.fixture(scope="module")
def node(erl_node: BeamNode) -> Iterator[elixirscope.Node]:
    with elixirscope.connect(erl_node.name, erl_node.cookie) as conn:
        yield conn


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(term=wire_terms)
def test_node_echoes_and_encodes_like_us(node: elixirscope.Node, term: Any) -> None:
    echoed, vm_bytes = node.rpc("erlang", "list_to_tuple", [[
        term, node_term_to_binary(node, term)]])
    assert echoed == canonical(term)
    assert vm_bytes == encode(canonical(term))


def node_term_to_binary(node: elixirscope.Node, term: Any) -> bytes:
    data = node.rpc("erlang", "term_to_binary", [term, UTF8_ATOMS])
    assert isinstance(data, bytes)
    return data


def test_binary_to_term_of_our_bytes(node: elixirscope.Node) -> None:
    term = {Atom("a"): [1, 2.5, b"x", (Atom("ok"), -(2**100))], "k": "v"}
    assert node.rpc("erlang", "binary_to_term", [encode(term)]) == {
        Atom("a"): [1, 2.5, b"x", (Atom("ok"), -(2**100))], b"k": b"v"}
    assert node.rpc("erlang", "binary_to_term", [encode(term, compressed=9)]) == \
        node.rpc("erlang", "binary_to_term", [encode(term)])
