"""``elixirscope analyze NODE [MODULE...]``: what the node's code is, from its debug
info: module kinds, complexity, the call graph and the risks in it."""

from __future__ import annotations

from pathlib import Path

import click

from elixirscope.cli import output
from elixirscope.cli.listing import print_listing
from elixirscope.cli.options import json_option
from elixirscope.code_analysis import CodeAnalysis, analyze_node, analyze_source
from elixirscope.dist.node import connect


@click.command()
@click.argument("node", required=False)
@click.argument("modules", nargs=-1, metavar="[MODULE...]")
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path),
              default=None, metavar="DIR",
              help="Analyse the Elixir files under DIR instead of a node (parsed, never "
                   "run): before the app runs. Any arguments are then modules to keep.")
@click.option("--cookie", default=None, metavar="COOKIE",
              help="The cookie (default: $ERLANG_COOKIE, then ~/.erlang.cookie).")
@click.option("--name", "own_name", default=None, metavar="NAME",
              help="Our hidden node's name (default: a random elixirscope_... name).")
@click.option("--top", type=click.IntRange(min=1), default=3, show_default=True,
              help="The most complex functions shown per module.")
@json_option("The whole analysis as one JSON document (functions, calls, edges, risks).")
def analyze(node: str | None, modules: tuple[str, ...], source: Path | None,
            cookie: str | None, own_name: str | None, top: int, as_json: bool) -> None:
    """Analyses the code NODE runs (the MODULEs named, or the modules of its own
    applications) from the debug info of the loaded modules, read on the node: no source
    checkout needed. Per module: what it is (GenServer, Supervisor, LiveView, Phoenix
    controller, Ecto repo or schema ...), its most complex functions and the running
    supervisors around it; then the call graph and the risks: GenServer callbacks that
    call other processes (deadlock risk), that sleep, block on I/O or receive, and
    processes only ever cast to. Modules without debug info are listed as such.
    With --source DIR, the Elixir files under DIR are analysed instead, before the app
    runs."""
    if source is not None:
        found = analyze_source(source, [*([node] if node else []), *modules] or None)
    elif node is None:
        raise click.UsageError("name a NODE, or a source tree with --source DIR")
    else:
        with connect(node, cookie, own_name=own_name) as conn:
            found = conn.run(analyze_node(conn.anode, list(modules) or None))
    if as_json:
        output.json_line(found.as_dict())
        return
    _print(found, top)


def _print(found: CodeAnalysis, top: int) -> None:
    rows = []
    for module in found.modules:
        if not module.debug_info:
            rows.append([module.name, "", "", f"no debug info ({module.reason}); "
                         f"{module.exports} exported functions", ""])
            continue
        hardest = sorted(module.functions, key=lambda f: (-f.complexity, -f.size))[:top]
        supervised = "; ".join(
            f"{s.name} ({s.strategy or '?'}, {s.children_count} children)"
            for s in module.supervisors)
        rows.append([module.name, ", ".join(module.kinds), str(len(module.functions)),
                     ", ".join(f"{f.name}/{f.arity} ({f.complexity})" for f in hardest),
                     supervised])
    print_listing(f"{found.node}: {len(found.modules)} modules",
                  ["module", "is", "functions", "most complex (complexity)", "supervisors"],
                  rows, right=0, cut=2)
    if found.not_found:
        output.err.print(f"not loaded on the node: {', '.join(found.not_found)}")
    output.out.print(f"\ncall graph: {len(found.edges)} edges between the functions of these "
                     "modules")
    for caller, callee, count in sorted(found.edges, key=lambda e: -e[2])[:5]:
        output.out.print(f"  {caller} → {callee}" + (f" ({count} call sites)" if count > 1
                                                     else ""))
    output.out.print(f"\nrisks: {len(found.risks)}")
    for risk in found.risks:
        output.out.print(f"  {risk.kind}: {risk.text}")
