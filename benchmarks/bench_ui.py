"""The web UI on large recordings: time to first complete paint in a real headless
Chromium, and the server time of each zoom or pan step (p50/p95).

Recordings: the synthetic service recordings of ``bench_recording_queries`` (built
and cached by its builder), 1 M events (goals: first paint at most 1.5 s, step p95 at
most 100 ms) and 10 M events (the same figures, reported).

First complete paint = opening the recording for the UI (``View.finished``: open,
dimensions, the finest level of the bin pyramid, read from the ``activity_bins`` that
finalize stored; baseline, in the same run: grouping the events instead, as older
files and live recordings do) + loading the page until the timeline has drawn the
server's first answer. Steps: 60 windows a person would visit (zooming in by 0.6
toward the busiest moments, panning by a fifth, zooming out), each asked as
``/api/timeline`` for a 1200-px canvas, timed on the server.
Baseline, in the same run: the same windows answered by one GROUP BY over the events
per request (what the pyramid avoids), as a ratio.

Run alone: ``.venv/bin/python -m benchmarks.bench_ui [--quick] [--no-browser]``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from benchmarks.bench_recording_queries import build, cache_path, cached
from elixirscope.web.app import Session, UIServer
from elixirscope.web.lod import Pyramid
from elixirscope.web.model import View

PAINT_GOAL = 1.5
STEP_GOAL = 0.100
STEPS = 60
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def recording(events: int) -> Path:
    path = cache_path(events)
    if cached(path) is None:
        print(f"building {path} ...", flush=True)
        build(path, events)
    return path


def windows(duration: float, seed: int = 3) -> list[tuple[float, float]]:
    rng = np.random.default_rng(seed)
    out: list[tuple[float, float]] = []
    t0, t1 = 0.0, duration
    for step in range(STEPS):
        width = t1 - t0
        move = step % 6
        if move in (0, 1, 2) and width > 1e-4:
            center = t0 + width * float(rng.uniform(0.3, 0.7))
            t0, t1 = center - width * 0.3, center + width * 0.3
        elif move in (3, 4):
            shift = width * 0.2 * (1 if rng.random() < 0.5 else -1)
            t0, t1 = t0 + shift, t1 + shift
        else:
            center = (t0 + t1) / 2
            t0, t1 = center - width * 0.8, center + width * 0.8
        if width < 2e-4:
            t0, t1 = 0.0, duration
        out.append((max(t0, -1.0), min(t1, duration + 1.0)))
    return out


def naive(view: View, t0: float, t1: float, px: int) -> float:
    """The baseline: the window's bins by one GROUP BY over the events."""
    started = time.perf_counter()
    lo, hi = view.ns(t0), view.ns(t1)
    width = max((hi - lo) // (px // 2), 1)
    where, params = view._raw_window(lo, hi)
    start = view.dims.start_wall_ns
    with view.cursor() as cur:
        cur.execute(f"SELECT pid_id, (ts + wall_offset - {start + lo}) // {width} AS b, "
                    f"count(*), count(*) FILTER (WHERE kind IN (3, 9)) FROM events "
                    f"WHERE {where} GROUP BY ALL", params).fetchall()
    return time.perf_counter() - started


def grouping(view: View) -> float:
    """The baseline for the finest level: grouping every event (what a recording
    without stored activity bins, or a live one, does), into the same pyramid."""
    started = time.perf_counter()
    with view.cursor() as cur:
        found = view._grouped_bins(cur, -1, view._last_seq)
    Pyramid(view.pyramid.base_shift, *(np.zeros(0, np.int64),) * 3).extend(
        np.asarray(found["key"], np.int64), np.asarray(found["n"], np.int64),
        np.asarray(found["e"], np.int64))
    return time.perf_counter() - started


def first_paint(url: str) -> float | None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    chromium = os.environ.get("ELIXIRSCOPE_CHROMIUM", "/usr/bin/chromium")
    if not Path(chromium).exists():
        return None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        started = time.perf_counter()
        page.goto(url)
        page.wait_for_function("window.__es && window.__es.ready && "
                               "window.__es.timeline.stats().mode && "
                               "window.__es.painted > 0", timeout=60_000)
        page.evaluate("new Promise(r => requestAnimationFrame(() => r()))")
        seconds = time.perf_counter() - started
        browser.close()
    return seconds


def run(events: int, browser: bool) -> None:
    path = recording(events)
    started = time.perf_counter()
    view = View.finished(path)
    opened = time.perf_counter() - started
    index = view.span_index(timeout=120)
    info = view.info()
    count = info["counts"]["events"]
    print(f"{count:,} events, {len(view.dims.pids)} processes, {info['duration']:.1f} s "
          f"({path.name})")
    grouped = grouping(view)
    pyramid_s = view.built["pyramid_s"]
    print(f"  open for the UI (open_recording + bin pyramid's finest level): "
          f"{opened * 1000:.0f} ms (pyramid {pyramid_s * 1000:.0f} ms, from "
          f"{view.pyramid_source}; grouping the events instead: {grouped * 1000:.0f} ms "
          f"-> {grouped / pyramid_s:.1f}x); span index in the background: "
          f"{view.built.get('span_index_s', 0) * 1000:.0f} ms "
          f"({0 if index is None else index.size:,} spans)")
    with UIServer(Session(view, token="bench")) as server:
        paint = first_paint(server.url) if browser else None
        if paint is None:
            print("  first complete paint: not measured (no browser)")
        else:
            total = opened + paint
            print(f"  first complete paint: {total * 1000:.0f} ms = open {opened * 1000:.0f} "
                  f"+ page to painted timeline {paint * 1000:.0f} ms (goal "
                  f"{PAINT_GOAL * 1000:.0f} ms: {'met' if total <= PAINT_GOAL else 'missed'})")
        steps = windows(info["duration"])
        ours, theirs, modes = [], [], []
        for t0, t1 in steps:
            clock = time.perf_counter()
            answer = view.timeline(t0, t1, 1200, None)
            ours.append(time.perf_counter() - clock)
            modes.append(answer["mode"])
            theirs.append(naive(view, t0, t1, 1200))
    p50, p95 = (float(np.percentile(ours, q)) for q in (50, 95))
    b50, b95 = (float(np.percentile(theirs, q)) for q in (50, 95))
    print(f"  zoom/pan step, server time over {len(steps)} steps "
          f"({modes.count('bins')} binned, {modes.count('detail')} event by event): "
          f"p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms (goal {STEP_GOAL * 1000:.0f} ms: "
          f"{'met' if p95 <= STEP_GOAL else 'missed'}); worst {max(ours) * 1000:.1f} ms")
    print(f"  baseline GROUP BY per request: p50 {b50 * 1000:.1f} ms, p95 {b95 * 1000:.1f} "
          f"ms -> baseline over pyramid: {b50 / p50:.1f}x at p50, {b95 / p95:.1f}x at p95")


def main(argv: Sequence[str] = ()) -> None:
    parser = argparse.ArgumentParser(prog="bench_ui")
    parser.add_argument("--quick", action="store_true", help="1 M events only")
    parser.add_argument("--no-browser", action="store_true")
    args = parser.parse_args(list(argv))
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for events in (1_000_000,) if args.quick else (1_000_000, 10_000_000):
        run(events, not args.no_browser)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
