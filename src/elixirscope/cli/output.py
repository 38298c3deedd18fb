"""Where the command line writes: data to stdout, messages and errors to stderr."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from typing import Any, Protocol

from rich.console import Console

# Piped output is read by programs and wide terminals alike: never cut it at 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def json_line(value: Any) -> None:
    """One JSON document on one line (``--json`` output is JSON lines)."""
    out.out(json.dumps(value, ensure_ascii=False, default=str), highlight=False)


class AsDict(Protocol):
    def as_dict(self) -> dict[str, Any]: ...


def json_rows(rows: Iterable[AsDict]) -> None:
    """Each row's ``as_dict()`` as one JSON line."""
    for row in rows:
        json_line(row.as_dict())


def error(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", markup=True, highlight=False)
