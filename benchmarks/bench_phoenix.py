"""The Phoenix sample shop under HTTP load, with and without a framework trace
(``record --phoenix``) recording it: throughput and median latency as ratios against
the untraced runs of the same session, and bytes recorded per request with its queries.

A Python load generator on loopback (threads, keep-alive connections) asks for
``GET /api/products/:id`` (one Ecto query each) and ``GET /api/products`` (13 queries
each with the N+1 fault on, 2 without: it is off here). Untraced, traced and untraced
again, so drift on a shared machine shows as the gap between the two baselines.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path

import elixirscope
from elixirscope.phoenix_clients import HttpClient
from elixirscope.phoenix_sample import PhoenixUnavailable, start_shop
from elixirscope.postgres_cluster import PostgresUnavailable, postgres_cluster
from elixirscope.recordings import open_recording

CLIENTS = 4
SECONDS = 6.0


def load(url: str, seconds: float) -> tuple[int, list[float]]:
    latencies: list[float] = []
    lock = threading.Lock()

    def client(k: int) -> None:
        mine = []
        deadline = time.monotonic() + seconds
        with HttpClient(url) as http:
            i = k
            while time.monotonic() < deadline:
                path = "/api/products" if i % 10 == 0 else f"/api/products/{1 + i % 12}"
                began = time.perf_counter()
                status, _ = http.get(path)
                mine.append(time.perf_counter() - began)
                assert status == 200, status
                i += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(latencies), latencies


def main() -> None:
    try:
        db_context = postgres_cluster()
        db = db_context.__enter__()
    except PostgresUnavailable as exc:
        print(f"skipped: {exc}")
        return
    try:
        with start_shop(db) as shop:
            load(shop.url, 1.0)  # warm up
            runs: dict[str, tuple[int, list[float]]] = {}
            runs["untraced 1"] = load(shop.url, SECONDS)
            with tempfile.TemporaryDirectory() as tmp, \
                    elixirscope.attach(shop.node.name, shop.node.cookie) as scope:
                path = Path(tmp) / "phoenix.duckdb"
                scope.trace_framework()
                recorder = scope.record(path)
                runs["traced --phoenix"] = load(shop.url, SECONDS)
                recorder.stop()
                with open_recording(path) as rec:
                    began = time.perf_counter()
                    events, payload = rec.con.execute(
                        "SELECT count(*), sum(octet_length(payload)) FROM events").fetchone()
                    scan = time.perf_counter() - began
                    began = time.perf_counter()
                    requests = len(rec.requests())
                    queries = len(rec.queries())
                    viewed = time.perf_counter() - began
                    began = time.perf_counter()
                    titles = [f.title for f in rec.findings(refresh=True)]
                    findings = len(titles)
                    diagnosed = time.perf_counter() - began
                size = path.stat().st_size
            runs["untraced 2"] = load(shop.url, SECONDS)
    except PhoenixUnavailable as exc:
        print(f"skipped: {exc}")
        return
    finally:
        db_context.__exit__(None, None, None)
    base_rate = statistics.mean(runs[k][0] for k in ("untraced 1", "untraced 2")) / SECONDS
    base_p50 = statistics.mean(statistics.median(runs[k][1]) for k in ("untraced 1",
                                                                       "untraced 2"))
    print(f"{CLIENTS} clients, {SECONDS:g} s per run, GET /api/products/:id and /api/products")
    for name, (count, latencies) in runs.items():
        rate = count / SECONDS
        p50 = statistics.median(latencies)
        print(f"  {name:18} {rate:8,.0f} req/s ({rate / base_rate:.2f}x)  p50 "
              f"{p50 * 1000:6.2f} ms ({p50 / base_p50:.2f}x)")
    traced = runs["traced --phoenix"]
    print(f"  throughput traced/untraced: {traced[0] / SECONDS / base_rate:.2f}x (goal >= 0.75x)"
          f"; p50 latency: {statistics.median(traced[1]) / base_p50:.2f}x (goal <= 1.3x)")
    print(f"  recorded {requests:,} requests, {queries:,} queries, {events:,} events: "
          f"{(payload + 30 * events) / max(requests, 1):,.0f} bytes per request on the wire "
          f"(payload + header), {size / max(requests, 1):,.0f} bytes per request in the file")
    print(f"  the requests and queries views: {viewed:.2f} s, then diagnose ({findings} "
          f"findings): {diagnosed:.2f} s; one SQL pass over the events: {scan:.3f} s")
    for title in titles[:5]:
        print(f"    finding: {title[:160]}")


if __name__ == "__main__":
    main()
