"""The SQL of ``correlate.finalize``, one statement per step, in the order it runs.

Working tables are temporary and named ``fz_*``; each step reads only the raw tables
and the working tables of earlier steps, never the derived columns of ``events``, so
finalize can run again on its own output. Kinds and flags are the agent's numbers
(``tracing.events``): 1 call, 2 return, 3 exception, 4 send, 5 send_to_dead,
6 receive, 7 spawn, 8 spawned, 9 exit, 10-13 link changes, 14/15 (un)register;
flag 8 marks a call whose return or exception will be traced.
"""

from __future__ import annotations

# Every event, slim, with the running call depth of its process after the event.
# delta: +1 for a call that will return, -1 for a return or exception, 0 otherwise.
EVENT_DEPTH = """
CREATE OR REPLACE TEMP TABLE fz_ev AS
SELECT seq, node_id, pid_id, kind, ts, hlc, mfa_id, other_pid_id, delta,
       CAST(SUM(delta) OVER (PARTITION BY pid_id ORDER BY seq
                             ROWS UNBOUNDED PRECEDING) AS INTEGER) AS after
FROM (SELECT *, CAST(CASE WHEN kind = 1 AND flags & 8 <> 0 AND mfa_id IS NOT NULL THEN 1
                          WHEN kind IN (2, 3) THEN -1 ELSE 0 END AS TINYINT) AS delta
      FROM events)
"""

# Every event once more, with the last call opened before it at some level of its
# process: role 1 (a call) probes its level - 1 (its parent), role 2 (a return or
# exception) its own level (the call it may close), role 3 (anything else) its depth
# (the span it happens in). Role 0 rows are the calls again, as the openings; seq
# only grows, so MAX() is "the last one".
LOOKUPS = """
CREATE OR REPLACE TEMP TABLE fz_look AS
SELECT * EXCLUDE (level, opened) FROM (
    SELECT *, MAX(opened) OVER (PARTITION BY pid_id, level ORDER BY seq
                                ROWS UNBOUNDED PRECEDING) AS found
    FROM (SELECT *, after AS level, 0 AS role, seq AS opened FROM fz_ev WHERE delta = 1
          UNION ALL
          SELECT *, after - 1, 1, NULL FROM fz_ev WHERE delta = 1
          UNION ALL
          SELECT *, after + 1, 2, NULL FROM fz_ev WHERE delta = -1
          UNION ALL
          SELECT *, after, 3, NULL FROM fz_ev WHERE delta = 0))
WHERE role <> 0
"""

# The first return or exception at a call's level after it: the call's pair when it
# is for the same function.
FIRST_CLOSES = """
CREATE OR REPLACE TEMP TABLE fz_close AS
SELECT found AS call_seq, MIN(seq) AS close_seq, ARG_MIN(kind, seq) AS close_kind,
       ARG_MIN(mfa_id, seq) AS close_mfa_id, ARG_MIN(ts, seq) AS close_ts
FROM fz_look WHERE role = 2 AND found IS NOT NULL GROUP BY found
"""

# One row per call that will return. root_id: the outermost recorded span around
# it (the last span without a parent on its process, at or before it).
SPANS = """
CREATE OR REPLACE TEMP TABLE fz_span AS
WITH base AS (
    SELECT pid_id, LEAST(0, MIN(after)) AS base FROM fz_look WHERE role = 2 GROUP BY pid_id
), last_exit AS (
    SELECT pid_id, MAX(seq) AS exit_seq, ARG_MAX(ts, seq) AS exit_ts
    FROM fz_look WHERE kind = 9 GROUP BY pid_id
), spans AS (
    SELECT c.seq AS span_id, c.node_id, c.pid_id, c.mfa_id,
           c.after - COALESCE(b.base, 0) AS depth, c.found AS parent_span_id,
           c.ts AS start_ts, c.hlc AS start_hlc,
           CASE WHEN p.call_seq IS NOT NULL THEN p.close_ts
                WHEN x.exit_seq > c.seq THEN x.exit_ts END AS end_ts,
           CASE WHEN p.call_seq IS NOT NULL THEN p.close_seq
                WHEN x.exit_seq > c.seq THEN x.exit_seq END AS end_seq,
           CASE WHEN p.close_kind = 2 THEN 'return' WHEN p.close_kind = 3 THEN 'exception'
                WHEN x.exit_seq > c.seq THEN 'exit' ELSE 'open' END AS outcome
    FROM fz_look c
    LEFT JOIN fz_close p ON p.call_seq = c.seq AND p.close_mfa_id = c.mfa_id
    LEFT JOIN base b ON b.pid_id = c.pid_id
    LEFT JOIN last_exit x ON x.pid_id = c.pid_id
    WHERE c.role = 1
)
SELECT *, end_ts - start_ts AS duration_ns,
       MAX(CASE WHEN parent_span_id IS NULL THEN span_id END)
           OVER (PARTITION BY pid_id ORDER BY span_id ROWS UNBOUNDED PRECEDING) AS root_id
FROM spans
"""

