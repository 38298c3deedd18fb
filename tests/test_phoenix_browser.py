"""A recording of the real Phoenix shop in the UI, in a real headless Chromium: the
requests list and a request's waterfall, and a LiveView's assigns scrubbed in the
state panel. Screenshots go to ``test-artifacts/web/``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import elixirscope
from elixirscope.phoenix_clients import HttpClient, LiveViewSession
from elixirscope.phoenix_sample import PhoenixUnavailable, build_shop, start_shop
from elixirscope.postgres_cluster import PostgresUnavailable, postgres_cluster
from elixirscope.recordings import open_recording
from elixirscope.web.app import Session, UIServer
from elixirscope.web.model import View
from web_support import ARTIFACTS, CHROMIUM_ARGS, chromium

pytestmark = pytest.mark.node
playwright_api = pytest.importorskip("playwright.sync_api")
if chromium() is None:
    pytest.skip("no chromium (./dev test installs Debian's)", allow_module_level=True)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("phoenix-ui") / "shop.duckdb"
    try:
        build_shop()
        with postgres_cluster() as db, start_shop(db, faults=True) as shop, \
                elixirscope.attach(shop.node.name, shop.node.cookie) as scope:
            scope.trace_framework()
            recorder = scope.record(path)
            with HttpClient(shop.url) as http:
                assert http.get("/api/products")[0] == 200
                assert http.post("/api/orders", {"product_id": 2, "quantity": 0})[0] == 500
            with LiveViewSession(shop.url, "/cart") as live:
                live.event("add", {"id": "3"})
                time.sleep(0.1)
                live.event("add", {"id": "3"})
                time.sleep(0.1)
                live.event("checkout", {})
                time.sleep(0.2)
            recorder.stop()
    except (PhoenixUnavailable, PostgresUnavailable) as exc:
        pytest.skip(str(exc).splitlines()[0])
    return path


@pytest.fixture(scope="module")
def url(recording: Path) -> Iterator[str]:
    with UIServer(Session(View.finished(recording), token="phoenix-token")) as server:
        yield server.url


@pytest.fixture
def page(url: str) -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        opened = browser.new_context(viewport={"width": 1600, "height": 900}).new_page()
        opened.on("pageerror", lambda exc: errors.append(str(exc)))
        opened.goto(url)
        opened.wait_for_function("window.__es && window.__es.ready && window.__es.requests",
                                 timeout=20_000)
        yield opened
        browser.close()
    assert not errors, errors


def test_a_request_opens_as_a_waterfall(page: Any) -> None:
    tab = page.locator("[data-testid=requests-tab]")
    assert tab.is_visible()
    tab.click()
    rows = page.locator("[data-testid=request]")
    assert rows.count() >= 3  # the two API requests and the LiveView's page
    failed = page.locator("[data-testid=request].failed")
    assert failed.count() == 1 and "/api/orders" in failed.inner_text()
    assert "badarith" in (failed.get_attribute("title") or "")
    page.locator("[data-testid=request]", has_text="GET /api/products").first.click()
    page.wait_for_selector("[data-testid=waterfall-row]")
    kinds = page.eval_on_selector_all("[data-testid=waterfall-row]",
                                      "rows => rows.map(r => r.dataset.kind)")
    assert kinds[0] == "request" and kinds[1] == "dispatch"
    assert "pipeline" in kinds
    assert kinds.count("query") == 13  # the products, then one per product (N+1)
    bars = page.eval_on_selector_all(".wf-row.query .wf-bar",
                                     "bars => bars.map(b => parseFloat(b.style.left))")
    assert bars == sorted(bars) and 0 < bars[0] < 100
    page.screenshot(path=str(ARTIFACTS / "phoenix-waterfall.png"))
    # A click on a query selects its span on the timeline.
    page.locator(".wf-row.query").first.click()
    page.wait_for_function("window.__es.focus.sel && window.__es.focus.sel.type === 'span' "
                           "&& document.getElementById('inspector-body').textContent"
                           ".includes('Repo.query')")
    assert "SELECT" in page.inner_text("[data-testid=inspector]")


def test_scrub_a_liveviews_assigns(page: Any, recording: Path) -> None:
    with open_recording(recording) as rec:
        (view,) = [v for v in rec.liveviews() if v.connected]
        last_state = rec.state_history(view.pid)[-1].time
    pid = view.pid.removeprefix("#PID")
    page.locator("#process-filter").fill(pid)
    page.locator("#process-rows tr", has_text=pid).first.click()
    body = page.locator("#state-body")
    page.evaluate(f"window.__es.timeline && window.__es.focus && "
                  f"import('/static/js/focus.js').then(m => m.setFocus({{t: {last_state!r}}}))")
    page.wait_for_function("document.getElementById('state-body').dataset.shownT === "
                           "String(window.__es.focus.t)")
    final = page.inner_text("[data-testid=state-text]")
    assert "orders: 1" in final and "items: %{}" in final
    seen = [final]
    for _ in range(6):
        before = page.inner_text("[data-testid=state-index]")
        page.locator("#pb-prev-state").click()
        page.wait_for_function("document.querySelector('[data-testid=state-index]') && "
                               "document.querySelector('[data-testid=state-index]')"
                               f".textContent !== {before!r}")
        page.wait_for_function("document.getElementById('state-body').dataset.shownT === "
                               "String(window.__es.focus.t)")
        seen.append(page.inner_text("[data-testid=state-text]"))
        if "items: %{3 => 2}" in seen[-1]:
            break
    assert any("items: %{3 => 2}" in text for text in seen), seen[-1]
    assert "handle_event" in body.inner_text()
    page.screenshot(path=str(ARTIFACTS / "phoenix-assigns.png"))
