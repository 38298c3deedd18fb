"""Findings kept in the recording file: the ``findings`` table, and under the meta key
``findings`` the version of the detectors that wrote them. Findings written by other
detectors than the running ones are stale and recomputed."""

from __future__ import annotations

import json
from collections.abc import Sequence

import duckdb

from elixirscope.diagnosis.finding import Evidence, Finding
from elixirscope.recording import store

TABLE = """CREATE TABLE findings (
    finding_id INTEGER PRIMARY KEY, kind VARCHAR NOT NULL, title VARCHAR NOT NULL,
    severity VARCHAR NOT NULL, start_s DOUBLE, end_s DOUBLE, processes VARCHAR[],
    evidence VARCHAR NOT NULL, next_commands VARCHAR[], details VARCHAR[],
    weight DOUBLE NOT NULL)"""
META_KEY = "findings"


def read(con: duckdb.DuckDBPyConnection, version: str) -> list[Finding] | None:
    """The stored findings, worst first, or None when none were stored by detectors
    of this ``version``."""
    if store.read_meta(con).get(META_KEY) != version:
        return None
    rows = con.execute(
        "SELECT finding_id, kind, title, severity, start_s, end_s, processes, evidence, "
        "next_commands, details, weight FROM findings ORDER BY finding_id").fetchall()
    return [Finding(kind=kind, title=title, severity=severity, start=start, end=end,
                    processes=tuple(processes or ()),
                    evidence=Evidence.from_dict(json.loads(evidence)),
                    next_commands=tuple(commands or ()), details=tuple(details or ()),
                    weight=weight, finding_id=finding_id)
            for (finding_id, kind, title, severity, start, end, processes, evidence,
                 commands, details, weight) in rows]


def write(con: duckdb.DuckDBPyConnection, findings: Sequence[Finding], version: str) -> None:
    """Replaces the stored findings (numbered in the order given) in one transaction."""
    with con.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute("DROP TABLE IF EXISTS findings")
        cur.execute(TABLE)
        rows = [[f.finding_id, f.kind, f.title, f.severity, f.start, f.end, list(f.processes),
                 json.dumps(f.evidence.as_dict()), list(f.next_commands),
                 list(f.details),
                 f.weight] for f in findings]
        if rows:
            cur.executemany("INSERT INTO findings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            rows)
        store.put_meta(cur, {META_KEY: version})
        cur.execute("COMMIT")
