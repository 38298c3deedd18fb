"""Finding what to trace without Erlang: ``modules NODE [PATTERN]`` and module globs in
``trace``/``record --trace`` (``m_*``: the pages Yaws compiles at run time)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import elixirscope
from cli_support import json_rows, run
from elixirscope.etf import Atom
from elixirscope.remote_eval import eval_erlang
from elixirscope.sample_nodes import BeamNode, start_bare
from elixirscope.tracing.module_glob import NoModuleMatches, glob_regex

pytestmark = pytest.mark.node

PAGES = ("m_40014509_1", "m_40014509_2")
# A module compiled and loaded from memory, as Yaws does with its pages: no beam file.
_LOAD_PAGE = """
Forms = [{attribute, 1, module, M}, {attribute, 1, export, [{out, 1}]},
         {function, 1, out, 1, [{clause, 1, [{var, 1, 'A'}], [], [{tuple, 1, [{atom, 1, html},
                                                               {var, 1, 'A'}]}]}]}],
{ok, M, Bin} = compile:forms(Forms, []),
{module, M} = code:load_binary(M, "", Bin),
M
"""


@pytest.fixture(scope="module")
def pages_node() -> Iterator[BeamNode]:
    with start_bare("erl", name_prefix="t_pages") as node:
        with elixirscope.connect(node.name, node.cookie) as conn:
            for page in PAGES:
                conn.run(eval_erlang(conn.anode, _LOAD_PAGE, bindings={"M": Atom(page)}))
        yield node


def test_glob_regex_reads_names_as_written() -> None:
    assert glob_regex("MyApp.*") == r"^Elixir\.MyApp\..*$"
    assert glob_regex("m_*") == "^m_.*$"
    assert glob_regex(":gen_?erver") == "^gen_.erver$"


def test_modules_lists_loaded_modules_with_application_and_debug_info(
        pages_node: BeamNode, capsys: pytest.CaptureFixture[str]) -> None:
    pages = json_rows(capsys, "modules", pages_node.name, "--cookie", pages_node.cookie,
                      "m_*")
    assert pages == [{"name": f":{page}", "application": "", "debug_info": None}
                     for page in PAGES]
    gen = json_rows(capsys, "modules", pages_node.name, "--cookie", pages_node.cookie,
                    ":gen_*")
    server = next(row for row in gen if row["name"] == ":gen_server")
    assert server["application"] == "stdlib" and isinstance(server["debug_info"], bool)
    assert all(str(row["name"]).startswith(":gen_") for row in gen)
    code, out, _ = run(capsys, "modules", pages_node.name, "--cookie", pages_node.cookie)
    assert code == 0 and ":m_40014509_2" in out and ":erlang" in out


def test_modules_takes_elixir_names(elixir_node: BeamNode,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    with elixirscope.connect(elixir_node.name, elixir_node.cookie) as conn:
        conn.rpc("code", "ensure_loaded", [Atom("Elixir.Enumerable")])
    rows = json_rows(capsys, "modules", elixir_node.name, "--cookie", elixir_node.cookie,
                     "Enum*")
    names = [row["name"] for row in rows]
    assert "Enum" in names and "Enumerable" in names
    assert all(row["application"] == "elixir" for row in rows)


def test_trace_takes_a_glob_and_traces_every_match(pages_node: BeamNode) -> None:
    with elixirscope.attach(pages_node.name, cookie=pages_node.cookie) as scope:
        refs = scope.trace("m_*", "detailed")
        assert isinstance(refs, list) and len(refs) == 2
        traced = sorted(info.target for info in scope.list_traces()
                        if info.ref in refs)
        assert traced == [f":{page}" for page in PAGES]
        for page in PAGES:
            scope.node.rpc(page, "out", [1])
        called = {str(event.mfa[0]) for event in scope.events(timeout=2)
                  if event.kind == "call" and event.mfa is not None}
        assert called == set(PAGES)


def test_a_glob_that_matches_nothing_says_so_with_close_names(
        pages_node: BeamNode, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with (elixirscope.attach(pages_node.name, cookie=pages_node.cookie) as scope,
          pytest.raises(NoModuleMatches, match=r"matches m_4001450\?x.*:m_40014509_1")):
        scope.trace("m_4001450?x")
    code, _, err = run(capsys, "record", pages_node.name, "--cookie", pages_node.cookie,
                       "--trace", "nothing_like_this_*", "--duration", "0.2",
                       "-o", str(tmp_path / "r.duckdb"))
    assert code == 1 and "Traceback" not in err
    assert "no module loaded on" in err and "nothing_like_this_*" in err
