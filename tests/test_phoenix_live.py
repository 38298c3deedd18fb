"""The framework layer on the real Phoenix sample shop and a real PostgreSQL, driven
through HTTP, the LiveView protocol and the Channel protocol."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.tracing_support import erl

import elixirscope
from elixirscope.etf import Atom
from elixirscope.phoenix_clients import ChannelSession, HttpClient, LiveViewSession
from elixirscope.phoenix_sample import PhoenixUnavailable, ShopNode, build_shop, start_shop
from elixirscope.phoenix_workload import WorkloadCounts, api_round
from elixirscope.postgres_cluster import PostgresUnavailable, postgres_cluster
from elixirscope.recordings import open_recording

pytestmark = pytest.mark.node


@pytest.fixture(scope="module")
def shop() -> Iterator[ShopNode]:
    try:
        build_shop()
        with postgres_cluster() as db, start_shop(db, faults=True) as node:
            yield node
    except (PhoenixUnavailable, PostgresUnavailable) as exc:
        pytest.skip(str(exc).splitlines()[0])


@pytest.fixture
def node(shop: ShopNode) -> Iterator[elixirscope.Node]:
    with elixirscope.connect(shop.node.name, shop.node.cookie) as conn:
        yield conn


def our_handlers(node: elixirscope.Node) -> list[object]:
    """Our handler ids attached now (one handler is listed once per event)."""
    handlers = erl(node, "telemetry:list_handlers([])")
    return sorted({h[Atom("id")] for h in handlers
                   if isinstance(h[Atom("id")], tuple) and h[Atom("id")][0] == Atom("elixirscope")},
                  key=repr)


def record(shop: ShopNode, path: Path, drive: object) -> None:
    with elixirscope.attach(shop.node.name, shop.node.cookie) as scope:
        scope.trace_framework()
        recorder = scope.record(path)
        drive()  # type: ignore[operator]
        time.sleep(0.5)
        recorder.stop()


def test_requests_their_queries_failures_and_redacted_secrets(shop: ShopNode,
                                                              tmp_path: Path) -> None:
    path = tmp_path / "api.duckdb"

    def drive() -> None:
        with HttpClient(shop.url) as http:
            api_round(http, WorkloadCounts(), 2)
            status, _ = http.request("GET", "/api/products/3",
                                     headers={"authorization": "Bearer topsecret-bearer"})
            assert status == 200

    record(shop, path, drive)
    with open_recording(path) as rec:
        requests = rec.requests()
        routes = [(r.method, r.route, r.status) for r in requests]
        assert ("GET", "/api/products", 200) in routes
        assert ("GET", "/api/products/:id", 200) in routes
        assert ("POST", "/api/orders", 500) in routes
        failed = rec.requests(status=5)
        assert [r.route for r in failed] == ["/api/orders"]
        assert failed[0].exception is not None and "badarith" in failed[0].exception
        assert failed[0].action == "ShopWeb.OrderController.create"
        index = next(r for r in requests if r.route == "/api/products")
        assert len(index.queries) == 13  # the products, then one per product (N+1 on)
        assert {q.source for q in index.queries} == {"products", "reviews"}
        assert all(q.rows is not None and q.query_ms is not None for q in index.queries)
        shapes = rec.repeated_queries()
        assert shapes and shapes[0].most_in_one_request == 12
        assert 'FROM "reviews"' in shapes[0].sql
        slow = rec.requests(route="/api/search")[0]
        assert slow.duration_ms is not None and slow.duration_ms >= 200
        assert rec.queries(slowest=1)[0].sql.startswith("SELECT p0")
        # The plug pipeline is a span inside the dispatch, its conn never shipped.
        dispatches = {r.span_id: r for r in requests}
        pipelines = rec.spans(module="ShopWeb.Router", function="api")
        assert len(pipelines) == len(requests)
        for pipeline in pipelines:
            assert pipeline.call == "ShopWeb.Router.api(#conn, #opts)"
            dispatch = rec.span(pipeline.parent_span_id)
            assert dispatch.parent_span_id in dispatches
            assert dispatch.function == dispatches[dispatch.parent_span_id].action.split(".")[-1]
        login = rec.requests(route="/api/login")[0]
        assert login.params[b"password"] == b"[REDACTED]"
        assert login.params[b"email"] == b"ann@example.com"
        payloads = b"".join(bytes(row[0]) for row in
                            rec.con.execute("SELECT payload FROM events").fetchall())
        findings = {finding.kind: finding for finding in rec.findings()}
    # Each fault is named by a finding, with where it is.
    failed = findings["failed_request"]
    assert failed.severity == "error"
    assert "POST /api/orders (ShopWeb.OrderController.create) answered 500" in failed.title
    assert ":badarith raised in Shop.Catalog.place_order/2 (lib/shop/catalog.ex:" in failed.title
    assert '"quantity" => 0' in failed.details[0]
    n_plus_one = findings["n_plus_one_queries"]
    assert n_plus_one.title.startswith("N+1 queries: GET /api/products "
                                       "(ShopWeb.ProductController.index) ran the same query "
                                       "on reviews 12 times in one request")
    slow = findings["slow_query"]
    assert "pg_sleep" in slow.title and "in GET /api/search" in slow.title
    assert b"hunter2" not in payloads and b"topsecret-bearer" not in payloads


def test_liveview_assigns_are_its_state(shop: ShopNode, tmp_path: Path) -> None:
    path = tmp_path / "live.duckdb"

    def drive() -> None:
        with LiveViewSession(shop.url, "/cart") as live:
            live.event("add", {"id": "3"})
            live.event("add", {"id": "3"})
            live.event("toggle", {}, cid=1)
            live.event("checkout", {})
            erl_node = elixirscope.connect(shop.node.name, shop.node.cookie)
            with erl_node:
                erl(erl_node, "'Elixir.Shop.PriceUpdater':bump(2, 555)")
            time.sleep(0.3)

    record(shop, path, drive)
    with open_recording(path) as rec:
        views = [v for v in rec.liveviews() if v.connected]
        assert len(views) == 1
        view = views[0]
        assert view.view == "ShopWeb.CartLive"
        callbacks = {(c.callback, c.name): c for c in view.callbacks}
        assert callbacks[("handle_event", "add")].count == 2
        assert callbacks[("handle_event", "checkout")].max_ms >= 250  # the slow checkout
        assert callbacks[("handle_info", "price_changed")].count == 1
        (prices,) = [b for b in rec.broadcasts() if b.topic == "prices"]
        assert prices.reached == (view.pid,) or prices.reached == (f"#PID<{view.pid[1:-1]}>",)
        slow = {finding.kind: finding for finding in rec.findings()}["slow_query"]
        assert 'SELECT pg_sleep(0.3)' in slow.title
        assert 'in ShopWeb.CartLive.handle_event "checkout"' in slow.title
        history = rec.state_history(view.pid)
        by_callback = [t.callback for t in history]
        assert "mount" in by_callback and "handle_event" in by_callback
        assert "handle_info" in by_callback
        adds = [t for t in history if t.callback == "handle_event"]
        after_two_adds = rec.state_at(view.pid, adds[1].time)
        assert after_two_adds[Atom("items")] == {3: 2}
        # The component's assigns change when it updates, in the render that follows.
        update = next(t for t in history if t.callback == "update" and t.index > adds[1].index)
        component = (Atom("Elixir.ShopWeb.CartSummary"), b"summary")
        assert after_two_adds[Atom("@components")][component][Atom("count")] == 1
        assert rec.state_at(view.pid, update.time)[Atom("@components")][component][
            Atom("count")] == 2
        toggled = next(t for t in history if t.mfa == "ShopWeb.CartSummary.handle_event/3")
        assert rec.state_at(view.pid, toggled.time)[Atom("@components")][
            component][Atom("expanded")] is True
        last = rec.state_at(view.pid, history[-1].time)
        assert last[Atom("payment_token")] == b"[REDACTED]"
        payloads = b"".join(bytes(row[0]) for row in
                            rec.con.execute("SELECT payload FROM events").fetchall())
        assert b"tok_" not in payloads
        assert last[Atom("products")][2][Atom("price")] == 555
        assert last[Atom("items")] == {}


def test_channels_join_and_handle_in(shop: ShopNode, tmp_path: Path) -> None:
    path = tmp_path / "channel.duckdb"

    def drive() -> None:
        with ChannelSession(shop.url, "room:lobby", params={"user": "ann", "token": "s3cr3t"}) \
                as channel, ChannelSession(shop.url, "room:lobby", params={"user": "bob"}):
            assert channel.push("ping", {"n": 1}) == {"n": 1, "pong": True}
            channel.cast("shout", {"body": "hi"})
            time.sleep(0.2)

    record(shop, path, drive)
    with open_recording(path) as rec:
        all_spans = rec.spans()
        spans = {(s.module, s.function): s for s in all_spans}
        join = spans[("ShopWeb.RoomChannel", "join")]
        assert '"room:lobby"' in join.call
        handled = [s for s in rec.spans(module="ShopWeb.RoomChannel", function="handle_in")]
        assert sorted(s.call.split("(")[1].split(",")[0] for s in handled) == \
            ['"ping"', '"shout"']
        (connect,) = [s for s in all_spans if s.module == "ShopWeb.UserSocket"
                      and '"ann"' in s.call]
        assert '"token" => "[REDACTED]"' in connect.call and "s3cr3t" not in connect.call
        (lobby,) = [topic for topic in rec.channels() if topic.topic == "room:lobby"]
        assert lobby.channel == "ShopWeb.RoomChannel"
        assert len(lobby.joins) == 2 and lobby.handled == {"ping": 1, "shout": 1}
        assert lobby.replies == [("ping", "ok", {b"n": 1, b"pong": True})]
        (shout,) = lobby.broadcasts
        # The broadcast reached both channel processes: the shouter's and the listener's.
        assert shout.count == 2
        assert sorted(shout.reached) == sorted(f"#PID<{pid[1:-1]}>" if pid.startswith("<")
                                               else pid for pid, _, _ in lobby.joins)
        assert shout.pid in {pid for pid, _, _ in lobby.joins}


CHILD = textwrap.dedent("""
    import sys, time
    import elixirscope
    scope = elixirscope.attach(sys.argv[1], sys.argv[2])
    scope.trace_framework()
    print("ready", flush=True)
    time.sleep(600)
