"""The layers import downward only: the store and its queries, then the analyses, then
the detectors, then the public Recording, the CLI and the web UI. A new detector is one
file that imports downward."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parent.parent / "src" / "elixirscope"
ABOVE = {
    "recording": ("analysis", "diagnosis", "recordings", "cli", "web"),
    "analysis": ("diagnosis", "recordings", "cli", "web"),
    "diagnosis": ("recordings", "cli", "web"),
}


def imported(path: Path) -> set[str]:
    """Every module a file imports, at its top, inside functions and for type checking."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("layer", sorted(ABOVE))
def test_a_layer_imports_nothing_above_it(layer: str) -> None:
    files = sorted((PACKAGE / layer).glob("*.py"))
    assert files, f"no modules in {layer}"
    upward = [(path.name, name) for path in files for name in sorted(imported(path))
              if any(name == f"elixirscope.{above}" or name.startswith(f"elixirscope.{above}.")
                     for above in ABOVE[layer])]
    assert upward == []
