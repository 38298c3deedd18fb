"""correlate.finalize: spans, messages, handlers, correlation and process tables,
built from agent batches written in Python (no node needed)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pytest

from elixirscope.etf import Atom
from elixirscope.recording import correlate, schema
from elixirscope.recording.batch_builder import BatchBuilder
from elixirscope.recording.offline import record_batches
from elixirscope.recording.store import read_meta
from elixirscope.tracing.events import TARGET_NOT_PID

F = ("Elixir.Bank", "f", 1)
G = ("Elixir.Bank", "g", 1)
H = ("Elixir.Bank", "h", 1)
HANDLE = ("Elixir.Bank.Account", "serve", 1)
HANDLE_CALL = ("Elixir.Bank.Account", "handle_call", 3)
INIT = ("Elixir.Bank.Account", "init", 1)
SPAN_COLUMNS = ("span_id, depth, parent_span_id, start_ts, end_ts, duration_ns, end_seq, "
                "outcome")


class Script:
    """Events in seq order (one batch): each ``add`` returns the event's seq."""

    def __init__(self) -> None:
        self.builder = BatchBuilder()
        self.count = 0

    def add(self, kind: str, pid: int, ts: int, *, other: int | None = None,
            **fields: Any) -> int:
        self.builder.add(kind, self.builder.pid(pid), ts,
                         other=None if other is None else self.builder.pid(other), **fields)
        self.count += 1
        return self.count

    def call(self, pid: int, ts: int, mfa: tuple[str, str, int], **fields: Any) -> int:
        return self.add("call", pid, ts, mfa=mfa, value=[0], **fields)

    def ret(self, pid: int, ts: int, mfa: tuple[str, str, int]) -> int:
        return self.add("return", pid, ts, mfa=mfa, value=Atom("ok"))

    def exc(self, pid: int, ts: int, mfa: tuple[str, str, int]) -> int:
        return self.add("exception", pid, ts, mfa=mfa, value=(Atom("error"), Atom("boom")))

    def send(self, pid: int, ts: int, to: int | None, message: Any, **fields: Any) -> int:
        return self.add("send", pid, ts, other=to, value=message, **fields)

    def receive(self, pid: int, ts: int, message: Any) -> int:
        return self.add("receive", pid, ts, value=message)

    def record(self, path: Path, *, finalize: bool = True) -> Recording:
        record_batches(path, [self.builder.batch()], finalize=finalize)
        return Recording(duckdb.connect(str(path)))


