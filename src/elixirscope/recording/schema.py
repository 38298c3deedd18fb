"""The layout of a recording file (one DuckDB database per recording).

Raw tables are appended while recording; derived tables are built by
``correlate.finalize`` when the recording closes (or when a recording that was not
closed cleanly is opened). Times are nanoseconds on the node's monotonic clock
(``ts``); ``ts + wall_offset`` is the node's wall clock (Unix ns); ``hlc`` is a
hybrid logical clock value (wall-clock ns, bumped to stay strictly increasing per
node) that multi-node recordings merge on.

Ids: ``seq`` numbers events in arrival order across the whole recording; ``pid_id``
and ``mfa_id`` index the ``pids`` and ``functions`` tables. A span's id is the
``seq`` of its call event; a message's id is the ``seq`` of its send event (or of its
receive event when the send was not recorded).
"""

from __future__ import annotations

FORMAT = "elixirscope-recording"
FORMAT_VERSION = 1

# Events of a finalized recording; span_id .. correlation_id are filled by finalize.
EVENTS = """
CREATE TABLE IF NOT EXISTS events (
    seq BIGINT NOT NULL,
    node_id SMALLINT NOT NULL,
    pid_id INTEGER NOT NULL,
    kind UTINYINT NOT NULL,
    flags UTINYINT NOT NULL,
    ts BIGINT NOT NULL,
    wall_offset BIGINT NOT NULL,
    hlc BIGINT NOT NULL,
    mfa_id INTEGER,
    other_pid_id INTEGER,
    caller_mfa_id INTEGER,
    target VARCHAR,
    payload BLOB NOT NULL,
    original_size INTEGER NOT NULL,
    span_id BIGINT,
    parent_span_id BIGINT,
    message_id BIGINT,
    correlation_id BIGINT
)"""

# While recording the table has only the raw columns (four fewer to write per event);
# finalize rebuilds it as EVENTS, derived columns filled.
RAW_EVENTS = EVENTS.replace(""",
    span_id BIGINT,
    parent_span_id BIGINT,
    message_id BIGINT,
    correlation_id BIGINT
)""", "\n)")
assert RAW_EVENTS != EVENTS

# Columns the recorder writes, in order.
RAW_EVENT_COLUMNS = (
    "seq", "node_id", "pid_id", "kind", "flags", "ts", "wall_offset", "hlc", "mfa_id",
    "other_pid_id", "caller_mfa_id", "target", "payload", "original_size",
)

