"""(being written) Correlation: builds the derived tables of a recording."""

from __future__ import annotations

import duckdb


def finalize(con: duckdb.DuckDBPyConnection) -> None:
    raise NotImplementedError