# A process's receives of some bytes take the sends of those bytes to it first in,
# first out: each receive takes the oldest such send before it that no earlier
# receive took, or none (its send came before the recording, or was lost). In one
# (receiver, bytes) group in time order, with S and R the sends and receives so far,
# a receive finds the queue empty exactly when R - S reaches a new high above 0; the
# receives that do not are matched, the m-th of them (m = R - that high) to the m-th
# send. Sends from other nodes are placed by wall clock.
MATCHES = """
CREATE OR REPLACE TEMP TABLE fz_match AS
WITH q AS (
    SELECT seq, kind = 6 AS is_receive, ts + wall_offset AS wall, payload,
           CASE WHEN kind = 6 THEN pid_id ELSE other_pid_id END AS receiver
    FROM events WHERE (kind = 4 AND other_pid_id IS NOT NULL) OR kind = 6
), counted AS (
    SELECT seq, is_receive, wall, receiver, hash(payload) AS h, payload,
           COUNT(*) FILTER (WHERE NOT is_receive) OVER w AS sent,
           COUNT(*) FILTER (WHERE is_receive) OVER w AS received
    FROM q
    WINDOW w AS (PARTITION BY receiver, hash(payload), payload
                 ORDER BY wall, is_receive, seq ROWS UNBOUNDED PRECEDING)
), ranked AS (
    SELECT seq, is_receive, receiver, h, payload, sent, received,
           COALESCE(GREATEST(MAX(received - sent) OVER (
               PARTITION BY receiver, h, payload ORDER BY wall, is_receive, seq
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0), 0) AS unmatched
    FROM counted
)
SELECT s.seq AS send_seq, r.seq AS receive_seq
FROM ranked r JOIN ranked s
  ON s.receiver = r.receiver AND s.h = r.h AND s.payload = r.payload
     AND NOT s.is_receive AND s.sent = r.received - r.unmatched
WHERE r.is_receive AND r.received - r.sent <= r.unmatched
"""

# Every send, matched or not, then every receive whose send was not recorded.
MESSAGES = """
CREATE OR REPLACE TEMP TABLE fz_msg AS
SELECT e.seq AS message_id, e.node_id, e.seq AS send_seq, m.receive_seq,
       e.pid_id AS sender_pid_id, COALESCE(e.other_pid_id, r.pid_id) AS receiver_pid_id,
       e.target, e.ts AS sent_ts, r.ts AS received_ts, e.kind = 5 AS to_dead,
       sp.found AS send_span_id
FROM events e
LEFT JOIN fz_match m ON m.send_seq = e.seq
LEFT JOIN fz_look r ON r.seq = m.receive_seq
LEFT JOIN fz_look sp ON sp.seq = e.seq
WHERE e.kind IN (4, 5)
UNION ALL
SELECT r.seq, r.node_id, NULL, r.seq, NULL, r.pid_id, NULL, NULL, r.ts, false, NULL
FROM fz_look r ANTI JOIN fz_match m ON m.receive_seq = r.seq
WHERE r.kind = 6
"""

