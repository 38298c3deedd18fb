"""Listings: rows of short columns followed by text columns (a call, a payload, a
reason) that share what is left of the terminal's width.

A text that does not fit is cut in its row and printed whole on a detail line under
it, so a narrow terminal never hides the one field that matters; the terminal wraps
that line, never the table's columns into one another.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.cells import cell_len, set_cell_size
from rich.text import Text

from elixirscope.cli import output

# Text columns never get narrower than this, however narrow the terminal.
MIN_TEXT_WIDTH = 12
GAP = "  "
DETAIL_INDENT = "    "
DETAIL_LIMIT = 2000


def print_listing(title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], *,
                  right: int, cut: int,
                  details: Sequence[Sequence[str]] | None = None) -> None:
    """Print ``rows`` under ``title``: the first ``right`` columns right-aligned, the
    last ``cut`` columns (texts) cut to the room left and printed whole beneath a row
    whose text was cut. ``details`` holds, per row, further lines to print under it."""
    fixed = len(headers) - cut
    widths = [max(cell_len(row[i]) for row in [headers, *rows]) for i in range(fixed)]
    used = sum(widths) + len(GAP) * (len(headers) - 1)
    widths += _share(output.out.width - used,
                     [max(cell_len(row[i]) for row in [headers, *rows])
                      for i in range(fixed, len(headers))])
    _line(title)
    _line(_join(headers, widths, right))
    for n, given in enumerate(rows):
        row = [cell.replace("\n", " ") for cell in given]
        shown = [cell if cell_len(cell) <= widths[i] else _cut(cell, widths[i])
                 for i, cell in enumerate(row)]
        _line(_join(shown, widths, right))
        for i in range(fixed, len(row)):
            if shown[i] != row[i]:
                _line(f"{DETAIL_INDENT}{headers[i]}: {_whole(row[i].strip())}")
        for extra in (details[n] if details else ()):
            _line(f"{DETAIL_INDENT}{extra}")


def _share(room: int, wanted: list[int]) -> list[int]:
    """Widths for text columns that want ``wanted``: the narrow ones get all they
    want, the wide ones share what is left equally (never under MIN_TEXT_WIDTH)."""
    widths = list(wanted)
    left = len(wanted)
    for i in sorted(range(len(wanted)), key=wanted.__getitem__):
        widths[i] = max(MIN_TEXT_WIDTH, min(wanted[i], room // left))
        room -= widths[i]
        left -= 1
    return widths


def _join(cells: Sequence[str], widths: Sequence[int], right: int) -> str:
    padded = [set_cell_size(cell, width) if i >= right
              else " " * (width - cell_len(cell)) + cell
              for i, (cell, width) in enumerate(zip(cells, widths, strict=True))]
    return GAP.join(padded).rstrip()


def _whole(text: str) -> str:
    """The text for its detail line: whole up to ``DETAIL_LIMIT`` characters (a
    call's arguments and a reason fit; a 1 MB payload is for --json)."""
    if len(text) <= DETAIL_LIMIT:
        return text
    return f"{text[:DETAIL_LIMIT]}… ({len(text) - DETAIL_LIMIT} more characters in --json)"


def _cut(text: str, width: int) -> str:
    return set_cell_size(text, width - 1) + "…"


def _line(text: str) -> None:
    # Text, not a string: a payload such as "[red]" is not Rich markup.
    output.out.print(Text(text), soft_wrap=True)
