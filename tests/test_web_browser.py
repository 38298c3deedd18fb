"""The UI in a real headless Chromium (Debian's, through Playwright), used as a person
would: open a recording of the bank app, zoom in on the crash, click a message arrow,
scrub the state, search a function, share a link. Screenshots go to
``test-artifacts/web/``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from elixirscope.web.app import Session, UIServer
from elixirscope.web.model import View
from web_support import ARTIFACTS, CHROMIUM_ARGS, chromium, record_bank

pytestmark = pytest.mark.node
playwright_api = pytest.importorskip("playwright.sync_api")
if chromium() is None:
    pytest.skip("no chromium (./dev test installs Debian's)", allow_module_level=True)


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    path = record_bank(tmp_path_factory.mktemp("webui") / "bank.duckdb", 5.0)
    with UIServer(Session(View.finished(path), token="browser-token")) as server:
        yield server.url


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, url: str) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    opened = context.new_page()
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    opened.goto(url)
    opened.wait_for_function("window.__es && window.__es.ready && "
                             "window.__es.timeline.stats().mode", timeout=20_000)
    yield opened
    context.close()
    assert not errors, errors


def shot(page: Any, name: str) -> Path:
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def stats(page: Any) -> dict[str, Any]:
    return page.evaluate("window.__es.timeline.stats()")  # type: ignore[no-any-return]


def hits(page: Any) -> dict[str, Any]:
    return page.evaluate("window.__es.timeline.itemsOnScreen()")  # type: ignore[no-any-return]


def canvas_box(page: Any) -> dict[str, float]:
    return page.locator("[data-testid=timeline]").bounding_box()  # type: ignore[no-any-return]


def zoom_in_on_crash(page: Any) -> dict[str, Any]:
    """Finds the red cross of the crash, scrolls its lane into view and wheels in on it
    until the timeline shows every event."""
    crash = page.evaluate("window.__es.info && fetch('/api/rate?bins=100&token=' + "
                          "new URLSearchParams(location.search).get('token'))"
                          ".then(r => r.json()).then(r => r.marks[0])")
    seq, pid, _, t, _ = crash
    page.locator(f"#process-rows tr[data-pid='{pid}']").click()
    box = canvas_box(page)
    for _ in range(40):
        x = page.evaluate(f"window.__es.timeline.plotX({t})")
        y = page.evaluate(f"window.__es.timeline.laneY({pid})") + 20
        page.mouse.move(box["x"] + x, box["y"] + y)
        page.mouse.wheel(0, -400)
        page.wait_for_timeout(120)
        current = stats(page)
        if current["mode"] == "detail" and current["t1"] - current["t0"] < 0.02:
            break
    page.wait_for_function("window.__es.timeline.stats().mode === 'detail'")
    page.wait_for_timeout(300)
    return {"seq": seq, "pid": pid, "t": t}


def test_opens_with_the_whole_recording(page: Any) -> None:
    assert stats(page)["mode"] == "bins"
    assert page.inner_text("[data-testid=rec-name]") == "bank.duckdb"
    rows = page.locator("#process-rows tr")
    assert rows.count() > 10
    processes = page.inner_text("[data-testid=processes]")
    assert "crashed" in processes and "alive" not in processes
    # What matters first: the crashed process heads the list.
    assert "crashed" in rows.nth(0).inner_text()
    # The search box's examples come from this recording, not a fixed sample.
    placeholder = page.get_attribute("[data-testid=search]", "placeholder") or ""
    assert placeholder.startswith("Search: Bank.") and "kind:exit" in placeholder
    page.locator(".tabs button[data-tab=facts]").click()
    facts = page.inner_text("[data-testid=facts]")
    # The rate chart is drawn at the panel's width once its tab shows (a chart drawn
    # while hidden is one pixel stretched into a solid block).
    page.wait_for_function("document.querySelector('[data-testid=rate-chart]').width > 100")
    assert "OTP" in facts and "Bank.Account" in facts and "nothing was lost" in facts
    shot(page, "01-overview")
    page.keyboard.press("?")
    assert page.locator("[data-testid=help]").is_visible()
    assert "zoom in" in page.inner_text("[data-testid=help]")
    page.keyboard.press("Escape")
    assert not page.locator("[data-testid=help]").is_visible()


def test_zoom_in_on_the_crash_and_inspect_it(page: Any) -> None:
    crash = zoom_in_on_crash(page)
    marks = [m for m in hits(page)["marks"] if m["kind"] == "crash"]
    assert marks, "the crash is marked on its lane"
    box = canvas_box(page)
    page.mouse.click(box["x"] + marks[0]["x"], box["y"] + marks[0]["y"])
    inspector = page.locator("[data-testid=inspector]")
    page.wait_for_function("document.querySelector('#inspector-body').dataset.kind === 'event'")
    text = inspector.inner_text()
    assert "exit" in text and "ArithmeticError" in text and "Causal chain" in text, text
    assert f"sel=event:{crash['seq']}" in page.url
    shot(page, "02-crash-zoomed")
    # follow the causal chain one step back
    page.locator("[data-link=cause]").first.click()
    page.wait_for_function(f"!location.hash.includes('sel=event:{crash['seq']}') && "
                           "!document.querySelector('#inspector-body').textContent"
                           ".includes('loading')")
    assert "raise" in inspector.inner_text() or "exception" in inspector.inner_text()


def test_click_a_message_arrow(page: Any) -> None:
    # a person looks for messages the servers received, and walks through them
    page.fill("[data-testid=search]", "kind:receive pid:Bank.Ledger")
    page.press("[data-testid=search]", "Enter")
    page.wait_for_function("document.querySelector('[data-testid=search-count]')"
                           ".textContent.includes('/')")
    page.keyboard.press("Escape")
    page.locator("#timeline").focus()
    arrows: list[dict[str, Any]] = []
    for _ in range(10):
        page.wait_for_timeout(400)
        arrows = [a for a in hits(page)["arrows"]
                  if abs(a["x1"] - a["x0"]) + abs(a["y1"] - a["y0"]) > 30]
        if arrows:
            break
        page.keyboard.press("n")
    assert arrows, "message arrows are drawn in the detailed view"
    spots = [(a, a["x0"] + (a["x1"] - a["x0"]) * f, a["y0"] + (a["y1"] - a["y0"]) * f)
             for a in arrows for f in (0.5, 0.35, 0.65, 0.2, 0.8)]
    arrow, x, y = next(spot for spot in spots if page.evaluate(
        f"JSON.stringify(window.__es.timeline.hitAt({spot[1]}, {spot[2]}))")
        == f'{{"type":"message","id":{spot[0]["id"]}}}')
    box = canvas_box(page)
    page.mouse.click(box["x"] + x, box["y"] + y)
    page.wait_for_function("document.querySelector('#inspector-body').dataset.kind === "
                           "'message'")
    text = page.inner_text("[data-testid=inspector]")
    assert "→" in text and "sent" in text and "received" in text
    assert f"sel=message:{arrow['id']}" in page.url
    shot(page, "03-message-arrow")


def test_scrub_and_the_state_panel_changes(page: Any) -> None:
    page.locator("#process-rows tr", has_text="Bank.Transfer").first.click()
    panel = page.locator("[data-testid=state-panel]")
    scrubber = page.locator("[data-testid=scrubber]").bounding_box()
    y = scrubber["y"] + scrubber["height"] / 2

    def state_at(fraction: float) -> tuple[str, str]:
        page.mouse.click(scrubber["x"] + scrubber["width"] * fraction, y)
        page.wait_for_function("document.getElementById('state-body').dataset.shownT === "
                               "String(window.__es.focus.t)")
        return (page.inner_text("[data-testid=state-index]"),
                page.inner_text("[data-testid=state-text]"))

    early = state_at(0.2)
    late = state_at(0.8)
    assert early[0] != late[0] and early[1] != late[1]
    assert "of" in late[0]
    assert page.inner_text("[data-testid=state-diff]")
    assert panel.locator("li.current").count() == 1
    shot(page, "04-state-scrubbed")
    # step to the next state change
    before = page.inner_text("[data-testid=state-index]")
    page.locator("#timeline").focus()
    page.keyboard.press("c")
    page.wait_for_function(f"document.querySelector('[data-testid=state-index]') && "
                           f"document.querySelector('[data-testid=state-index]').textContent "
                           f"!== {before!r}")


def test_search_a_function_and_jump_to_it(page: Any) -> None:
    page.fill("[data-testid=search]", "Bank.Account.deposit/3")
    page.press("[data-testid=search]", "Enter")
    page.wait_for_function("document.querySelector('[data-testid=search-count]')"
                           ".textContent.includes('/')")
    count = page.inner_text("[data-testid=search-count]")
    assert count.startswith("1 / ")
    page.wait_for_function("document.querySelector('#inspector-body').dataset.kind === 'event'")
    assert "Bank.Account.deposit/3" in page.inner_text("[data-testid=inspector]")
    first_t = page.evaluate("window.__es.focus.t")
    page.keyboard.press("Escape")
    page.locator("#timeline").focus()
    page.keyboard.press("n")
    page.wait_for_function(f"window.__es.focus.t > {first_t}")
    assert page.inner_text("[data-testid=search-count]").startswith("2 / ")
    assert stats(page)["mode"] == "detail"
    shot(page, "05-search")


def test_a_shared_link_lands_on_the_same_moment(page: Any, browser: Any) -> None:
    zoom_in_on_crash(page)
    crash = next(m for m in hits(page)["marks"] if m["kind"] == "crash")
    box = canvas_box(page)
    page.mouse.click(box["x"] + crash["x"], box["y"] + crash["y"])
    page.wait_for_function("document.querySelector('#inspector-body').dataset.kind")
    page.wait_for_timeout(500)
    link = page.url
    focus = page.evaluate("({...window.__es.focus})")
    context = browser.new_context(viewport={"width": 1600, "height": 900})
    other = context.new_page()
    other.goto(link)
    other.wait_for_function("window.__es && window.__es.ready && "
                            "window.__es.timeline.stats().mode")
    landed = other.evaluate("({...window.__es.focus})")
    for key in ("t", "t0", "t1"):
        assert landed[key] == pytest.approx(focus[key], abs=1e-6)
    assert landed["pid"] == focus["pid"] and landed["sel"] == focus["sel"]
    other.wait_for_function("document.querySelector('#inspector-body').dataset.kind")
    assert "ArithmeticError" in other.inner_text("[data-testid=inspector]")
    shot(other, "06-shared-link")
    context.close()


def test_a_finding_focuses_the_timeline_on_its_evidence(page: Any) -> None:
    page.wait_for_function("window.__es.findings !== undefined")
    tab = page.locator("[data-testid=findings-tab]")
    assert "(" in tab.inner_text()
    tab.click()
    finding = page.locator("[data-testid=finding][data-kind=crash_cascade]").first
    assert "raised" in finding.inner_text() or "exited" in finding.inner_text()
    finding.click()
    page.wait_for_timeout(300)
    crash = page.evaluate("window.__es.findings.find(f => f.kind === 'crash_cascade')")
    current = stats(page)
    assert current["t0"] < crash["start"] < current["t1"]
    assert current["t1"] - current["t0"] < 1.0
    assert page.evaluate("window.__es.focus.pid") in crash["pid_ids"]
    # The selected process's mailbox and memory over time.
    page.wait_for_function("!document.querySelector('[data-testid=metrics-chart]').hidden")
    shot(page, "finding-focused")