""")


def test_no_handler_or_pattern_is_left_behind(shop: ShopNode, node: elixirscope.Node) -> None:
    with elixirscope.attach(node) as scope:
        ref = scope.trace_framework()
        assert len(our_handlers(node)) == 1
        scope.stop_trace(ref)
        assert our_handlers(node) == []
        scope.trace_framework()
        assert len(our_handlers(node)) == 1
    assert our_handlers(node) == []
    child = subprocess.Popen([sys.executable, "-c", CHILD, shop.node.name, shop.node.cookie],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env={**os.environ})
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "ready"
    assert len(our_handlers(node)) == 1
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    deadline = time.monotonic() + 10
    while our_handlers(node) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert our_handlers(node) == []
    info = erl(node, "erlang:trace_info({'Elixir.ShopWeb.CartLive', handle_info, 2}, traced)")
    assert info == (Atom("traced"), False)
    # The app still serves after all of it.
    with HttpClient(shop.url) as http:
        assert http.get("/api/products/1")[0] == 200


def test_a_limit_in_the_vm_stops_the_framework_trace_and_detaches_it(
        shop: ShopNode, node: elixirscope.Node, tmp_path: Path) -> None:
    with elixirscope.attach(node, max_events=100) as scope:
        scope.trace_framework()
        recorder = scope.record(tmp_path / "limited.duckdb")
        with HttpClient(shop.url) as http:
            for i in range(20):
                http.get(f"/api/products/{1 + i % 12}")
        deadline = time.monotonic() + 10
        while scope.stopped is None and time.monotonic() < deadline:
            time.sleep(0.1)
        stats = recorder.stop()
        assert scope.stopped is not None and scope.stopped.reason == "max_events"
        # Nothing of the framework trace is left attached, and the app serves on.
        assert our_handlers(node) == []
        with HttpClient(shop.url) as http:
            assert http.get("/api/products/1")[0] == 200
    assert 100 <= stats.events < 400  # checked every 256 records: may pass by that much


def test_a_node_without_telemetry_says_so(tmp_path: Path) -> None:
    from elixirscope.sample_nodes import start_bare
    with start_bare("erl", name_prefix="no_tel") as beam:
        with elixirscope.attach(beam.name, beam.cookie) as scope, \
                pytest.raises(elixirscope.TraceError, match="telemetry is not loaded"):
            scope.trace_framework()
        alone = cli("record", beam.name, "--cookie", beam.cookie, "--phoenix",
                    "--duration", "1", "-o", str(tmp_path / "alone.duckdb"))
        assert alone.returncode != 0 and "Traceback" not in alone.stderr
        assert ":telemetry is not loaded on" in alone.stderr
        mixed = cli("record", beam.name, "--cookie", beam.cookie, "--phoenix",
                    "--trace-function", "lists:seq/2", "--duration", "1", "-o",
                    str(tmp_path / "mixed.duckdb"))
        assert mixed.returncode == 0, mixed.stderr
        assert "the other traces go on" in mixed.stderr


def cli(*args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "elixirscope", *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_record_phoenix_from_the_command_line(shop: ShopNode, tmp_path: Path) -> None:
    path = tmp_path / "cli.duckdb"
    recorder = subprocess.Popen(
        [sys.executable, "-m", "elixirscope", "record", shop.node.name, "--cookie",
         shop.node.cookie, "--phoenix", "--redact", "email,password", "--duration", "4",
         "-o", str(path), "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    assert recorder.stderr is not None
    while "tracing" not in recorder.stderr.readline():
        assert recorder.poll() is None
    with HttpClient(shop.url) as http:
        api_round(http, WorkloadCounts(), 5)
    out, err = recorder.communicate(timeout=120)
    assert recorder.returncode == 0, err
    stats = json.loads(out)
    assert any("Failing request: POST /api/orders" in title for title in stats["findings"])
    failed = cli("requests", str(path), "--status", "5", "--json")
    assert failed.returncode == 0, failed.stderr
    (row,) = [json.loads(line) for line in failed.stdout.splitlines()]
    assert row["route"] == "/api/orders" and row["status"] == 500
    assert row["raised_in"].startswith("Shop.Catalog.place_order/2 (lib/shop/catalog.ex:")
    assert row["stack"][0].startswith(":erlang.div/2")
    login = json.loads(cli("requests", str(path), "--route", "/api/log*", "--json").stdout)
    # --redact replaced the defaults: the email goes too, the password still does.
    assert login["params"] == {"email": "[REDACTED]", "password": "[REDACTED]"}
    text = cli("requests", str(path), "--slowest", "1").stdout
    assert "/api/search" in text
    repeated = cli("queries", str(path), "--repeated")
    assert repeated.returncode == 0 and 'FROM "reviews"' in repeated.stdout
    assert "GET /api/products" in repeated.stdout


@pytest.mark.usefixtures("shop")  # skips with it where Phoenix cannot be built
def test_demo_phoenix(tmp_path: Path) -> None:
    path = tmp_path / "demo.duckdb"
    result = cli("demo", "--phoenix", "--duration", "5", "-o", str(path), "--json",
                 timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    kinds = {finding["kind"] for finding in summary["findings"]}
    assert {"failed_request", "n_plus_one_queries", "slow_query"} <= kinds
    titles = " ".join(finding["title"] for finding in summary["findings"])
    assert 'ShopWeb.CartLive.handle_event "checkout"' in titles
    assert "workload:" in result.stderr
    explained = cli("explain", str(path))
    assert explained.returncode == 0, explained.stderr
    assert "Failing request: POST /api/orders" in explained.stdout
    assert "raised in Shop.Catalog.place_order/2" in explained.stdout


def test_analyze_recognizes_the_phoenix_layers(node: elixirscope.Node) -> None:
    from elixirscope.code_analysis import analyze_node
    found = node.run(analyze_node(node.anode))
    kinds = {m.name: m.kinds for m in found.modules}
    assert "LiveView" in kinds["ShopWeb.CartLive"]
    assert "LiveComponent" in kinds["ShopWeb.CartSummary"]
    assert "Channel" in kinds["ShopWeb.RoomChannel"]
    assert "Phoenix controller" in kinds["ShopWeb.ProductController"]
    assert "Phoenix router" in kinds["ShopWeb.Router"]
    assert "Ecto repo" in kinds["Shop.Repo"]
    assert "Ecto schema" in kinds["Shop.Product"]
    assert "GenServer" in kinds["Shop.PriceUpdater"]


def test_a_healthy_shop_has_no_findings(shop: ShopNode, node: elixirscope.Node,
                                        tmp_path: Path) -> None:
    faults = [Atom("n_plus_one"), Atom("slow_search"), Atom("slow_checkout")]
    for fault in faults:
        node.rpc("Elixir.Shop.Faults", "disable", [fault])
    path = tmp_path / "healthy.duckdb"

    def drive() -> None:
        deadline = time.monotonic() + 3
        with HttpClient(shop.url) as http:
            i = 0
            while time.monotonic() < deadline:
                for route in ("/api/products", f"/api/products/{1 + i % 12}",
                              "/api/search?q=1"):
                    assert http.get(route)[0] == 200
                i += 1
        with LiveViewSession(shop.url, "/cart") as live:
            live.event("add", {"id": "2"})
            live.event("checkout", {})

    try:
        record(shop, path, drive)
    finally:
        for fault in faults:
            node.rpc("Elixir.Shop.Faults", "enable", [fault])
    with open_recording(path) as rec:
        assert len(rec.requests()) > 100
        assert [f.title for f in rec.findings()] == []
