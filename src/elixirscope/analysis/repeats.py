"""``repeated_call_trees``: identical call subtrees that ran more than once, ranked by
the time the repeats took (redundant work, N+1 lookups, retry storms).

A subtree's fingerprint is built bottom up, one depth at a time, in SQL: a call's own
hash covers its function, its arguments' bytes and its result's bytes (with any traced
call inside it that expects no return); its fingerprint hashes that with the sum of
its callees' fingerprints (the callees as a sorted multiset: their order is ignored).
Calls are grouped by fingerprint.

Only calls whose own hash occurs ``min_count`` times can be in a repeated subtree,
and a call whose callees are not all such calls cannot either, so the depth-by-depth
pass runs over those candidates only. Calls that did not return (exceptions count,
crashes and open calls do not) are left out, and so are their callers.

A subtree that only ever runs inside copies of one bigger repeated subtree, once per
copy, says nothing the bigger one does not, and is left out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from elixirscope.analysis.results import RepeatedTree
from elixirscope.errors import QueryError
from elixirscope.recording import sql

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries
    from elixirscope.recording.timespec import TimeSpec

_TABLES = ("rt_base", "rt_cand", "rt_level", "rt_next", "rt_all")

_BASE = """
CREATE OR REPLACE TEMP TABLE rt_base AS
WITH s AS (
    SELECT s.span_id, s.parent_span_id, s.mfa_id, s.depth, s.duration_ns
    FROM spans s LEFT JOIN nodes n USING (node_id) {where}
), own AS (
    SELECT span_id, sum(hash(kind, mfa_id, payload)::HUGEINT) AS h FROM events
    WHERE kind IN (1, 2, 3) AND span_id IS NOT NULL GROUP BY span_id
)
SELECT s.*, hash(s.mfa_id, own.h) AS h FROM s JOIN own USING (span_id)
"""

_CANDIDATES = """
CREATE OR REPLACE TEMP TABLE rt_cand AS
WITH c AS (
    SELECT * FROM rt_base
    WHERE h IN (SELECT h FROM rt_base GROUP BY h HAVING count(*) >= ?)
), kids AS (
    SELECT parent_span_id AS span_id, count(*) AS kids FROM spans
    WHERE parent_span_id IN (SELECT span_id FROM c) GROUP BY parent_span_id
)
SELECT c.*, coalesce(kids.kids, 0) AS kids FROM c LEFT JOIN kids USING (span_id)
ORDER BY c.depth
"""

# The calls at one depth whose callees (at the depth below, in rt_level) are all
# candidates with a fingerprint.
_LEVEL = """
CREATE OR REPLACE TEMP TABLE rt_next AS
SELECT b.span_id, b.parent_span_id, b.mfa_id, b.duration_ns,
       hash(b.h, coalesce(c.fps, 0::HUGEINT)) AS fp, 1 + coalesce(c.size, 0) AS size
FROM rt_cand b LEFT JOIN (
    SELECT parent_span_id, sum(fp::HUGEINT) AS fps, sum(size) AS size, count(*) AS n
    FROM rt_level GROUP BY parent_span_id) c ON c.parent_span_id = b.span_id
WHERE b.depth = ? AND b.kids = coalesce(c.n, 0)
"""

_GROUPS = """
WITH g AS (
    SELECT fp, count(*) AS n, any_value(size) AS size, any_value(mfa_id) AS mfa_id,
           avg(duration_ns) AS mean, sum(duration_ns) AS total,
           list(span_id ORDER BY span_id)[1:?] AS ids
    FROM rt_all GROUP BY fp HAVING count(*) >= ? AND any_value(size) >= ?
), inside AS (
    SELECT a.fp, count(p.fp) AS with_parent, count(DISTINCT p.fp) AS parents,
           any_value(p.fp) AS parent_fp
    FROM rt_all a SEMI JOIN g USING (fp) LEFT JOIN rt_all p ON p.span_id = a.parent_span_id
    GROUP BY a.fp
)
SELECT g.mfa_id, g.n, g.size, g.mean, g.total, (g.n - 1) * g.mean AS wasted, g.ids
FROM g JOIN inside i USING (fp)
WHERE NOT (i.with_parent = g.n AND i.parents = 1 AND EXISTS (
    SELECT 1 FROM g AS outer_g WHERE outer_g.fp = i.parent_fp AND outer_g.n = g.n))
  {roots}
ORDER BY wasted DESC, g.ids[1]{limit}
"""


def repeated_call_trees(rec: RecordingQueries, min_count: int = 2, min_size: int = 1,
                        module: str | None = None, function: str | None = None,
                        pid: str | int | None = None, since: TimeSpec | None = None,
                        until: TimeSpec | None = None, limit: int | None = 20,
                        max_span_ids: int = 100) -> list[RepeatedTree]:
    """Call subtrees that ran at least ``min_count`` times with at least ``min_size``
    calls each, the most wasted time first. ``module``/``function`` choose the
    subtrees' root function; ``pid`` and ``since``/``until`` (call start) the calls
    looked at."""
    if min_count < 2:
        raise QueryError(f"min_count must be at least 2, not {min_count}")
    if min_size < 1:
        raise QueryError(f"min_size must be at least 1, not {min_size}")
    roots = rec.mfa_ids(module, function)
    where = sql.Where()
    where.add("s.outcome IN ('return', 'exception')")
    where.within("s.pid_id", rec.pid_ids(pid) if pid is not None else None)
    rec.time_range(where, sql.SPAN_START, since, until, raw="s.start_ts")
    con = rec.con
    try:
        con.execute(_BASE.format(where=where.sql()), where.params)
        con.execute(_CANDIDATES, [min_count])
        con.execute("CREATE OR REPLACE TEMP TABLE rt_all (span_id BIGINT, "
                    "parent_span_id BIGINT, mfa_id INTEGER, duration_ns BIGINT, fp UBIGINT, "
                    "size HUGEINT)")
        con.execute("CREATE OR REPLACE TEMP TABLE rt_level AS FROM rt_all")
        depths = con.execute("SELECT min(depth), max(depth) FROM rt_cand").fetchone()
        if depths is not None and depths[0] is not None:
            for depth in range(depths[1], depths[0] - 1, -1):
                con.execute(_LEVEL, [depth])
                con.execute("INSERT INTO rt_all FROM rt_next")
                con.execute("CREATE OR REPLACE TEMP TABLE rt_level AS FROM rt_next")
        where_roots = sql.Where()
        where_roots.within("g.mfa_id", roots)
        text = _GROUPS.format(roots=" AND " + " AND ".join(where_roots.clauses)
                              if roots is not None else "", limit=sql.limit_sql(limit))
        rows = con.execute(text, [max_span_ids, min_count, min_size,
                                 *where_roots.params]).fetchall()
    finally:
        for table in _TABLES:
            con.execute(f"DROP TABLE IF EXISTS {table}")
    where_examples = sql.Where()
    where_examples.within("s.span_id", [row[6][0] for row in rows])
    examples = {span.span_id: span for span in
                rec.spans_where(where_examples, "s.span_id", None)} if rows else {}
    return [RepeatedTree(example=examples[ids[0]], count=count, size=int(size),
                         mean=mean / 1e9, total=total / 1e9, wasted=wasted / 1e9,
                         span_ids=tuple(ids))
            for _, count, size, mean, total, wasted, ids in rows]
