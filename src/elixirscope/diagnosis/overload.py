"""Overload: a process whose mailbox grows because messages arrive faster than its
handlers serve them; which message shapes arrive how fast, what each costs to
handle, and who sends them.

The backlog is counted from the recording's messages: +1 when a message reached the
mailbox, -1 when the call that handles it began. It is only counted for processes
whose handlers are traced (most received messages led to a handler), and the
mailbox samples taken while recording (``mailbox`` events and process metrics)
count for the others.
"""

from __future__ import annotations

import statistics
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from elixirscope.analysis import metrics
from elixirscope.analysis.shapes import payload_shape
from elixirscope.diagnosis.finding import Evidence, Finding
from elixirscope.etf import Atom, encode
from elixirscope.recording.results import duration_text

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries

MIN_BACKLOG = 100
# The atom timeout as OTP 25 encodes it in trace messages (ATOM_EXT) and as OTP 26 on.
_TIMEOUT = [b"\x83d\x00\x07timeout", encode(Atom("timeout"))]
SHAPE_SAMPLE = 2000



def _blob(data: bytes) -> str:
    return "'" + "".join(f"\\x{byte:02X}" for byte in data) + "'::BLOB"


# Not counted: a receive that timed out, traced as the message 'timeout' that nobody
# sent; and replies to calls ({Ref, Reply}, {[:alias | Ref], Reply}), which the
# caller's own receive takes, not a handler.
_TIMEOUT_SQL = " OR ".join(f"payload = {_blob(data)}" for data in _TIMEOUT)
_REPLY_PREFIXES = (b"\x83h\x02Z", b"\x83h\x02r",
                   b"\x83h\x02l\x00\x00\x00\x01d\x00\x05alias",
                   b"\x83h\x02l\x00\x00\x00\x01w\x05alias")
_REPLY_SQL = " OR ".join(f"payload[1:{len(prefix)}] = {_blob(prefix)}"
                         for prefix in _REPLY_PREFIXES)
_REAL = (f"m.receive_seq NOT IN (SELECT seq FROM events WHERE kind = 6 AND ({_REPLY_SQL})) "
         f"AND NOT (m.send_seq IS NULL AND m.receive_seq IN "
         f"(SELECT seq FROM events WHERE kind = 6 AND ({_TIMEOUT_SQL})))")

_BACKLOG = f"""
WITH real AS (
    SELECT m.* FROM messages m
    WHERE m.receiver_pid_id IN (SELECT unnest(?::INTEGER[])) AND {_REAL}
), steps AS (
    SELECT receiver_pid_id AS pid_id, received_ts AS ts, 1 AS step FROM real
    WHERE received_ts IS NOT NULL
    UNION ALL
    SELECT receiver_pid_id, handled_ts, -1 FROM real WHERE handled_ts IS NOT NULL
), running AS (
    SELECT pid_id, ts, SUM(step) OVER (PARTITION BY pid_id ORDER BY ts, step DESC
                                       ROWS UNBOUNDED PRECEDING) AS backlog
    FROM steps
)
SELECT pid_id, MAX(backlog), ARG_MAX(ts, backlog), ARG_MAX(backlog, ts), MIN(ts), MAX(ts)
FROM running GROUP BY pid_id
"""


def detect(rec: RecordingQueries) -> list[Finding]:
    candidates = rec.con.execute(
        "SELECT receiver_pid_id, count(*), count(handled_ts), max(queue_ns) FROM messages m "
        f"WHERE received_ts IS NOT NULL AND receiver_pid_id IS NOT NULL AND {_REAL} "
        "GROUP BY receiver_pid_id HAVING count(*) >= ?", [MIN_BACKLOG]).fetchall()
    # A process whose handlers are not traced has no handled times: its backlog is
    # unknown from messages alone.
    counted = [row[0] for row in candidates if row[2] >= 0.05 * row[1]]
    found = []
    # Counting needs every handler call: where calls were sampled out, a message whose
    # handler was not kept would count as queued forever. The sampled mailbox length is
    # the truth then, and where it was sampled it decides.
    sampled_out = int(((rec.meta.get("agent_stats") or {}).get("sampled_out")) or 0)
    mailboxes = metrics.growing_mailboxes(rec, 0)  # every sampled process
    sampled = {pid_id for pid_id, _, _ in mailboxes}
    counted = [pid_id for pid_id in counted if not sampled_out and pid_id not in sampled]
    if counted:
        for pid_id, peak, peak_ts, last, first_ts, last_ts in rec.con.execute(
                _BACKLOG, [counted]).fetchall():
            if peak >= MIN_BACKLOG and last >= peak / 2:
                node_id = rec.dims.node_of(pid_id) or 0
                found.append(_finding(rec, pid_id, int(peak), rec.dims.at(peak_ts, node_id),
                                      int(last), rec.dims.at(first_ts, node_id),
                                      rec.dims.at(last_ts, node_id)))
    seen = {finding.processes[0] for finding in found}
    received = {row[0]: int(row[1]) for row in candidates}
    for pid_id, peak, last in mailboxes:
        if peak < MIN_BACKLOG:
            continue
        who = rec.dims.name(pid_id) or rec.dims.pid(pid_id) or "?"
        if who not in seen and last >= peak / 2:
            found.append(_sampled(rec, pid_id, who, received.get(pid_id, 0)))
    return found


