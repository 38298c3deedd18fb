"""Exports of a recording: Perfetto (Chrome trace JSON), OTLP/JSON and Parquet."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from elixirscope.cli.app import main
from elixirscope.etf import Atom
from elixirscope.recording.batch_builder import BatchBuilder
from elixirscope.recording.export import Texts, cut, open_source
from elixirscope.recording.export_otlp import write_otlp
from elixirscope.recording.store import open_file, read_meta
from export_support import (
    all_spans,
    attribute_dict,
    check_chrome_trace,
    check_otlp_request,
    check_parents,
)

OFFSET = 1_700_000_000_000_000_000
CHECKOUT_RUN = ("Elixir.Shop.Checkout", "run", 1)
CART_TOTAL = ("Elixir.Shop.Cart", "total", 1)
HANDLE_INFO = ("Elixir.Shop.Payments", "handle_info", 2)
FAIL = ("Elixir.Shop.Checkout", "fail", 0)
WORKER_START = ("Elixir.Shop.Worker", "start", 1)
WORKER_STEP = ("Elixir.Shop.Worker", "step", 1)
LOOP = ("Elixir.Shop.Payments", "loop", 0)
BOOM = (Atom("error"), {Atom("__struct__"): Atom("Elixir.RuntimeError"),
                        Atom("message"): b"boom", Atom("__exception__"): True})


def shop_batches() -> list[Any]:
    """A checkout on A: nested calls, a message to B and its reply, an exception, a
    spawned worker C that sends to a dead process and crashes inside two calls, and B
    (registered as Shop.Payments) left inside a call that never returns."""
    b = BatchBuilder()
    a, p, c, dead = b.pid(100), b.pid(101), b.pid(102), b.pid(103)
    b.add("register", p, 500, value=Atom("Elixir.Shop.Payments"))          # seq 1
    b.add("call", a, 1000, mfa=CHECKOUT_RUN, value=[b"order-1"])            # 2
    b.add("call", a, 1500, mfa=CART_TOTAL, value=[[1, 2]])                  # 3
    b.add("return", a, 2000, mfa=CART_TOTAL, value=3)                       # 4
    b.add("send", a, 2500, other=p, value=(Atom("charge"), 3))              # 5
    b.add("receive", p, 3000, value=(Atom("charge"), 3))                    # 6
    b.add("call", p, 3200, mfa=HANDLE_INFO, value=[(Atom("charge"), 3), {}])  # 7
    b.add("send", p, 3400, other=a, value=(Atom("charged"), 3))             # 8
    b.add("return", p, 3600, mfa=HANDLE_INFO, value=(Atom("noreply"), {}))  # 9
    b.add("receive", a, 3800, value=(Atom("charged"), 3))                   # 10
    b.add("call", a, 4000, mfa=FAIL, value=[])                              # 11
    b.add("exception", a, 4200, mfa=FAIL, value=BOOM)                       # 12
    b.add("spawn", a, 4400, other=c, mfa=WORKER_START, value=[Atom("job")])  # 13
    b.add("spawned", c, 4450, other=a, mfa=WORKER_START, value=[Atom("job")])  # 14
    b.add("call", c, 4500, mfa=WORKER_START, value=[Atom("job")])           # 15
    b.add("call", c, 4600, mfa=WORKER_STEP, value=[1])                      # 16
    b.add("send_to_dead", c, 4700, other=dead, value=Atom("ping"))          # 17
    b.add("exit", c, 4800, value=(Atom("badarith"), []))                    # 18
    b.add("return", a, 5000, mfa=CHECKOUT_RUN, value=Atom("ok"))            # 19
    b.add("call", p, 5100, mfa=LOOP, value=[])                              # 20
    b.add("receive", p, 5300, value=Atom("tick"))                           # 21
    return [b.batch()]


def record(path: Path, batches: list[Any], *, finalize: bool = True) -> Path:
    from elixirscope.recording.offline import record_batches

    record_batches(path, batches, offset_ns=OFFSET, finalize=finalize)
    return path


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record(tmp_path_factory.mktemp("rec") / "shop.duckdb", shop_batches())


def export(*args: str | Path) -> int:
    """Runs ``elixirscope export ARGS`` in-process; returns the exit code."""
    try:
        main(["export", *map(str, args)])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def run_export(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """The exit code and what went to stderr."""
    code = export(*args)
    return code, capsys.readouterr().err


# -- Perfetto ---------------------------------------------------------------------------

def perfetto(path: Path, tmp_path: Path, *extra: str) -> dict[str, Any]:
    target = tmp_path / "trace.json"
    assert export(path, "--format", "perfetto", "-o", target, *extra) == 0
    doc: dict[str, Any] = json.loads(target.read_text())
    check_chrome_trace(doc)
    return doc


def by_phase(doc: dict[str, Any], ph: str) -> list[dict[str, Any]]:
    return [e for e in doc["traceEvents"] if e["ph"] == ph]


def test_perfetto_tracks_are_nodes_and_processes(shop: Path, tmp_path: Path) -> None:
    doc = perfetto(shop, tmp_path)
    assert by_phase(doc, "M") == [
        {"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": "app@host"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 1,
         "args": {"name": "#PID<0.101.0> Shop.Payments"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 2, "args": {"name": "#PID<0.100.0>"}},
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": 3, "args": {"name": "#PID<0.102.0>"}},
    ]
    assert doc["metadata"]["origin_wall_ns"] == OFFSET + 500
    assert doc["metadata"]["nodes"] == ["app@host"]


def test_perfetto_spans_are_complete_events_with_their_text(shop: Path, tmp_path: Path) -> None:
    doc = perfetto(shop, tmp_path)
    spans = {e["args"]["span_id"]: e for e in by_phase(doc, "X")}
    assert spans[2] == {
        "ph": "X", "name": "Shop.Checkout.run/1", "cat": "call", "pid": 1, "tid": 2,
        "ts": 0.5, "dur": 4.0,
        "args": {"span_id": 2, "outcome": "return", "args": '"order-1"', "result": ":ok"}}
    assert spans[3]["name"] == "Shop.Cart.total/1"
    assert (spans[3]["ts"], spans[3]["dur"]) == (1.0, 0.5)
    assert spans[3]["args"] == {"span_id": 3, "outcome": "return", "args": "[1, 2]",
                                "result": "3"}
    assert spans[7]["args"] == {"span_id": 7, "outcome": "return",
                                "args": "{:charge, 3}, %{}", "result": "{:noreply, %{}}"}
    assert spans[11]["args"] == {"span_id": 11, "outcome": "exception",
                                 "exception": '{:error, %RuntimeError{message: "boom"}}'}
    # The crash closes both open calls of the worker at its exit.
    assert [(spans[i]["ts"], spans[i]["dur"], spans[i]["args"]["outcome"]) for i in (15, 16)] \
        == [(4.0, 0.3, "exit"), (4.1, 0.2, "exit")]
    assert spans[16]["args"]["exit_reason"] == "{:badarith, []}"
    # A call still running ends with its process's last event.
    assert (spans[20]["ts"], spans[20]["dur"], spans[20]["args"]) == (
        4.6, 0.2, {"span_id": 20, "outcome": "open"})
    assert sorted(spans) == [2, 3, 7, 11, 15, 16, 20]


def test_perfetto_instants_and_flows(shop: Path, tmp_path: Path) -> None:
    doc = perfetto(shop, tmp_path)
    assert by_phase(doc, "i") == [
        {"ph": "i", "s": "t", "name": "spawn #PID<0.102.0>", "cat": "process", "pid": 1,
         "tid": 2, "ts": 3.9, "args": {"seq": 13, "child": "#PID<0.102.0>",
                                       "mfa": "Shop.Worker.start/1", "args": ":job"}},
        {"ph": "i", "s": "t", "name": "send to dead #PID<0.103.0>", "cat": "process",
         "pid": 1, "tid": 3, "ts": 4.2, "args": {"seq": 17, "to": "#PID<0.103.0>",
                                                  "message": ":ping"}},
        {"ph": "i", "s": "t", "name": "crash", "cat": "process", "pid": 1, "tid": 3,
         "ts": 4.3, "args": {"seq": 18, "reason": "{:badarith, []}"}},
    ]
    flows = [(e["ph"], e["id"], e["name"], e["tid"], e["ts"]) for e in by_phase(doc, "s")
             + by_phase(doc, "f")]
    assert sorted(flows) == [
        ("f", 5, "{:charge, 3}", 1, 2.5), ("f", 8, "{:charged, 3}", 2, 3.3),
        ("s", 5, "{:charge, 3}", 2, 2.0), ("s", 8, "{:charged, 3}", 1, 2.9)]
    assert doc["metadata"]["spans"] == 7
    assert doc["metadata"]["messages"] == 2


def test_perfetto_without_text_and_long_messages(tmp_path: Path) -> None:
    b = BatchBuilder()
    a, p = b.pid(1), b.pid(2)
    b.add("call", a, 10, mfa=CHECKOUT_RUN, value=[1])
    b.add("send", a, 20, other=p, value=b"x" * 200)
    b.add("receive", p, 30, value=b"x" * 200)
    b.add("return", a, 40, mfa=CHECKOUT_RUN, value=1)
    rec = record(tmp_path / "r.duckdb", [b.batch()])
    name = by_phase(perfetto(rec, tmp_path), "s")[0]["name"]
    assert name == cut('"' + "x" * 200 + '"', 80) and len(name) == 80 and name[-1] == "…"
    doc = perfetto(rec, tmp_path, "--force", "--no-text")
    assert [e["name"] for e in by_phase(doc, "s") + by_phase(doc, "f")] == ["message"] * 2
    assert by_phase(doc, "X")[0]["args"] == {"span_id": 1, "outcome": "return"}


def test_calls_left_open_inside_a_finished_call_end_with_it(tmp_path: Path) -> None:
    """Returns that do not match their calls (events lost on the way) leave calls open
    inside a caller that returned; they are drawn to end with that caller, so the
    track stays properly nested."""
    b = BatchBuilder()
    a = b.pid(1)
    b.add("call", a, 100, mfa=CHECKOUT_RUN, value=[1])
    b.add("call", a, 200, mfa=CART_TOTAL, value=[1])
    b.add("call", a, 250, mfa=WORKER_STEP, value=[1])
    b.add("return", a, 300, mfa=LOOP, value=1)
    b.add("return", a, 350, mfa=FAIL, value=1)
    b.add("return", a, 400, mfa=CHECKOUT_RUN, value=1)
    b.add("call", a, 600, mfa=LOOP, value=[])
    b.add("receive", a, 900, value=1)
    rec = record(tmp_path / "r.duckdb", [b.batch()])
    doc = perfetto(rec, tmp_path)
    slices = [(e["name"], e["ts"], e["dur"], e["args"]["outcome"]) for e in by_phase(doc, "X")]
    assert slices == [("Shop.Checkout.run/1", 0.0, 0.3, "return"),
                      ("Shop.Cart.total/1", 0.1, 0.2, "open"),
                      ("Shop.Worker.step/1", 0.15, 0.15, "open"),
                      ("Shop.Payments.loop/0", 0.5, 0.3, "open")]
    spans = all_spans(otlp_lines(rec, tmp_path))
    assert spans[3][0]["endTimeUnixNano"] == str(OFFSET + 400)
    assert spans[7][0]["endTimeUnixNano"] == str(OFFSET + 900)


def record_nodes(path: Path, nodes: list[tuple[str, int, BatchBuilder]]) -> Path:
    """A recording of several nodes (name, clock offset, events), ingested in turn."""
    from elixirscope.recording import correlate
    from elixirscope.recording.ingest import BatchIngest, Dimensions, SeqCounter
    from elixirscope.recording.store import create
    from elixirscope.recording.writer import StoreWriter

    con = create(path)
    dimensions, seq = Dimensions(), SeqCounter()
    writer = StoreWriter(con, dimensions)
    for node_id, (name, offset, builder) in enumerate(nodes, start=1):
        ingest = BatchIngest(name, node_id, offset, dimensions, seq)
        writer.add([ingest.ingest(builder.batch())])
        con.execute("INSERT INTO nodes VALUES (?, ?, '26', NULL, NULL, ?, NULL, NULL)",
                    [node_id, name, offset])
    writer.flush()
    correlate.finalize(con)
    con.close()
    return path


def test_two_nodes_line_up_on_wall_clock_time(tmp_path: Path) -> None:
    """Node b's monotonic clock runs 5 us ahead of a's; its offset says so, and the
    message from a to b lands between the send and the handler on one timeline."""
    a, b = BatchBuilder("a@host"), BatchBuilder("b@host")
    client, server = a.pid(100), b.pid(200)
    a.add("call", client, 1000, mfa=CHECKOUT_RUN, value=[1])
    a.add("send", client, 1200, other=server, value=(Atom("charge"), 1))
    a.add("return", client, 2000, mfa=CHECKOUT_RUN, value=Atom("ok"))
    b.add("receive", server, 6500, value=(Atom("charge"), 1))
    b.add("call", server, 6600, mfa=HANDLE_INFO, value=[(Atom("charge"), 1), {}])
    b.add("return", server, 6800, mfa=HANDLE_INFO, value=(Atom("noreply"), {}))
    rec = record_nodes(tmp_path / "r.duckdb",
                       [("a@host", OFFSET, a), ("b@host", OFFSET - 5000, b)])

    doc = perfetto(rec, tmp_path)
    names = {(e["pid"], e["tid"]): e["args"]["name"] for e in by_phase(doc, "M")}
    assert names[(1, 0)] == "a@host" and names[(2, 0)] == "b@host"
    assert names[(1, 1)] == "#PID<0.100.0>"
    server_track = next(k for k in names if k[0] == 2 and k[1] != 0)
    assert names[server_track].endswith(".200.0>")
    spans = [(e["pid"], e["name"], e["ts"], e["dur"]) for e in by_phase(doc, "X")]
    assert spans == [(1, "Shop.Checkout.run/1", 0.0, 1.0),
                     (2, "Shop.Payments.handle_info/2", 0.6, 0.2)]
    flow = [(e["ph"], e["pid"], e["ts"]) for e in by_phase(doc, "s") + by_phase(doc, "f")]
    assert flow == [("s", 1, 0.2), ("f", 2, 0.5)]

    otlp = all_spans(otlp_lines(rec, tmp_path))
    check_parents(otlp)
    (run, run_resource), (handler, handler_resource) = otlp[1], otlp[5]
    assert run_resource["service.name"] == "a@host"
    assert handler_resource["service.name"] == "b@host"
    assert handler_resource["process.runtime.version"] == "26"
    assert handler["startTimeUnixNano"] == str(OFFSET + 1600)
    assert handler["traceId"] == run["traceId"]
    assert handler["parentSpanId"] == run["spanId"]


# -- OTLP -------------------------------------------------------------------------------

def otlp_lines(path: Path, tmp_path: Path) -> list[dict[str, Any]]:
    target = tmp_path / "traces.jsonl"
    assert export(path, "--format", "otlp", "-o", target) == 0
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    for line in lines:
        check_otlp_request(line)
    return lines


def test_otlp_spans_traces_and_parents(shop: Path, tmp_path: Path) -> None:
    spans = all_spans(otlp_lines(shop, tmp_path))
    check_parents(spans)
    assert sorted(spans) == [2, 3, 7, 11, 15, 16, 20]
    traces = defaultdict(set)
    for span_id, (span, _) in spans.items():
        traces[span["traceId"]].add(span_id)
    # The checkout and the payment it caused are one trace; the worker is its own, and
    # so is the loop Payments starts after it has handled the charge.
    assert sorted(map(sorted, traces.values())) == [[2, 3, 7, 11], [15, 16], [20]]
    tag = spans[2][0]["traceId"][:16]
    assert spans[2][0]["traceId"] == f"{tag}{2:016x}"
    assert spans[15][0]["traceId"] == f"{tag}{15:016x}"
    parents = {i: s.get("parentSpanId") for i, (s, _) in spans.items()}
    assert parents == {2: None, 3: f"{2:016x}", 7: f"{2:016x}", 11: f"{2:016x}",
                       15: None, 16: f"{15:016x}", 20: None}


def test_otlp_span_fields(shop: Path, tmp_path: Path) -> None:
    spans = all_spans(otlp_lines(shop, tmp_path))
    run, resource = spans[2]
    assert resource == {"service.name": "app@host", "beam.pid": "#PID<0.100.0>",
                        "process.runtime.name": "BEAM"}
    assert run["name"] == "Shop.Checkout.run/1"
    assert run["kind"] == 1
    assert (run["startTimeUnixNano"], run["endTimeUnixNano"]) == (
        str(OFFSET + 1000), str(OFFSET + 5000))
    assert attribute_dict(run["attributes"]) == {
        "code.namespace": "Shop.Checkout", "code.function": "run", "beam.arity": 1,
        "beam.depth": 1, "beam.outcome": "return", "beam.args": '"order-1"',
        "beam.result": ":ok"}
    assert "status" not in run and "links" not in run

    handler, resource = spans[7]
    assert resource["beam.registered_names"] == ["Shop.Payments"]
    assert attribute_dict(handler["attributes"])["beam.trigger_message"] == "{:charge, 3}"
    assert handler["links"] == [{
        "traceId": run["traceId"], "spanId": f"{2:016x}",
        "attributes": [{"key": "beam.message", "value": {"stringValue": "{:charge, 3}"}}]}]

    fail, _ = spans[11]
    assert fail["status"] == {"code": 2, "message": "boom"}
    assert fail["events"] == [{
        "timeUnixNano": str(OFFSET + 4200), "name": "exception",
        "attributes": [{"key": "exception.type", "value": {"stringValue": "RuntimeError"}},
                       {"key": "exception.message", "value": {"stringValue": "boom"}}]}]

    step, _ = spans[16]
    assert step["status"] == {"code": 2, "message": "the process exited: {:badarith, []}"}
    assert attribute_dict(step["attributes"])["beam.exit_reason"] == "{:badarith, []}"
    assert step["endTimeUnixNano"] == str(OFFSET + 4800)

    loop, _ = spans[20]
    assert attribute_dict(loop["attributes"])["beam.outcome"] == "open"
    assert loop["endTimeUnixNano"] == str(OFFSET + 5300)


def test_otlp_requests_are_split_and_ids_are_stable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from elixirscope.recording import export_otlp

    b = BatchBuilder()
    for number in range(3):
        pid = b.pid(number + 1)
        for i in range(5):
            b.add("call", pid, 100 * i, mfa=CHECKOUT_RUN, value=[i])
            b.add("return", pid, 100 * i + 50, mfa=CHECKOUT_RUN, value=i)
    rec = record(tmp_path / "r.duckdb", [b.batch()])
    monkeypatch.setattr(export_otlp, "SPANS_PER_REQUEST", 4)
    with open_source(rec) as source:
        assert write_otlp(source, tmp_path / "a.jsonl") == {"spans": 15, "requests": 4}
        write_otlp(source, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    for line in lines:
        check_otlp_request(line)
    sizes = [[len(r["scopeSpans"][0]["spans"]) for r in line["resourceSpans"]]
             for line in lines]
    assert sizes == [[4], [1, 3], [2, 2], [3]]
    assert len(all_spans(lines)) == 15


# -- Parquet ----------------------------------------------------------------------------

def test_parquet_files(shop: Path, tmp_path: Path) -> None:
    target = tmp_path / "pq"
    assert export(shop, "--format", "parquet", "-o", target) == 0
    assert sorted(p.name for p in target.iterdir()) == [
        "events.parquet", "messages.parquet", "processes.parquet", "spans.parquet"]

    events = pq.read_table(target / "events.parquet").to_pylist()
    assert len(events) == 21
    send = events[4]
    assert {k: send[k] for k in ("seq", "node", "pid", "kind", "ts", "wall_ns", "other_pid",
                                 "payload_text", "truncated", "mfa", "span_id")} == {
        "seq": 5, "node": "app@host", "pid": "#PID<0.100.0>", "kind": "send", "ts": 2500,
        "wall_ns": OFFSET + 2500, "other_pid": "#PID<0.101.0>",
        "payload_text": "{:charge, 3}", "truncated": False, "mfa": None, "span_id": 2}
    assert events[1]["mfa"] == "Shop.Checkout.run/1"
    assert events[1]["payload_text"] == '["order-1"]'
    assert events[0]["payload_text"] == "Shop.Payments"
    assert [e["seq"] for e in events] == list(range(1, 22))

    spans = pq.read_table(target / "spans.parquet").to_pylist()
    assert [(s["span_id"], s["mfa"], s["outcome"], s["pid"]) for s in spans] == [
        (2, "Shop.Checkout.run/1", "return", "#PID<0.100.0>"),
        (3, "Shop.Cart.total/1", "return", "#PID<0.100.0>"),
        (7, "Shop.Payments.handle_info/2", "return", "#PID<0.101.0>"),
        (11, "Shop.Checkout.fail/0", "exception", "#PID<0.100.0>"),
        (15, "Shop.Worker.start/1", "exit", "#PID<0.102.0>"),
        (16, "Shop.Worker.step/1", "exit", "#PID<0.102.0>"),
        (20, "Shop.Payments.loop/0", "open", "#PID<0.101.0>")]
    assert (spans[0]["start_wall_ns"], spans[0]["end_wall_ns"], spans[0]["duration_ns"]) == (
        OFFSET + 1000, OFFSET + 5000, 4000)
    assert spans[6]["end_ts"] is None

    messages = pq.read_table(target / "messages.parquet").to_pylist()
    assert "payload" not in messages[0]
    charge = next(m for m in messages if m["message_id"] == 5)
    assert {k: charge[k] for k in ("sender_pid", "receiver_pid", "sent_wall_ns",
                                   "received_wall_ns", "message_text", "to_dead")} == {
        "sender_pid": "#PID<0.100.0>", "receiver_pid": "#PID<0.101.0>",
        "sent_wall_ns": OFFSET + 2500, "received_wall_ns": OFFSET + 3000,
        "message_text": "{:charge, 3}", "to_dead": False}
    assert next(m for m in messages if m["to_dead"])["message_text"] == ":ping"

    processes = {p["pid"]: p for p in pq.read_table(target / "processes.parquet").to_pylist()}
    worker = processes["#PID<0.102.0>"]
    assert (worker["parent_pid"], worker["exit_reason_text"], worker["exit_ts"]) == (
        "#PID<0.100.0>", "{:badarith, []}", 4800)
    assert processes["#PID<0.101.0>"]["names"] == ["Shop.Payments"]


def test_parquet_without_text_is_plain_copies(shop: Path, tmp_path: Path) -> None:
    target = tmp_path / "pq"
    assert export(shop, "--format", "parquet", "-o", target, "--no-text") == 0
    events = pq.read_table(target / "events.parquet")
    assert "payload_text" not in events.column_names and events.num_rows == 21
    messages = pq.read_table(target / "messages.parquet")
    assert not {"payload", "message_text"} & set(messages.column_names)
    assert messages.num_rows == 4
    processes = pq.read_table(target / "processes.parquet")
    assert "exit_reason" in processes.column_names
    assert "exit_reason_text" not in processes.column_names


def test_parquet_of_an_empty_recording(tmp_path: Path) -> None:
    rec = record(tmp_path / "r.duckdb", [BatchBuilder().batch()])
    target = tmp_path / "pq"
    assert export(rec, "--format", "parquet", "-o", target) == 0
    events = pq.read_table(target / "events.parquet")
    assert events.num_rows == 0 and "payload_text" in events.column_names


# -- command line and errors ------------------------------------------------------------

def test_unknown_format_is_a_usage_error(shop: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_export(capsys, shop, "--format", "jaeger", "-o", tmp_path / "x")
    assert code == 2 and "jaeger" in err
    assert not (tmp_path / "x").exists()


def test_existing_output_needs_force(shop: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "trace.json"
    target.write_text("keep me")
    code, err = run_export(capsys, shop, "--format", "perfetto", "-o", target)
    assert code == 1
    assert err.strip() == f"error: {target} already exists; pass --force to replace it"
    assert target.read_text() == "keep me"
    code, err = run_export(capsys, shop, "--format", "perfetto", "-o", target, "--force")
    assert code == 0 and "perfetto: 4 tracks, 7 spans, 3 instants, 2 flows" in err
    assert json.loads(target.read_text())["metadata"]["spans"] == 7
    assert [p.name for p in tmp_path.iterdir()] == ["trace.json"]


def test_parquet_force_replaces_only_its_files(shop: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "pq"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    (target / "spans.parquet").write_text("old")
    assert run_export(capsys, shop, "--format", "parquet", "-o", target)[0] == 1
    assert run_export(capsys, shop, "--format", "parquet", "-o", target, "--force")[0] == 0
    assert sorted(p.name for p in target.iterdir()) == [
        "events.parquet", "messages.parquet", "notes.txt", "processes.parquet",
        "spans.parquet"]
    assert pq.read_table(target / "spans.parquet").num_rows == 7
    file_target = tmp_path / "file"
    file_target.write_text("")
    code, err = run_export(capsys, shop, "--format", "parquet", "-o", file_target, "--force")
    assert code == 1 and "is a file" in err


def test_refuses_to_overwrite_the_recording(shop: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_export(capsys, shop, "--format", "otlp", "-o", shop, "--force")
    assert code == 1 and "is the recording itself" in err
    open_file(shop).close()  # still a recording


@pytest.mark.parametrize("content", [b"", b"not a database at all" * 100])
def test_damaged_recording_is_one_sentence(tmp_path: Path, content: bytes,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    rec = tmp_path / "bad.duckdb"
    rec.write_bytes(content)
    code, err = run_export(capsys, rec, "--format", "perfetto", "-o", tmp_path / "t.json")
    assert code == 1
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert str(rec) in err
    assert [p.name for p in tmp_path.iterdir()] == ["bad.duckdb"]  # no partial output


def test_missing_recording(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_export(capsys, tmp_path / "nope.duckdb", "--format", "otlp", "-o",
                           tmp_path / "t.jsonl")
    assert code == 1 and err.strip() == f"error: there is no recording at {tmp_path}/nope.duckdb"


def test_unfinalized_recording_is_finalized_first(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    rec = record(tmp_path / "r.duckdb", shop_batches(), finalize=False)
    code, err = run_export(capsys, rec, "--format", "perfetto", "-o", tmp_path / "t.json")
    assert code == 0
    assert f"{rec} was not closed cleanly" in err
    assert json.loads((tmp_path / "t.json").read_text())["metadata"]["spans"] == 7
    con = open_file(rec)
    assert read_meta(con)["finalized"] is True
    con.close()


def test_recording_being_written_is_one_sentence(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    rec = record(tmp_path / "r.duckdb", shop_batches(), finalize=False)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; c = duckdb.connect(sys.argv[1]); "
         "print('ready', flush=True); sys.stdin.read()", str(rec)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        code, err = run_export(capsys, rec, "--format", "otlp", "-o", tmp_path / "t.jsonl")
    finally:
        holder.communicate("", timeout=30)
    assert code == 1
    assert err.strip() == (f"error: {rec} is being written by process {holder.pid}; open it "
                           "when the recording has stopped")


def test_texts_cache_and_undecodable_payloads() -> None:
    texts = Texts({1: "app@host"})
    assert texts.term(b"\x83a\x01", 1) == "1"
    assert texts.term(b"\x83a\x01", 1, flags=1) == "1 (truncated)"
    assert texts.args(b"\x83j", 1) == ""
    assert texts.term(b"\x83\xff", 1) == "#ElixirScope.Undecodable<2 bytes>"
    assert Texts({}, enabled=False).term(b"\x83a\x01", 1) is None