# What a received message is, from the first bytes of its ETF: a GenServer call
# ({:"$gen_call", from, request}), cast ({:"$gen_cast", request}), a system message,
# a reply to a call the process made ({ref, reply} or {[:alias | ref], reply}: taken by
# that call's own receive, never by a callback), or anything else (info). Atoms come
# as ATOM_EXT (d) from OTP 25 and SMALL_ATOM_UTF8_EXT (w) from OTP 26.
_CATEGORY = r"""
CASE WHEN starts_with(head, '\x83h\x03d\x00\x09$gen_call')
          OR starts_with(head, '\x83h\x03w\x09$gen_call') THEN 'call'
     WHEN starts_with(head, '\x83h\x02d\x00\x09$gen_cast')
          OR starts_with(head, '\x83h\x02w\x09$gen_cast') THEN 'cast'
     WHEN starts_with(head, '\x83h\x03d\x00\x06system')
          OR starts_with(head, '\x83h\x03w\x06system') THEN 'system'
     WHEN starts_with(head, '\x83h\x02Z') OR starts_with(head, '\x83h\x02r')
          OR starts_with(head, '\x83h\x02l\x00\x00\x00\x01d\x00\x05alias')
          OR starts_with(head, '\x83h\x02l\x00\x00\x00\x01w\x05alias') THEN 'reply'
     ELSE 'info' END"""

# What triggered each depth-1 span. A behaviour callback (handle_call/3,
# handle_cast/2, handle_info/2) serves the messages of its kind first in, first out:
# the n-th handle_cast of a process serves the n-th cast it received, after the casts
# already queued when tracing began (fz_backlog, from the mailbox record; when that
# count is unknown, nothing is paired). A callback with no such message has no trigger:
# its message was queued before the recording. Any other depth-1 span, and any span
# of a process without a mailbox record (a recording made elsewhere), serves the
# message received last before it, if that came after the process's previous depth-1
# span: a message is never taken twice, and a loop that received nothing has no
# trigger. A receive that timed out is traced as the message 'timeout': a gen_server's
# handle_info(:timeout) serves it, a handle_call or handle_cast never does (it is what
# a sleep inside the one before received).
TRIGGERS = f"""
CREATE OR REPLACE TEMP TABLE fz_trigger AS
WITH recv AS (
    SELECT m.receive_seq AS seq, m.receiver_pid_id AS pid_id, m.message_id,
           {_CATEGORY} AS category,
           head IN ('\\x83d\\x00\\x07timeout', '\\x83w\\x07timeout') AS timed_out
    FROM fz_msg m
    JOIN (SELECT seq, left(payload::VARCHAR, 48) AS head FROM events WHERE kind = 6) e
      ON e.seq = m.receive_seq
), firsts AS (
    SELECT s.span_id, s.pid_id,
           LAG(s.span_id) OVER (PARTITION BY s.pid_id ORDER BY s.span_id) AS prev,
           CASE WHEN f.function = 'handle_call' AND f.arity = 3 THEN 'call'
                WHEN f.function = 'handle_cast' AND f.arity = 2 THEN 'cast'
                WHEN f.function = 'handle_info' AND f.arity = 2 THEN 'info' END AS category
    FROM fz_span s JOIN functions f ON f.mfa_id = s.mfa_id
    WHERE s.depth = 1
), served AS (
    SELECT f.span_id, f.pid_id, f.category,
           ROW_NUMBER() OVER (PARTITION BY f.pid_id, f.category ORDER BY f.span_id) - b.n AS n
    FROM firsts f JOIN fz_backlog b ON b.pid_id = f.pid_id AND b.category = f.category
), arrived AS (
    SELECT *, ROW_NUMBER() OVER (PARTITION BY pid_id, category ORDER BY seq) AS n FROM recv
)
SELECT s.span_id, a.message_id
FROM served s
LEFT JOIN arrived a ON a.pid_id = s.pid_id AND a.category = s.category AND a.n = s.n
     AND a.seq < s.span_id
UNION ALL
SELECT f.span_id, CASE WHEN r.seq > COALESCE(f.prev, -1) THEN r.message_id END
FROM (SELECT * FROM firsts f WHERE category IS NULL OR NOT EXISTS (
          SELECT 1 FROM fz_backlog b WHERE b.pid_id = f.pid_id)) f
ASOF LEFT JOIN (SELECT *, 'any' AS kind_of FROM recv
                WHERE category NOT IN ('system', 'reply')
                UNION ALL
                SELECT *, 'message' FROM recv
                WHERE category NOT IN ('system', 'reply') AND NOT timed_out) r
     ON r.pid_id = f.pid_id
        AND r.kind_of = CASE WHEN f.category IN ('call', 'cast') THEN 'message' ELSE 'any' END
        AND f.span_id >= r.seq
"""