def _sampled(rec: RecordingQueries, pid_id: int, who: str, received: int) -> Finding:
    """A growing mailbox seen in the process metrics; with what its recorded messages
    say when they were traced."""
    samples = metrics.series(rec, pid_id)
    peak = max(samples, key=lambda sample: sample.queue)
    last = samples[-1]
    if received >= MIN_BACKLOG:
        return _finding(rec, pid_id, peak.queue, peak.time, last.queue, samples[0].time,
                        last.time)
    busy = [s.reductions_per_s for s in samples if s.reductions_per_s is not None]
    where = Counter(sample.current_function for sample in samples).most_common(1)[0][0]
    title = (f"{who}'s mailbox grew to {peak.queue:,} messages by {peak.time:.3f} s, "
             f"{last.queue:,} still queued at {last.time:.3f} s; it was mostly in {where}"
             + (f", at {statistics.median(busy):,.0f} reductions/s" if busy else ""))
    first = samples[0]
    return Finding(
        kind="overload", title=title, severity="error" if peak.queue >= 1000 else "warning",
        start=first.time, end=last.time, processes=(who,), evidence=Evidence(),
        next_commands=(f"elixirscope top REC --at {peak.time:.3f}",
                       f"elixirscope record NODE --trace-process {who} --duration 5 "
                       "(to see which messages arrive and who sends them)"),
        details=(f"mailbox {first.queue:,} at {first.time:.3f} s, {peak.queue:,} at "
                 f"{peak.time:.3f} s, {last.queue:,} at {last.time:.3f} s",
                 f"memory {last.memory / 1024:,.0f} KB at the end"),
        weight=float(peak.queue))


def _finding(rec: RecordingQueries, pid_id: int, peak: int, peak_at: float, last: int,
             start: float, end: float) -> Finding:
    """The backlog (``peak`` messages at ``peak_at``, ``last`` at ``end``) with what
    the recorded messages say: their shapes, rates, senders and handlers."""
    dims = rec.dims
    who = dims.name(pid_id) or dims.pid(pid_id) or "?"
    rows = rec.con.execute(
        "SELECT m.message_id, e.payload, m.sender_pid_id, s.duration_ns, s.mfa_id, "
        "m.received_ts FROM messages m JOIN events e ON e.seq = m.receive_seq "
        "LEFT JOIN spans s ON s.span_id = m.handler_span_id "
        f"WHERE m.receiver_pid_id = ? AND {_REAL} "
        f"USING SAMPLE reservoir({SHAPE_SAMPLE} ROWS) REPEATABLE (1)",
        [pid_id]).fetchall()
    total = rec.con.execute(f"SELECT count(*) FROM messages m WHERE receiver_pid_id = ? "
                            f"AND received_ts IS NOT NULL AND {_REAL}",
                            [pid_id]).fetchone()
    received = int(total[0]) if total else len(rows)
    scale = received / max(len(rows), 1)
    arrivals: dict[str, list[int]] = defaultdict(list)
    shapes: Counter[str] = Counter()
    service: dict[str, list[float]] = defaultdict(list)
    handlers: dict[str, Counter[int]] = defaultdict(Counter)
    senders: dict[str, Counter[int]] = defaultdict(Counter)
    examples: list[int] = []
    for message_id, payload, sender, duration_ns, mfa_id, received_ts in rows:
        kind = payload_shape(bytes(payload))
        shapes[kind] += 1
        arrivals[kind].append(received_ts)
        if duration_ns is not None:
            service[kind].append(duration_ns / 1e9)
        if mfa_id is not None:
            handlers[kind][mfa_id] += 1
        if sender is not None:
            senders[kind][sender] += 1
        if len(examples) < 20:
            examples.append(message_id)
    top, count = shapes.most_common(1)[0]
    arriving = _arrival(count * scale, arrivals[top])
    cost = statistics.median(service[top]) if service[top] else None
    handler = handlers[top].most_common(1)[0][0] if handlers[top] else None
    sender = senders[top].most_common(1)[0][0] if senders[top] else None
    handler_text = (f"{rec.dims.mfa(handler)} takes {duration_text(cost)} each ({1 / cost:,.0f}/s)"
                    if handler is not None and cost else "its handler is not traced")
    title = (f"{who} is overloaded: {peak:,} messages queued at {peak_at:.3f} s, "
             f"{last:,} still queued at the end; {top} {arriving}"
             f"{f' from {dims.label(sender)}' if sender is not None else ''} and "
             f"{handler_text}")
    details = [f"{shape_}: {n * scale:,.0f} messages, {_arrival(n * scale, arrivals[shape_])}"
               + (f", handled in {duration_text(statistics.median(service[shape_]))} (median)"
                  if service[shape_] else "")
               for shape_, n in shapes.most_common(5)]
    details.append(f"{last:,} messages still queued when the recording ended")
    return Finding(
        kind="overload", title=title, severity="error" if peak >= 1000 else "warning",
        start=start, end=end, processes=(who,),
        evidence=Evidence(messages=tuple(examples)),
        next_commands=(f"elixirscope flow REC {who} --limit 50",
                       f"elixirscope stats REC --pid {who}"),
        details=tuple(details), weight=float(peak))


def _arrival(count: float, times: list[int]) -> str:
    """How fast ``count`` messages arrived at ``times`` (ns): a rate, or for a burst
    the time it took."""
    seconds = (max(times) - min(times)) / 1e9 if len(times) > 1 else 0.0
    if seconds < 0.1:
        return f"{count:,.0f} arrived within {seconds * 1000:.2g} ms"
    return f"arrives at {count / seconds:,.0f}/s"


