"""A workload for the Phoenix sample shop, driven through its real protocols: JSON API
requests (one of them failing, one an N+1, one slow when the shop's faults are on), a
LiveView cart (events, a component's event, a slow checkout) and a channel (join,
a reply, a broadcast)."""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field

from elixirscope.phoenix_clients import ChannelSession, HttpClient, LiveViewSession

__all__ = ["WorkloadCounts", "api_round", "live_round", "run_workload"]


@dataclass
class WorkloadCounts:
    requests: int = 0
    failed: int = 0
    live_events: int = 0
    channel_pushes: int = 0
    errors: list[str] = field(default_factory=list)


def api_round(http: HttpClient, counts: WorkloadCounts, i: int) -> None:
    """One round of API requests: list (N+1), show, search (slow), an order that
    fails (quantity 0), a good order, a login (a password to redact)."""
    calls = [("GET", "/api/products", None), ("GET", f"/api/products/{1 + i % 12}", None),
             ("GET", "/api/search?q=1", None),
             ("POST", "/api/orders", {"product_id": 1 + i % 12, "quantity": 0}),
             ("POST", "/api/orders", {"product_id": 1 + i % 12, "quantity": 2}),
             ("POST", "/api/login", {"email": "ann@example.com", "password": "hunter2"})]
    for method, path, body in calls:
        status, _ = http.request(method, path, body)
        counts.requests += 1
        counts.failed += status >= 500


def live_round(url: str, counts: WorkloadCounts, i: int) -> None:
    """A LiveView cart: add two products, open the summary component, check out."""
    with LiveViewSession(url, "/cart") as live:
        live.event("add", {"id": str(1 + i % 12)})
        live.event("add", {"id": str(1 + (i + 1) % 12)})
        live.event("toggle", {}, cid=1)
        live.event("checkout", {})
        counts.live_events += 4


def channel_round(url: str, counts: WorkloadCounts, i: int) -> None:
    with ChannelSession(url, "room:lobby", params={"user": f"user{i}", "token": "s3cret"}) as ch:
        ch.push("ping", {"n": i})
        ch.cast("shout", {"body": f"hello {i}"})
        ch.push("ping", {"n": i + 1})
        counts.channel_pushes += 3


def run_workload(url: str, seconds: float, stop: threading.Event | None = None
                 ) -> WorkloadCounts:
    """Rounds of API, LiveView and channel traffic for ``seconds`` (or until ``stop``)."""
    counts = WorkloadCounts()
    deadline = time.monotonic() + seconds
    i = 0
    with HttpClient(url) as http:
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            for step in (functools.partial(api_round, http), functools.partial(live_round, url),
                         functools.partial(channel_round, url)):
                try:
                    step(counts, i)
                except Exception as exc:  # keep driving; the caller sees what failed
                    counts.errors.append(f"{type(exc).__name__}: {exc}")
            i += 1
            time.sleep(0.2)
    return counts