# Causal links between trees: a root span that a message triggered hangs under the
# root of the span that sent it. Links must go back in (hlc, span_id) order, so a
# chain can never loop. anc starts as the link (or the root itself) and is then
# doubled by CHAIN_STEP until every root points at the top of its chain.
CHAIN = """
CREATE OR REPLACE TEMP TABLE fz_chain AS
SELECT s.span_id, COALESCE(up.span_id, s.span_id) AS anc
FROM fz_span s
LEFT JOIN fz_trigger t ON t.span_id = s.span_id
LEFT JOIN fz_msg m ON m.message_id = t.message_id
LEFT JOIN fz_span sender ON sender.span_id = m.send_span_id
LEFT JOIN fz_span up ON up.span_id = sender.root_id
     AND (up.start_hlc < s.start_hlc OR (up.start_hlc = s.start_hlc AND up.span_id < s.span_id))
WHERE s.parent_span_id IS NULL
"""

CHAIN_STEP = """
UPDATE fz_chain SET anc = nxt.anc FROM fz_chain nxt
WHERE fz_chain.anc = nxt.span_id AND nxt.anc <> fz_chain.anc
"""

INSERT_SPANS = """
INSERT INTO spans
SELECT s.span_id, s.node_id, s.pid_id, s.mfa_id, s.depth, s.parent_span_id, s.start_ts,
       s.end_ts, s.duration_ns, s.end_seq, s.outcome, t.message_id, c.anc
FROM fz_span s
LEFT JOIN fz_trigger t ON t.span_id = s.span_id
LEFT JOIN fz_chain c ON c.span_id = s.root_id
-- Stored by function: "the slowest spans of F" then reads only F's row groups.
ORDER BY s.mfa_id, s.span_id
"""

INSERT_MESSAGES = """
INSERT INTO messages
WITH handled AS (
    SELECT t.message_id, MIN(t.span_id) AS handler_span_id,
           ARG_MIN(s.start_ts, t.span_id) AS handled_ts
    FROM fz_trigger t JOIN fz_span s ON s.span_id = t.span_id
    WHERE t.message_id IS NOT NULL GROUP BY t.message_id
)
SELECT m.message_id, m.node_id, m.send_seq, m.receive_seq, m.sender_pid_id,
       m.receiver_pid_id, m.target, m.sent_ts, m.received_ts, h.handled_ts,
       h.handled_ts - m.received_ts, m.to_dead, m.send_span_id, h.handler_span_id
FROM fz_msg m LEFT JOIN handled h ON h.message_id = m.message_id
"""

# The events again, with their span, the span's parent, their message, and the
# correlation of their span (or, outside spans, of their message's sending span).
REWRITE_EVENTS = """
INSERT INTO events_new
WITH msg_events AS (
    SELECT m.send_seq AS seq, m.message_id, ss.correlation_id AS msg_corr
    FROM fz_msg m LEFT JOIN spans ss ON ss.span_id = m.send_span_id
    WHERE m.send_seq IS NOT NULL
    UNION ALL
    SELECT m.receive_seq, m.message_id, ss.correlation_id
    FROM fz_msg m LEFT JOIN spans ss ON ss.span_id = m.send_span_id
    WHERE m.receive_seq IS NOT NULL
), derived AS (
    SELECT l.seq, s.span_id, s.parent_span_id, me.message_id,
           COALESCE(s.correlation_id, me.msg_corr) AS correlation_id
    FROM fz_look l
    LEFT JOIN spans s ON s.span_id = CASE l.role WHEN 1 THEN l.seq ELSE l.found END
         AND (l.role <> 2 OR s.end_seq = l.seq)
    LEFT JOIN msg_events me ON me.seq = l.seq
)
SELECT e.seq, e.node_id, e.pid_id, e.kind, e.flags, e.ts, e.wall_offset, e.hlc, e.mfa_id,
       e.other_pid_id, e.caller_mfa_id, e.target, e.payload, e.original_size,
       d.span_id, d.parent_span_id, d.message_id, d.correlation_id
FROM events e LEFT JOIN derived d ON d.seq = e.seq
ORDER BY e.seq
"""

