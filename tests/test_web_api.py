"""The UI's JSON API over real recordings of the sample bank app, through the real
server (uvicorn on a random loopback port): tokens, level of detail, items, search,
state, errors, the live stream, and the ``ui`` command."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from elixirscope.cli.demo_command import _start_demo
from elixirscope.recordings import open_recording
from elixirscope.sample_nodes import start_sample
from elixirscope.tracing.scope import attach
from elixirscope.web.app import ROUTES, Session, UIServer
from elixirscope.web.lod import LANE_BITS, Pyramid, SpanIndex, SpanRows
from elixirscope.web.model import View
from web_support import record_bank, trace_bank, wait_for

TOKEN = "test-token-123"


@pytest.fixture(scope="module")
def bank_recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return record_bank(tmp_path_factory.mktemp("web") / "bank.duckdb", 5.0)


@pytest.fixture(scope="module")
def server(bank_recording: Path) -> Iterator[UIServer]:
    with UIServer(Session(View.finished(bank_recording), token=TOKEN)) as running:
        yield running


@pytest.fixture
def client(server: UIServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.port}",
                      headers={"x-elixirscope-token": TOKEN}, timeout=30) as c:
        yield c


def get(client: httpx.Client, path: str, **params: object) -> dict:  # type: ignore[type-arg]
    response = client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


pytestmark = pytest.mark.node


def test_every_api_request_needs_the_token(server: UIServer) -> None:
    base = f"http://127.0.0.1:{server.port}"
    for path in ("/api/info", "/api/timeline?t0=0&t1=1", "/api/stream", "/api/openapi.json"):
        bare = httpx.get(base + path, timeout=10)
        assert bare.status_code == 401
        assert bare.json() == {"error": "this request needs the token from the URL the "
                                        "server printed"}
        wrong = httpx.get(base + path, params={"token": TOKEN + "x"}, timeout=10)
        assert wrong.status_code == 401
    assert httpx.get(base + "/api/info", params={"token": TOKEN}, timeout=10).status_code == 200
    # The page and its modules carry no data.
    page = httpx.get(base + "/", timeout=10)
    assert page.status_code == 200 and "ElixirScope" in page.text
    assert httpx.get(base + "/static/js/main.js", timeout=10).status_code == 200
    assert server.url == f"http://127.0.0.1:{server.port}/?token={TOKEN}"


def test_openapi_describes_every_endpoint(client: httpx.Client) -> None:
    spec = get(client, "/api/openapi.json")
    assert spec["openapi"].startswith("3.")
    described = set(spec["paths"])
    assert {path for path, _ in ROUTES} | {"/api/stream"} <= described
    timeline = spec["paths"]["/api/timeline"]["get"]
    assert {p["name"] for p in timeline["parameters"]} == {"t0", "t1", "px", "lanes"}


def test_facts_lanes_and_rate(client: httpx.Client, bank_recording: Path) -> None:
    info = get(client, "/api/info")
    with open_recording(bank_recording) as rec:
        summary = rec.summary()
    assert info["live"] is False and info["time_travel"] is True
    assert info["counts"]["events"] == summary["events"]
    assert info["counts"]["spans"] == summary["spans"]
    assert abs(info["duration"] - summary["duration"]) < 0.05
    assert info["nodes"][0]["otp_release"]
    lanes = get(client, "/api/lanes")["lanes"]
    assert len(lanes) == summary["processes"]
    named = {lane["name"]: lane for lane in lanes if lane["name"]}
    assert named["Bank.Transfer"]["events"] > 100
    crashed = [lane for lane in lanes if lane["crashed"]]
    assert len(crashed) == 1 and "ArithmeticError" in crashed[0]["exit_reason"]
    # the spawn tree: every child comes after its parent, one level deeper
    position = {lane["pid_id"]: i for i, lane in enumerate(lanes)}
    for lane in lanes:
        if lane["parent"] in position and lane["depth"] > 0:
            assert position[lane["parent"]] < position[lane["pid_id"]]
    rate = get(client, "/api/rate", bins=100)
    assert sum(rate["n"]) == info["counts"]["events"]
    assert len(rate["b"]) <= 100
    assert [mark[4] for mark in rate["marks"]] == [True]


def test_timeline_level_of_detail(client: httpx.Client, bank_recording: Path) -> None:
    info = get(client, "/api/info")
    whole = get(client, "/api/timeline", t0=0, t1=info["duration"], px=1000)
    assert whole["mode"] == "bins"
    assert sum(sum(lane["n"]) for lane in whole["bins"].values()) == info["counts"]["events"]
    crash_time = whole["marks"][0][3]
    narrow = get(client, "/api/timeline", t0=crash_time - 0.01, t1=crash_time + 0.002,
                 px=1000)
    assert narrow["mode"] == "detail"
    with open_recording(bank_recording) as rec:
        expected = rec.events(since=crash_time - 0.01, until=crash_time + 0.002, limit=None)
    assert [e[0] for e in narrow["events"]] == [e.seq for e in expected]
    kinds = {e[2] for e in narrow["events"]}
    assert 9 in kinds  # the exit
    assert narrow["spans"] and all(s[3] < crash_time + 0.002 and s[4] >= crash_time - 0.01
                                   for s in narrow["spans"])
    assert all(str(s[6]) in narrow["functions"] for s in narrow["spans"])
    assert narrow["messages"], "messages in the window are drawn as arrows"
    for message in narrow["messages"]:
        assert message[3] is None or message[4] is None or message[3] <= message[4] + 1e-3
    # lanes restrict the window to those processes
    pid = narrow["events"][0][1]
    one = get(client, "/api/timeline", t0=crash_time - 0.01, t1=crash_time + 0.002,
              px=1000, lanes=str(pid))
    assert {e[1] for e in one["events"]} == {pid}


def matched_message(path: Path) -> tuple[int, float]:
    """A message whose send and receive were both recorded: its id and send time."""
    with open_recording(path) as rec:
        row = rec.con.execute("SELECT message_id FROM messages WHERE send_seq IS NOT NULL "
                              "AND receive_seq IS NOT NULL ORDER BY message_id LIMIT 1"
                              ).fetchone()
        assert row is not None
        return int(row[0]), rec.event(int(row[0])).time


def test_inspector_items_and_causes(client: httpx.Client, bank_recording: Path) -> None:
    info = get(client, "/api/info")
    crash = get(client, "/api/timeline", t0=0, t1=info["duration"], px=500)["marks"][0]
    event = get(client, f"/api/events/{crash[0]}")
    assert event["kind"] == "exit" and "ArithmeticError" in event["text"]
    assert event["causes"] and any("raised" in step["relation"] for step in event["causes"])
    assert event["stack"] == []  # an exit is not raised in a call
    raised = next(step for step in event["causes"] if step["kind"] == "exception")
    exception = get(client, f"/api/events/{raised['seq']}")
    assert exception["stack"] and exception["stack"][0]["span_id"] == exception["span_id"]
    assert exception["stack"][0]["call"].startswith(exception["mfa"].rsplit(".", 1)[0])
    window = get(client, "/api/timeline", t0=crash[3] - 0.02, t1=crash[3], px=800)
    message_id, sent = matched_message(bank_recording)
    around = get(client, "/api/timeline", t0=sent - 0.001, t1=sent + 0.001, px=800)
    arrow = next(m for m in around["messages"] if m[0] == message_id)
    assert arrow[3] <= arrow[4] and arrow[5] == message_id and arrow[6] is not None
    message = get(client, f"/api/messages/{message_id}")
    assert message["message_id"] == message_id and message["text"]
    span_id = window["spans"][0][0]
    span = get(client, f"/api/spans/{span_id}")
    assert span["span_id"] == span_id and span["call_seq"] == span_id and span["args"]
    receive = get(client, f"/api/events/{message['receive_seq']}")
    assert receive["message"]["send_seq"] == message["send_seq"]


def test_search_and_step(client: httpx.Client) -> None:
    found = get(client, "/api/search", q="Bank.Account.deposit/3")
    assert found["filters"] == {"module": "Bank.Account", "function": "deposit/3"}
    assert found["matches"] and {m["mfa"] for m in found["matches"]} == {
        "Bank.Account.deposit/3"}
    times = [m["time"] for m in found["matches"]]
    assert times == sorted(times)
    text = get(client, "/api/search", q="ArithmeticError")
    assert text["filters"] == {"text": "ArithmeticError"} and text["matches"]
    exits = get(client, "/api/search", q="kind:exit")
    assert all(m["kind"] == "exit" for m in exits["matches"])
    first = found["matches"][0]
    step = get(client, "/api/step", t=first["time"], pid=first["pid_id"], what="event")
    assert step["found"] and step["time"] > first["time"]
    back = get(client, "/api/step", t=step["time"], pid=first["pid_id"], dir="prev")
    assert back["seq"] == first["seq"]


def test_state_panel_endpoints(client: httpx.Client) -> None:
    lanes = get(client, "/api/lanes")["lanes"]
    transfer = next(lane for lane in lanes if lane["name"] == "Bank.Transfer")
    history = get(client, f"/api/state/{transfer['pid_id']}/history")
    transitions = history["transitions"]
    assert len(transitions) > 5 and transitions[0]["index"] == 0
    early = get(client, f"/api/state/{transfer['pid_id']}/at", t=transitions[1]["time"])
    late = get(client, f"/api/state/{transfer['pid_id']}/at", t=transitions[-1]["time"])
    assert early["index"] == 1 and late["index"] == len(transitions) - 1
    assert early["state"] != late["state"]
    assert late["transition"]["delta"]
    before = get(client, f"/api/state/{transfer['pid_id']}/at", t=-1)
    assert before["index"] is None
    diff = get(client, f"/api/state/{transfer['pid_id']}/diff", t1=transitions[1]["time"],
               t2=transitions[-1]["time"])
    assert diff["text"]
    step = get(client, "/api/step", t=transitions[1]["time"], pid=transfer["pid_id"],
               what="state")
    assert step["time"] == transitions[2]["time"]


@pytest.mark.parametrize(("path", "status", "words"), [
    ("/api/timeline?t0=x&t1=2", 400, "t0 must be a number"),
    ("/api/timeline?t0=2&t1=1", 400, "t1 must be after t0"),
    ("/api/timeline?t1=1", 400, "t0 is missing"),
    ("/api/timeline?t0=0&t1=nan", 400, "finite"),
    ("/api/timeline?t0=0&t1=1&lanes=a,b", 400, "lanes must be"),
    ("/api/events/99999999", 404, "no event 99999999"),
    ("/api/events/abc", 400, "seq must be an integer"),
    ("/api/spans/1", 404, "no span 1"),
    ("/api/search?q=", 400, "search is empty"),
    ("/api/search?q=kind:bogus", 400, "not an event kind"),
    ("/api/search?q=Nope.Module.f/1", 400, "does not appear"),
    ("/api/step?t=0&what=dance", 400, "what must be"),
    ("/api/state/99999/history", 404, "no process"),
    ("/api/nothing", 404, "no API endpoint"),
])
def test_bad_input_is_a_4xx_with_one_sentence(client: httpx.Client, path: str, status: int,
                                              words: str) -> None:
    response = client.get(path)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error and "\n" not in error and "Traceback" not in error


def test_pyramid_and_span_index_match_brute_force() -> None:
    rng = np.random.default_rng(1)
    times = rng.integers(0, 10**9, 20_000)
    lanes = rng.integers(0, 30, 20_000)
    errors = (rng.random(20_000) < 0.05).astype(np.int64)
    shift = 14
    pyramid = Pyramid(shift, ((times >> shift) << LANE_BITS) | lanes,
                      np.ones_like(times), errors)
    for lo, hi in [(0, 10**9), (123_456, 9_876_543), (5 * 10**8, 5 * 10**8 + 10**6)]:
        for level_shift in (shift, shift + 3, shift + 9):
            level = pyramid.level(level_shift)
            part = level.window(lo, hi)
            first, last = lo >> level_shift, (hi - 1) >> level_shift
            inside = ((times >> level_shift) >= first) & ((times >> level_shift) <= last)
            assert int(level.counts[part].sum()) == int(inside.sum())
            assert int(level.errors[part].sum()) == int(errors[inside].sum())
    starts = rng.integers(0, 10**9, 5000)
    ends = starts + (rng.pareto(1.0, 5000) * 1000).astype(np.int64)
    rows = SpanRows(np.arange(5000), rng.integers(0, 5, 5000), np.zeros(5000, np.int64),
                    np.ones(5000, np.int64), starts, ends, np.zeros(5000, np.int8))
    index = SpanIndex(rows)
    for lo, hi in [(0, 10**6), (4 * 10**8, 4 * 10**8 + 5 * 10**6), (0, 10**9)]:
        got = set(index.rows.span_id[index.query(lo, hi, limit=10**6)].tolist())
        expected = set(np.flatnonzero((starts < hi) & (ends >= lo)).tolist())
        assert got == expected
        longer = set(index.rows.span_id[index.query(lo, hi, min_duration=50_000,
                                                    limit=10**6)].tolist())
        assert longer == {i for i in expected if ends[i] - starts[i] >= 50_000}


def test_live_recording_grows_then_finishes(tmp_path: Path) -> None:
    """The UI reads a recording while the recorder writes it (through cursors of the
    recorder's connection), streams its growth, then shows the finished file."""
    from elixirscope.cli.record_command import LiveUI
    from elixirscope.cli.ui_command import UIOptions

    path = tmp_path / "live.duckdb"
    live = LiveUI(UIOptions())
    with start_sample("bank", name_prefix="t_webl") as beam, \
            attach(beam.name, beam.cookie) as scope:
        trace_bank(scope)
        recorder = scope.record(path, flush_interval=0.3)
        live.attach(recorder)
        assert live.server is not None
        base = f"http://127.0.0.1:{live.server.port}"
        token = live.server.session.token
        client = httpx.Client(base_url=base, params={"token": token}, timeout=30)
        _start_demo(scope)
        wait_for(lambda: client.get("/api/info").json()["counts"]["events"] > 200, 15)
        info = client.get("/api/info").json()
        assert info["live"] is True
        window = client.get("/api/timeline", params={"t0": 0, "t1": info["duration"],
                                                     "px": 800}).json()
        assert window["live"] is True
        calls = client.get("/api/search", params={"q": "Bank.Account.deposit/3"}).json()
        first = calls["matches"][0]
        narrow = client.get("/api/timeline", params={
            "t0": first["time"] - 0.002, "t1": first["time"] + 0.002, "px": 800}).json()
        assert narrow["mode"] == "detail"
        assert first["seq"] in [e[0] for e in narrow["events"]]
        assert any(s[0] == first["seq"] for s in narrow["spans"]), "paired in the window"
        # Names come from the recorder as processes show up in the recording.
        wait_for(lambda: "Bank.Transfer" in {
            lane["name"] for lane in client.get("/api/lanes").json()["lanes"]}, 15)
        seq = first["seq"]
        assert client.get(f"/api/events/{seq}").json()["mfa"] == "Bank.Account.deposit/3"
        assert client.get("/api/spans/1").status_code == 409
        with client.stream("GET", "/api/stream") as stream:
            lines = stream.iter_lines()
            updates = [next(lines) for _ in range(4)]
        assert "event: update" in updates
        live.finishing()
        assert client.get("/api/info").status_code == 503
        recorder.stop()
        live.finished(path)
    info = client.get("/api/info").json()
    assert info["live"] is False and info["counts"]["spans"] > 0
    assert info["version"] == 1
    live.server.stop()
    client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_ui_command(bank_recording: Path, tmp_path: Path) -> None:
    env = {key: value for key, value in os.environ.items() if key != "ERLANG_COOKIE"}
    missing = subprocess.run([sys.executable, "-m", "elixirscope", "ui",
                              str(tmp_path / "none.duckdb")], capture_output=True, text=True,
                             timeout=60, env=env, check=False)
    assert missing.returncode == 1
    assert missing.stderr.strip().splitlines() == [
        f"error: there is no recording at {tmp_path / 'none.duckdb'}"]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        taken = subprocess.run([sys.executable, "-m", "elixirscope", "ui", str(bank_recording),
                                "--port", str(port)], capture_output=True, text=True,
                               timeout=60, env=env, check=False)
    assert taken.returncode == 1
    assert taken.stderr.strip().splitlines() == [
        f"error: port {port} on 127.0.0.1 is in use; choose another with --port"]
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-m", "elixirscope", "ui", str(bank_recording),
                                "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith(f"ElixirScope UI: http://127.0.0.1:{port}/?token=")
        url = line.split(": ", 1)[1].strip()
        token = url.split("token=", 1)[1]
        assert len(token) >= 24
        info = httpx.get(f"http://127.0.0.1:{port}/api/info", params={"token": token},
                         timeout=10).json()
        assert info["name"] == bank_recording.name
    finally:
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=20)
    assert process.returncode == 0, err
    assert token not in err


def test_findings_metrics_and_waits(client: httpx.Client, bank_recording: Path) -> None:
    found = get(client, "/api/findings")
    assert found["live"] is False and found["findings"], found
    crash = next(f for f in found["findings"] if f["kind"] == "crash_cascade")
    assert crash["pid_ids"] and crash["focus"]["t0"] < crash["start"] < crash["focus"]["t1"]
    with open_recording(bank_recording) as rec:
        account = rec.pid_ids("Bank.Transfer")[0]
        wait = rec.waits(limit=1)[0]
    series = get(client, f"/api/metrics/{account}")
    assert len(series["t"]) == len(series["queue"]) == len(series["memory"]) > 10
    graph = get(client, "/api/waits", t=wait.since + (wait.duration or 0) / 2)
    assert any(edge["span_id"] == wait.span.span_id and edge["from"] == wait.span.pid_id
               and edge["to"] is not None for edge in graph["edges"]), graph