class Recording:
    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self.con = con
        self.pids = dict(con.execute(
            "SELECT CAST(split_part(pid, '.', 2) AS INTEGER), pid_id FROM pids").fetchall())

    def rows(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        return self.con.execute(query, list(params)).fetchall()

    def spans(self) -> list[tuple[Any, ...]]:
        return self.rows(f"SELECT {SPAN_COLUMNS} FROM spans ORDER BY span_id")

    def event(self, seq: int) -> tuple[Any, ...]:
        """(span_id, parent_span_id, message_id, correlation_id) of one event."""
        found = self.rows("SELECT span_id, parent_span_id, message_id, correlation_id "
                          "FROM events WHERE seq = ?", seq)
        return found[0]

    def message(self, message_id: int) -> dict[str, Any]:
        cursor = self.con.execute("SELECT * FROM messages WHERE message_id = ?", [message_id])
        names = [d[0] for d in cursor.description]
        row = cursor.fetchone()
        assert row is not None, f"no message {message_id}"
        return dict(zip(names, row, strict=True))


@pytest.fixture
def path(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "rec.duckdb"


def test_nested_calls_make_spans_with_parents_and_event_spans(path: Path) -> None:
    s = Script()
    a = s.call(100, 10, F)
    b = s.call(100, 20, G)
    inner = s.call(100, 25, H, returns=False)  # not a span: belongs to g
    b_end = s.ret(100, 30, G)
    c = s.call(100, 40, H)
    c_end = s.ret(100, 50, H)
    between = s.send(100, 55, None, Atom("x"))
    a_end = s.ret(100, 60, F)
    after = s.send(100, 70, None, Atom("y"))
    rec = s.record(path)
    assert rec.spans() == [
        (a, 1, None, 10, 60, 50, a_end, "return"),
        (b, 2, a, 20, 30, 10, b_end, "return"),
        (c, 2, a, 40, 50, 10, c_end, "return"),
    ]
    assert rec.event(a) == (a, None, None, a)
    assert rec.event(b)[:2] == (b, a)
    assert rec.event(inner)[:2] == (b, a)
    assert rec.event(b_end)[:2] == (b, a)
    assert rec.event(c_end)[:2] == (c, a)
    assert rec.event(between)[:2] == (a, None)
    assert rec.event(a_end)[:2] == (a, None)
    assert rec.event(after) == (None, None, after, None)
    assert rec.rows("SELECT mfa_id, pid_id, node_id FROM spans WHERE span_id = ?", b) == [
        (rec.rows("SELECT mfa_id FROM functions WHERE function = 'g'")[0][0],
         rec.pids[100], 1)]
    assert read_meta(rec.con)["finalized"] is True


def test_deep_recursion(path: Path) -> None:
    s = Script()
    calls = [s.call(7, 1000 + level, F) for level in range(500)]
    returns = [s.ret(7, 3000 + level, F) for level in range(500)]
    rec = s.record(path)
    expected = [(calls[i], i + 1, calls[i - 1] if i else None, 1000 + i, 3499 - i,
                 2499 - 2 * i, returns[499 - i], "return") for i in range(500)]
    assert rec.spans() == expected
    assert rec.rows("SELECT count(*) FROM events WHERE correlation_id = ?", calls[0]) == [(1000,)]


def test_exception_through_three_frames(path: Path) -> None:
    s = Script()
    a, b, c = s.call(1, 10, F), s.call(1, 20, G), s.call(1, 30, H)
    ec, eb, ea = s.exc(1, 40, H), s.exc(1, 41, G), s.exc(1, 42, F)
    rec = s.record(path)
    assert rec.spans() == [
        (a, 1, None, 10, 42, 32, ea, "exception"),
        (b, 2, a, 20, 41, 21, eb, "exception"),
        (c, 3, b, 30, 40, 10, ec, "exception"),
    ]
    assert [rec.event(x)[0] for x in (ec, eb, ea)] == [c, b, a]


def test_returns_of_calls_made_before_recording(path: Path) -> None:
    s = Script()
    early = s.send(1, 5, None, Atom("early"))
    g = s.call(1, 10, G)  # inside a handle_call that began before recording
    g_end = s.ret(1, 20, G)
    orphan = s.ret(1, 30, HANDLE)
    h = s.call(1, 40, HANDLE)
    f = s.call(1, 50, F)
    f_end = s.ret(1, 60, F)
    h_end = s.ret(1, 70, HANDLE)
    lone = s.ret(2, 5, F)  # another process: only an orphan return
    rec = s.record(path)
    assert rec.spans() == [
        (g, 2, None, 10, 20, 10, g_end, "return"),
        (h, 1, None, 40, 70, 30, h_end, "return"),
        (f, 2, h, 50, 60, 10, f_end, "return"),
    ]
    assert rec.event(early) == (None, None, early, None)
    assert rec.event(orphan) == (None, None, None, None)
    assert rec.event(lone) == (None, None, None, None)
    assert rec.event(f_end) == (f, h, None, h)
    assert rec.event(g_end) == (g, None, None, g)


def test_crash_closes_open_calls_at_exit(path: Path) -> None:
    s = Script()
    a, b = s.call(1, 10, F), s.call(1, 20, G)
    crash = s.add("exit", 1, 35, value=(Atom("badarith"), []))
    # another process whose calls are still running when recording stops
    c, d = s.call(2, 15, F), s.call(2, 16, G)
    rec = s.record(path)
    assert rec.spans() == [
        (a, 1, None, 10, 35, 25, crash, "exit"),
        (b, 2, a, 20, 35, 15, crash, "exit"),
        (c, 1, None, 15, None, None, None, "open"),
        (d, 2, c, 16, None, None, None, "open"),
    ]
    assert rec.event(crash) == (b, a, None, a)
    reason = rec.rows("SELECT payload FROM events WHERE seq = ?", crash)[0][0]
    assert rec.rows("SELECT exit_ts, exit_reason FROM processes WHERE pid_id = ?",
                    rec.pids[1]) == [(35, reason)]


def test_a_lost_return_leaves_only_the_spans_it_touches_open(path: Path) -> None:
    s = Script()
    a, b = s.call(1, 10, F), s.call(1, 20, G)
    s.ret(1, 40, F)  # g's return was lost: f's return lands at g's level
    c = s.call(1, 50, H)
    c_end = s.ret(1, 60, H)
    rec = s.record(path)
    assert rec.spans() == [
        (a, 1, None, 10, None, None, None, "open"),
        (b, 2, a, 20, None, None, None, "open"),
        (c, 2, a, 50, 60, 10, c_end, "return"),
    ]


def test_an_empty_recording(path: Path) -> None:
    rec = Script().record(path)
    for table in schema.DERIVED_TABLES:
        assert rec.rows(f"SELECT count(*) FROM {table}") == [(0,)]
    assert read_meta(rec.con)["finalized"] is True


def test_calls_without_a_traced_return_are_not_spans(path: Path) -> None:
    s = Script()
    plain = s.call(1, 10, F, returns=False)
    other = s.call(1, 20, G, returns=False)
    rec = s.record(path)
    assert rec.spans() == []
    assert rec.event(plain) == (None, None, None, None)
    assert rec.event(other) == (None, None, None, None)


def test_message_matching(path: Path) -> None:
    s = Script()
    ping1 = s.send(1, 10, 2, Atom("ping"))
    ping2 = s.send(1, 20, 2, Atom("ping"))
    got1 = s.receive(2, 15, Atom("ping"))
    got2 = s.receive(2, 25, Atom("ping"))
    stray = s.receive(2, 30, (Atom("from"), Atom("nowhere")))
    early = s.receive(3, 40, Atom("late"))  # received before it was sent: not a pair
    late = s.send(1, 45, 3, Atom("late"))
    named = s.send(1, 50, 3, (Atom("Elixir.Bank.Registry"), Atom("hello")), flags=TARGET_NOT_PID)
    named_got = s.receive(3, 55, Atom("hello"))
    unresolved = s.send(1, 60, None, (Atom("ghost"), Atom("boo")), flags=TARGET_NOT_PID)
    dead = s.add("send_to_dead", 1, 70, other=4, value=Atom("late"))
    rec = s.record(path)
    one, two, three, four = (rec.pids[n] for n in (1, 2, 3, 4))
    columns = ("send_seq", "receive_seq", "sender_pid_id", "receiver_pid_id", "target",
               "sent_ts", "received_ts", "to_dead")

    def summary(message_id: int) -> tuple[Any, ...]:
        message = rec.message(message_id)
        return tuple(message[c] for c in columns)

    assert summary(ping1) == (ping1, got1, one, two, None, 10, 15, False)
    assert summary(ping2) == (ping2, got2, one, two, None, 20, 25, False)
    assert summary(stray) == (None, stray, None, two, None, None, 30, False)
    assert summary(early) == (None, early, None, three, None, None, 40, False)
    assert summary(late) == (late, None, one, three, None, 45, None, False)
    assert summary(named) == (named, named_got, one, three, "Bank.Registry", 50, 55, False)
    assert summary(unresolved) == (unresolved, None, one, None, ":ghost", 60, None, False)
    assert summary(dead) == (dead, None, one, four, None, 70, None, True)
    assert rec.rows("SELECT count(*) FROM messages") == [(8,)]
    assert [rec.event(x)[2] for x in (ping1, got1, got2, stray, early, named_got, dead)] == [
        ping1, ping1, ping2, stray, early, named, dead]


def test_repeated_messages_pair_first_in_first_out(path: Path) -> None:
    """A periodic :tick whose first copy was sent before recording began, two senders of
    the same message, and a copy never received: each receive takes the oldest copy
    sent to its process before it that no earlier receive took."""
    s = Script()
    before = s.receive(2, 5, Atom("tick"))  # sent before the recording
    ticks = []
    for at in (10, 20, 30):
        ticks.append((s.send(1, at, 2, Atom("tick")), s.receive(2, at + 2, Atom("tick"))))
    from_1 = s.send(1, 40, 2, Atom("tick"))
    from_3 = s.send(3, 41, 2, Atom("tick"))
    got_1 = s.receive(2, 43, Atom("tick"))
    got_3 = s.receive(2, 44, Atom("tick"))
    never = s.send(1, 50, 2, Atom("tick"))
    rec = s.record(path)

    def pair(message_id: int) -> tuple[Any, Any]:
        message = rec.message(message_id)
        return message["send_seq"], message["receive_seq"]

    assert pair(before) == (None, before)
    assert [pair(sent) for sent, _ in ticks] == ticks
    assert (pair(from_1), pair(from_3)) == ((from_1, got_1), (from_3, got_3))
    assert pair(never) == (never, None)
    assert rec.rows("SELECT count(*) FROM messages") == [(7,)]


CAST = ("Elixir.Bank.Account", "handle_cast", 2)
INFO = ("Elixir.Bank.Account", "handle_info", 2)
LOOP = ("Elixir.Bank.Loop", "loop", 1)


def gen_call(n: int) -> tuple[Any, ...]:
    return (Atom("$gen_call"), (Atom("from"), n), (Atom("get"), n))


def test_handler_trigger_and_queue_time(path: Path) -> None:
    s = Script()
    request = s.send(1, 100, 2, gen_call(1))
    got = s.receive(2, 110, gen_call(1))
    handler = s.call(2, 150, HANDLE_CALL)
    inner = s.call(2, 160, F)
    s.ret(2, 170, F)
    s.ret(2, 180, HANDLE_CALL)
    again = s.call(2, 190, HANDLE_CALL)  # no new call received: never the same message twice
    s.ret(2, 200, HANDLE_CALL)
    idle = s.call(3, 10, HANDLE_CALL)  # nothing received before it
    s.ret(3, 20, HANDLE_CALL)
    rec = s.record(path)
    message = rec.message(request)
    assert (message["receive_seq"], message["handled_ts"], message["queue_ns"],
            message["handler_span_id"]) == (got, 150, 40, handler)
    assert rec.rows("SELECT span_id, trigger_message_id FROM spans ORDER BY span_id") == [
        (handler, request), (inner, None), (again, None), (idle, None)]


def test_callbacks_serve_their_kind_of_message_after_the_backlog(path: Path) -> None:
    """Two casts were queued when tracing began: the first two handle_casts served
    them, the third serves the cast received since; the timer's :timeout that arrived
    last is no cast's trigger, and handle_info serves it."""
    s = Script()
    s.add("mailbox", 2, 5, value={Atom("message_queue_len"): 2, Atom("backlog"): {
        Atom("call"): 0, Atom("cast"): 2, Atom("info"): 0}})
    cast = s.send(1, 10, 2, (Atom("$gen_cast"), Atom("third")))
    s.receive(2, 11, (Atom("$gen_cast"), Atom("third")))
    timer = s.receive(2, 12, Atom("timeout"))
    first = s.call(2, 20, CAST)
    s.ret(2, 21, CAST)
    second = s.call(2, 30, CAST)
    s.ret(2, 31, CAST)
    third = s.call(2, 40, CAST)
    s.ret(2, 41, CAST)
    info = s.call(2, 50, INFO)
    s.ret(2, 51, INFO)
    rec = s.record(path)
    assert rec.rows("SELECT span_id, trigger_message_id FROM spans ORDER BY span_id") == [
        (first, None), (second, None), (third, cast), (info, timer)]


def test_an_uncounted_backlog_pairs_nothing_and_a_loop_takes_each_message_once(
        path: Path) -> None:
    s = Script()
    s.add("mailbox", 2, 5, value={Atom("message_queue_len"): 200_000,
                                  Atom("backlog"): Atom("unknown")})
    s.receive(2, 10, (Atom("$gen_cast"), Atom("late")))
    served = s.call(2, 20, CAST)
    s.ret(2, 21, CAST)
    got = s.receive(3, 30, Atom("work"))
    loop = s.call(3, 40, LOOP)
    s.ret(3, 41, LOOP)
    again = s.call(3, 50, LOOP)
    s.ret(3, 51, LOOP)
    rec = s.record(path)
    assert rec.rows("SELECT span_id, trigger_message_id FROM spans ORDER BY span_id") == [
        (served, None), (loop, got), (again, None)]


def test_correlation_follows_messages_across_three_processes(path: Path) -> None:
    s = Script()
    a = s.call(1, 10, HANDLE)
    to_b = s.send(1, 20, 2, Atom("m1"))
    s.ret(1, 30, HANDLE)
    got_b = s.receive(2, 25, Atom("m1"))
    b = s.call(2, 40, HANDLE)
    b_inner = s.call(2, 45, F)
    to_c = s.send(2, 50, 3, Atom("m2"))
    s.ret(2, 55, F)
    s.ret(2, 60, HANDLE)
    got_c = s.receive(3, 52, Atom("m2"))
    c = s.call(3, 70, HANDLE)
    c_end = s.ret(3, 80, HANDLE)
    unrelated = s.call(4, 5, HANDLE)
    s.ret(4, 6, HANDLE)
    rec = s.record(path)
    assert rec.rows("SELECT span_id, correlation_id FROM spans ORDER BY span_id") == [
        (a, a), (b, a), (b_inner, a), (c, a), (unrelated, unrelated)]
    assert rec.event(got_b) == (None, None, to_b, a)  # outside spans: the sender's tree
    assert rec.event(got_c) == (None, None, to_c, a)
    assert rec.event(to_c) == (b_inner, b, to_c, a)
    assert rec.event(c_end) == (c, None, None, a)
    assert rec.message(to_c)["send_span_id"] == b_inner
    assert rec.message(to_c)["handler_span_id"] == c


def test_correlation_chain_longer_than_the_rounds(path: Path) -> None:
    # 100 processes pass a token along: pointer doubling settles it in a few rounds
    s = Script()
    first = s.call(1, 0, HANDLE)
    s.send(1, 1, 2, 1)
    s.ret(1, 2, HANDLE)
    for n in range(2, 101):
        t = n * 10
        s.receive(n, t, n - 1)
        s.call(n, t + 1, HANDLE)
        s.send(n, t + 2, n + 1, n)
        s.ret(n, t + 3, HANDLE)
    rec = s.record(path)
    assert rec.rows("SELECT DISTINCT correlation_id FROM spans") == [(first,)]


def test_spawn_parentage_and_initial_call(path: Path) -> None:
    s = Script()
    s.add("spawn", 1, 10, other=2, mfa=INIT, value=[0])
    s.add("spawned", 2, 11, other=1, mfa=INIT, value=[0])
    s.add("spawn", 1, 20, other=3, mfa=("proc_lib", "init_p", 5), value=[0])  # no spawned
    s.add("exit", 2, 30, value=Atom("normal"))
    s.add("send", 4, 5, other=1, value=Atom("hi"))  # knows nothing about its birth
    rec = s.record(path, finalize=False)
    rec.con.execute("INSERT INTO process_snapshots VALUES (?, 0, NULL, 'Bank.Worker.init/1', "
                    "true)", [rec.pids[4]])
    correlate.finalize(rec.con)
    got = rec.rows("SELECT pid_id, pid, parent_pid_id, initial_call, first_ts, last_ts, "
                   "spawned_ts, exit_ts, events FROM processes ORDER BY pid_id")
    one, two, three, four = (rec.pids[n] for n in (1, 2, 3, 4))
    assert sorted(got) == sorted([
        (one, "#PID<0.1.0>", None, None, 10, 20, None, None, 2),
        (two, "#PID<0.2.0>", one, "Bank.Account.init/1", 11, 30, 10, 30, 2),
        (three, "#PID<0.3.0>", one, ":proc_lib.init_p/5", None, None, 20, None, 0),
        (four, "#PID<0.4.0>", None, "Bank.Worker.init/1", 5, 5, None, None, 1),
    ])


def test_links(path: Path) -> None:
    s = Script()
    s.add("link", 1, 10, other=2)
    s.add("getting_linked", 2, 10, other=1)
    s.add("unlink", 1, 20, other=2)
    s.add("getting_unlinked", 2, 21, other=1)
    s.add("link", 1, 30, other=2)
    s.add("getting_unlinked", 1, 40, other=3)  # linked before recording started
    rec = s.record(path)
    one, two, three = (rec.pids[n] for n in (1, 2, 3))
    assert sorted(rec.rows("SELECT * FROM links"), key=str) == sorted([
        (one, two, 10, 20), (two, one, 10, 21), (one, two, 30, None), (one, three, None, 40),
    ], key=str)


def test_registered_names(path: Path) -> None:
    s = Script()
    s.add("register", 1, 10, value=Atom("bank"))
    s.add("unregister", 1, 20, value=Atom("bank"))
    s.add("register", 1, 30, value=Atom("Elixir.Bank.Registry"))
    s.add("unregister", 2, 15, value=Atom("old"))
    s.add("send", 3, 1, other=1, value=Atom("hi"))
    rec = s.record(path, finalize=False)
    one, two, three = (rec.pids[n] for n in (1, 2, 3))
    rec.con.executemany("INSERT INTO process_snapshots VALUES (?, ?, ?, NULL, true)", [
        (two, 0, ":old"), (three, 0, ":cache"), (one, 100, "Bank.Registry"),
        (three, 100, ":cache"), (two, 100, ":late")])
    correlate.finalize(rec.con)
    assert sorted(rec.rows("SELECT * FROM process_names"), key=str) == sorted([
        (one, ":bank", 10, 20), (one, "Bank.Registry", 30, None),
        (two, ":old", None, 15), (two, ":late", 100, None), (three, ":cache", None, None),
    ], key=str)
    assert rec.rows("SELECT pid_id, names FROM processes ORDER BY pid_id") == sorted([
        (one, [":bank", "Bank.Registry"]), (two, [":old", ":late"]), (three, [":cache"])])


def test_finalize_twice_gives_the_same_tables(path: Path) -> None:
    s = Script()
    a = s.call(1, 10, HANDLE)
    s.send(1, 20, 2, Atom("m"))
    s.ret(1, 30, HANDLE)
    s.receive(2, 25, Atom("m"))
    s.call(2, 40, HANDLE)
    s.add("register", 2, 41, value=Atom("b"))
    s.add("link", 2, 42, other=1)
    s.add("exit", 2, 50, value=Atom("kill"))
    rec = s.record(path)
    tables = ["events", *schema.DERIVED_TABLES]

    def contents() -> dict[str, list[tuple[Any, ...]]]:
        return {t: rec.rows(f"SELECT * FROM {t} ORDER BY ALL") for t in tables}

    before = contents()
    phases: list[tuple[str, int, int]] = []
    correlate.finalize(rec.con, progress=lambda *phase: phases.append(phase))
    assert contents() == before
    assert phases == [(name, number, 6) for number, name in enumerate(correlate.PHASES, 1)]
    assert before["spans"][0][0] == a
    assert rec.rows("SELECT count(*) FROM duckdb_tables() WHERE temporary") == [(0,)]


def test_events_table_keeps_its_layout(path: Path, tmp_path: Path) -> None:
    s = Script()
    s.call(1, 10, F)
    rec = s.record(path)
    fresh = duckdb.connect(str(tmp_path / "fresh.duckdb"))
    fresh.execute(schema.EVENTS)
    layout = ("SELECT column_name, data_type, is_nullable FROM information_schema.columns "
              "WHERE table_name = 'events' ORDER BY ordinal_position")
    assert rec.rows(layout) == fresh.execute(layout).fetchall()


def test_failure_leaves_the_recording_as_it_was(path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    s = Script()
    s.call(1, 10, F)
    rec = s.record(path, finalize=False)
    monkeypatch.setattr("elixirscope.recording.correlate_sql.INSERT_LINKS", "SELECT nonsense")
    with pytest.raises(duckdb.Error):
        correlate.finalize(rec.con)
    assert read_meta(rec.con)["finalized"] is False
    assert rec.rows("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'spans'") == [(0,)]
    assert rec.rows("SELECT count(*) FROM events") == [(1,)]
    assert rec.rows("SELECT count(*) FROM duckdb_columns() WHERE table_name = 'events' "
                    "AND column_name = 'span_id'") == [(0,)]


def test_two_hundred_thousand_events(path: Path) -> None:
    builder = BatchBuilder()
    batches = []
    for request in range(20_000):
        pid = builder.pid(request % 500 + 1)
        ts = request * 100
        builder.add("receive", pid, ts, value=request)
        builder.add("call", pid, ts + 1, mfa=HANDLE, value=[request])
        builder.add("call", pid, ts + 2, mfa=F, value=[])
        builder.add("call", pid, ts + 3, mfa=G, value=[], returns=False)
        builder.add("send", pid, ts + 4, other=builder.pid((request + 1) % 500 + 1),
                    value=request + 1)
        builder.add("return", pid, ts + 5, mfa=F, value=Atom("ok"))
        builder.add("call", pid, ts + 6, mfa=H, value=[])
        builder.add("exception", pid, ts + 7, mfa=H, value=Atom("oops"))
        builder.add("return_to", pid, ts + 8, mfa=HANDLE)
        builder.add("return", pid, ts + 9, mfa=HANDLE, value=Atom("ok"))
        if len(builder) >= 50_000:
            batches.append(builder.batch())
    batches.append(builder.batch())
    assert record_batches(path, batches) == 200_000
    con = duckdb.connect(str(path))
    assert con.execute("SELECT outcome, count(*) FROM spans GROUP BY ALL ORDER BY ALL"
                       ).fetchall() == [("exception", 20_000), ("return", 40_000)]
    assert con.execute("SELECT count(*), count(send_seq), count(receive_seq), "
                       "count(handled_ts) FROM messages").fetchall() == [
        (20_001, 20_000, 20_000, 20_000)]
    # every request was sent by the one before: a single causal tree
    assert con.execute("SELECT count(DISTINCT correlation_id) FROM events").fetchall() == [(1,)]


def test_a_timeout_received_inside_a_cast_handler_never_triggers_the_next_one(
        path: Path) -> None:
    """Without a mailbox record (tracing began before the recording, elsewhere), a
    callback serves the last message of its kind received since the one before: the
    :timeout a sleep inside the previous handle_cast received is not a cast, while a
    handle_info may serve a :timeout (a gen_server's own timeout)."""
    s = Script()
    first_cast = s.send(1, 10, 2, (Atom("$gen_cast"), Atom("one")))
    s.receive(2, 11, (Atom("$gen_cast"), Atom("one")))
    first = s.call(2, 20, CAST)
    second_cast = s.send(1, 21, 2, (Atom("$gen_cast"), Atom("two")))
    s.receive(2, 22, (Atom("$gen_cast"), Atom("two")))
    s.receive(2, 25, Atom("timeout"))  # the sleep inside the first handle_cast
    s.ret(2, 30, CAST)
    second = s.call(2, 40, CAST)
    s.ret(2, 41, CAST)
    timer = s.receive(2, 50, Atom("timeout"))
    info = s.call(2, 60, INFO)
    s.ret(2, 61, INFO)
    rec = s.record(path)
    assert rec.rows("SELECT span_id, trigger_message_id FROM spans ORDER BY span_id") == [
        (first, first_cast), (second, second_cast), (info, timer)]