# Register / unregister payloads are names as ETF; finalize decodes the few distinct
# ones into fz_names (payload, name).
NAME_PAYLOADS = "SELECT DISTINCT payload FROM events WHERE kind IN (14, 15)"

# Registered names over time. Per (process, name), every unregister ends a segment;
# a segment opens with a register event or with the name in the start snapshot (taken
# by the node's started_ts: since NULL), and one with only the unregister was
# registered before recording.
INSERT_PROCESS_NAMES = """
INSERT INTO process_names
WITH start_snapshot AS (
    SELECT ps.pid_id, ps.registered_name AS name
    FROM process_snapshots ps JOIN pids p ON p.pid_id = ps.pid_id
    LEFT JOIN nodes n ON n.node_id = p.node_id
    WHERE ps.registered_name IS NOT NULL
      AND ps.at_ts <= COALESCE(n.started_ts, (SELECT MIN(at_ts) FROM process_snapshots))
), marks AS (
    SELECT e.pid_id, n.name, e.seq AS ord, e.ts, e.kind = 15 AS closes, false AS snap
    FROM events e JOIN fz_names n ON n.payload = e.payload
    WHERE e.kind IN (14, 15)
    UNION ALL
    SELECT pid_id, name, -1, NULL, false, true FROM start_snapshot
), segments AS (
    SELECT *, COALESCE(SUM(CAST(closes AS INTEGER)) OVER (
                  PARTITION BY pid_id, name ORDER BY ord
                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS segment
    FROM marks
)
SELECT pid_id, name,
       CASE WHEN BOOL_OR(snap) THEN NULL ELSE MIN(ts) FILTER (WHERE NOT closes) END,
       MAX(ts) FILTER (WHERE closes)
FROM segments GROUP BY pid_id, name, segment
ORDER BY pid_id, MIN(ord), name
"""

# A name a later snapshot saw that no interval explains: held from then on.
INSERT_SNAPSHOT_NAMES = """
INSERT INTO process_names
SELECT ps.pid_id, ps.registered_name, MIN(ps.at_ts), NULL
FROM process_snapshots ps
WHERE ps.registered_name IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM process_names pn
    WHERE pn.pid_id = ps.pid_id AND pn.name = ps.registered_name
      AND (pn.since_ts IS NULL OR pn.since_ts <= ps.at_ts)
      AND (pn.until_ts IS NULL OR pn.until_ts >= ps.at_ts))
GROUP BY ps.pid_id, ps.registered_name
"""