RAW_TABLES = (
    RAW_EVENTS,
    # key -> JSON value. Keys: format, format_version, recorder_version, created_wall_ns,
    # started_ts/ended_ts per node in `nodes`, traces, limits, ring, drops, breaker,
    # agent_stats, finalized (true once the derived tables are complete).
    "CREATE TABLE IF NOT EXISTS meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    """CREATE TABLE IF NOT EXISTS nodes (
        node_id SMALLINT PRIMARY KEY, name VARCHAR NOT NULL, otp_release VARCHAR,
        erts_version VARCHAR, elixir_version VARCHAR, time_offset_ns BIGINT NOT NULL,
        started_ts BIGINT, ended_ts BIGINT)""",
    # module is written as Elixir writes it: Bank.Account, :gen_server.
    """CREATE TABLE IF NOT EXISTS functions (
        mfa_id INTEGER PRIMARY KEY, module VARCHAR NOT NULL, function VARCHAR NOT NULL,
        arity SMALLINT NOT NULL)""",
    # pid is the text form <0.123.0> (local to node_id); term is its raw ETF.
    """CREATE TABLE IF NOT EXISTS pids (
        pid_id INTEGER PRIMARY KEY, node_id SMALLINT NOT NULL, pid VARCHAR NOT NULL,
        term BLOB NOT NULL)""",
    # Events lost before they reached the store. source: agent_dropped (the agent
    # counted them), agent_gap (sequence numbers missing: lost in transit),
    # drop_oldest / drop_newest (the ring buffer), python_queue.
    # before_seq: the first seq recorded after the loss.
    """CREATE TABLE IF NOT EXISTS losses (
        node_id SMALLINT NOT NULL, before_seq BIGINT NOT NULL, ts BIGINT,
        source VARCHAR NOT NULL, events BIGINT, batches BIGINT)""",
    # What the node said about processes, asked when recording starts and stops:
    # registered name and initial call (as '$initial_call' or process_info give it).
    """CREATE TABLE IF NOT EXISTS process_snapshots (
        pid_id INTEGER NOT NULL, at_ts BIGINT NOT NULL, registered_name VARCHAR,
        initial_call VARCHAR, alive BOOLEAN NOT NULL)""",
    # Process metrics sampled while recording (the agent's kind-19 records, kept apart
    # from the events): payload is a map of q (message_queue_len), m (memory), r
    # (reductions), s (status), f (current function), n (registered name).
    """CREATE TABLE IF NOT EXISTS process_samples (
        node_id SMALLINT NOT NULL, pid_id INTEGER NOT NULL, ts BIGINT NOT NULL,
        wall_offset BIGINT NOT NULL, payload BLOB NOT NULL)""",
    # Breaker trips and other things the session went through.
    """CREATE TABLE IF NOT EXISTS session_events (
        node_id SMALLINT NOT NULL, ts BIGINT, wall_ns BIGINT NOT NULL,
        what VARCHAR NOT NULL, detail VARCHAR)""",
)

# Built by finalize; dropped and rebuilt when finalize runs again.
DERIVED_TABLES = {
    # span_id = seq of the call; depth 1 = outermost traced call on its process.
    # outcome: return | exception | exit (closed by the process's exit) | open.
    # trigger_message_id: for depth-1 spans, the message whose receive came last
    # before the call (the one the handler most likely serves).
    "spans": """CREATE TABLE spans (
        span_id BIGINT PRIMARY KEY, node_id SMALLINT NOT NULL, pid_id INTEGER NOT NULL,
        mfa_id INTEGER NOT NULL, depth INTEGER NOT NULL, parent_span_id BIGINT,
        start_ts BIGINT NOT NULL, end_ts BIGINT, duration_ns BIGINT, end_seq BIGINT,
        outcome VARCHAR NOT NULL, trigger_message_id BIGINT, correlation_id BIGINT)""",
    # One row per message: sent and received (matched), or only one side recorded.
    # handled_ts: start of the depth-1 span it triggered; queue_ns = handled - received.
    "messages": """CREATE TABLE messages (
        message_id BIGINT PRIMARY KEY, node_id SMALLINT NOT NULL, send_seq BIGINT,
        receive_seq BIGINT, sender_pid_id INTEGER, receiver_pid_id INTEGER,
        target VARCHAR, sent_ts BIGINT, received_ts BIGINT, handled_ts BIGINT,
        queue_ns BIGINT, to_dead BOOLEAN NOT NULL, send_span_id BIGINT,
        handler_span_id BIGINT)""",
    # names: registered names seen (register events and snapshots), in order.
    "processes": """CREATE TABLE processes (
        pid_id INTEGER PRIMARY KEY, node_id SMALLINT NOT NULL, pid VARCHAR NOT NULL,
        parent_pid_id INTEGER, initial_call VARCHAR, names VARCHAR[],
        first_ts BIGINT, last_ts BIGINT, spawned_ts BIGINT, exit_ts BIGINT,
        exit_reason BLOB, events BIGINT NOT NULL)""",
    # Registered names over time; since_ts/until_ts NULL: before/after the recording.
    "process_names": """CREATE TABLE process_names (
        pid_id INTEGER NOT NULL, name VARCHAR NOT NULL, since_ts BIGINT,
        until_ts BIGINT)""",
    "links": """CREATE TABLE links (
        pid_id INTEGER NOT NULL, other_pid_id INTEGER NOT NULL, linked_ts BIGINT,
        unlinked_ts BIGINT)""",
    # Events per (time bin, process): the UI's activity bins at their finest width, so
    # opening a finished recording reads these rows instead of grouping every event.
    # key = bin << BIN_LANE_BITS | pid_id, bin = max(wall ns - origin, 0) >> shift
    # (origin and shift in the meta key ACTIVITY_BINS_META, see bin_shift_for);
    # errors: the exception and exit events among them. Sorted by key.
    "activity_bins": """CREATE TABLE activity_bins (
        key BIGINT NOT NULL, events BIGINT NOT NULL, errors BIGINT NOT NULL)""",
}

# activity_bins: how its keys are laid out and how wide its bins are. The meta key
# holds {"origin_wall_ns", "shift", "lane_bits", "error_kinds", "events", "last_seq"}:
# a reader uses the table only when all of them are what it would compute itself.
ACTIVITY_BINS_META = "activity_bins"
BIN_LANE_BITS = 24
BIN_MAX_BINS = 1 << 16  # bins over the whole recording, at most
BIN_MIN_SHIFT = 10  # 1 µs


def bin_shift_for(duration_ns: int) -> int:
    """The log2 of the finest bin width (ns) for a recording this long."""
    shift = BIN_MIN_SHIFT
    while (max(duration_ns, 1) >> shift) >= BIN_MAX_BINS:
        shift += 1
    return shift

KIND_TABLE = "kinds"
