"""Real BEAM nodes for the tests: started with unique names and cookies, always stopped."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from elixirscope.sample_nodes import BeamNode, start_bare, start_sample


@pytest.fixture(scope="session")
def traced_code(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The compiled es_traced module the tracing tests load into their nodes."""
    from tracing_support import compile_fixture

    return compile_fixture(tmp_path_factory.mktemp("beam"))


@pytest.fixture(scope="module")
def erl_node() -> Iterator[BeamNode]:
    with start_bare("erl", name_prefix="t_erl") as node:
        yield node


@pytest.fixture(scope="module")
def elixir_node() -> Iterator[BeamNode]:
    with start_bare("elixir", name_prefix="t_ex") as node:
        yield node


@pytest.fixture(scope="module")
def bank_node() -> Iterator[BeamNode]:
    with start_sample("bank", name_prefix="t_bank") as node:
        yield node