INSERT_PROCESSES = """
INSERT INTO processes
WITH births AS (
    SELECT CASE kind WHEN 7 THEN other_pid_id ELSE pid_id END AS child,
           CASE kind WHEN 7 THEN pid_id ELSE other_pid_id END AS parent,
           mfa_id, ts, seq
    FROM fz_look WHERE kind IN (7, 8)
), born AS (
    SELECT child, ARG_MIN(parent, seq) FILTER (WHERE parent IS NOT NULL) AS parent,
           ARG_MIN(mfa_id, seq) FILTER (WHERE mfa_id IS NOT NULL) AS mfa_id,
           MIN(ts) AS spawned_ts
    FROM births WHERE child IS NOT NULL GROUP BY child
), snapshot_calls AS (
    SELECT pid_id, ARG_MIN(initial_call, at_ts) AS initial_call
    FROM process_snapshots WHERE initial_call IS NOT NULL GROUP BY pid_id
), seen_names AS (
    SELECT pid_id, name, MIN(t) AS t FROM (
        SELECT e.pid_id, n.name, e.ts AS t
        FROM events e JOIN fz_names n ON n.payload = e.payload WHERE e.kind IN (14, 15)
        UNION ALL
        SELECT pid_id, registered_name, at_ts FROM process_snapshots
        WHERE registered_name IS NOT NULL)
    GROUP BY pid_id, name
), names AS (
    SELECT pid_id, LIST(name ORDER BY t, name) AS names FROM seen_names GROUP BY pid_id
), activity AS (
    SELECT pid_id, MIN(ts) AS first_ts, MAX(ts) AS last_ts, COUNT(*) AS events
    FROM fz_look GROUP BY pid_id
), exits AS (
    SELECT pid_id, ARG_MAX(ts, seq) AS exit_ts, ARG_MAX(payload, seq) AS exit_reason
    FROM events WHERE kind = 9 GROUP BY pid_id
)
SELECT p.pid_id, p.node_id, p.pid, b.parent,
       COALESCE(f.module || '.' || f.function || '/' || f.arity, sc.initial_call),
       n.names, a.first_ts, a.last_ts, b.spawned_ts, x.exit_ts, x.exit_reason,
       COALESCE(a.events, 0)
FROM pids p
LEFT JOIN born b ON b.child = p.pid_id
LEFT JOIN functions f ON f.mfa_id = b.mfa_id
LEFT JOIN snapshot_calls sc ON sc.pid_id = p.pid_id
LEFT JOIN names n ON n.pid_id = p.pid_id
LEFT JOIN activity a ON a.pid_id = p.pid_id
LEFT JOIN exits x ON x.pid_id = p.pid_id
ORDER BY p.pid_id
"""

# Per (process, other), every unlink ends a segment; a segment with only the unlink
# is a link made before recording (linked_ts NULL).
INSERT_LINKS = """
INSERT INTO links
WITH marks AS (
    SELECT pid_id, other_pid_id, seq, ts, kind IN (11, 13) AS closes
    FROM fz_look WHERE kind IN (10, 11, 12, 13) AND other_pid_id IS NOT NULL
), segments AS (
    SELECT *, COALESCE(SUM(CAST(closes AS INTEGER)) OVER (
                  PARTITION BY pid_id, other_pid_id ORDER BY seq
                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS segment
    FROM marks
)
SELECT pid_id, other_pid_id, MIN(ts) FILTER (WHERE NOT closes),
       MAX(ts) FILTER (WHERE closes)
FROM segments GROUP BY pid_id, other_pid_id, segment
ORDER BY pid_id, MIN(seq)
"""

# What the UI's activity bins cover, as web.model.View reckons it: from the earliest
# node start (else the first event) to the last event or node end (Python takes the
# larger); plus the last seq and the count, to recognise the events they were made of.
ACTIVITY_EXTENT = """
SELECT (SELECT MIN(started_ts + time_offset_ns) FROM nodes WHERE started_ts IS NOT NULL),
       (SELECT MAX(ended_ts + time_offset_ns) FROM nodes WHERE ended_ts IS NOT NULL),
       MIN(ts + wall_offset), MAX(ts + wall_offset), MAX(seq), COUNT(*)
FROM events
"""

# Events and error events per (bin, process) key (schema: activity_bins); times before
# the origin fall in bin 0. Formatted with integers: origin, shift, lane_bits, errors
# (the error kinds as an SQL tuple).
ACTIVITY_BINS = """
INSERT INTO activity_bins
SELECT ((GREATEST(ts + wall_offset - {origin}, 0) >> {shift}) << {lane_bits}) | pid_id
           AS key,
       COUNT(*), COUNT(*) FILTER (WHERE kind IN {errors})
FROM events GROUP BY key ORDER BY key
"""

WORK_TABLES = ("fz_ev", "fz_look", "fz_close", "fz_span", "fz_match", "fz_msg",
               "fz_trigger", "fz_chain", "fz_names", "fz_backlog")

# The first mailbox record of each process (kind 18): what it had queued when its
# tracing began.
MAILBOX_PAYLOADS = """
SELECT pid_id, ARG_MIN(payload, seq) FROM events WHERE kind = 18 GROUP BY pid_id
"""
