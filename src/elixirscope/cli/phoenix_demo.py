"""``elixirscope demo --phoenix``: the sample shop on a throwaway PostgreSQL, recorded
through the framework layer under a workload with a failing request, an N+1 request,
a slow search and a slow LiveView event."""

from __future__ import annotations

import threading
from pathlib import Path

from elixirscope.analysis.framework import handled_text, sql_summary
from elixirscope.cli import output
from elixirscope.cli.record_command import record_for
from elixirscope.phoenix_sample import start_shop
from elixirscope.phoenix_workload import WorkloadCounts, run_workload
from elixirscope.postgres_cluster import postgres_cluster
from elixirscope.recording.recorder import RecorderStats
from elixirscope.recordings import Recording
from elixirscope.tracing.scope import Scope, attach

# Traced besides the framework layer: the shop's own code, calls and returns.
SHOP_MODULES = ("Shop.Catalog", "Shop.PriceUpdater")


def record_shop(target: Path, duration: float, *, live: bool) -> RecorderStats:
    output.err.print("starting PostgreSQL and the Phoenix sample shop (the first run "
                     "compiles Phoenix, about a minute) ...")
    with postgres_cluster() as db, start_shop(db, faults=True, price_tick_ms=500,
                                              name_prefix="shop_demo") as shop, \
            attach(shop.node.name, shop.node.cookie) as scope:
        output.err.print(f"attached to {shop.node.name} (serving {shop.url}); tracing the "
                         f"framework layer and {', '.join(SHOP_MODULES)}")
        scope.trace_framework()
        for module in SHOP_MODULES:
            scope.trace(module, "detailed")
        stop = threading.Event()
        counts: list[WorkloadCounts] = []

        def drive(_scope: Scope) -> None:
            scope.sample_metrics(10, 10.0)
            worker = threading.Thread(
                target=lambda: counts.append(run_workload(shop.url, duration, stop)),
                name="shop-workload", daemon=True)
            worker.start()

        output.err.print(f"recording {duration:g} s to {target} ...")
        try:
            stats = record_for(scope, target, duration, live=live, before=drive)
        finally:
            stop.set()
    if counts:
        done = counts[0]
        output.err.print(f"workload: {done.requests} requests ({done.failed} failed on "
                         f"purpose), {done.live_events} LiveView events, "
                         f"{done.channel_pushes} channel pushes"
                         + (f"; {len(done.errors)} client errors, e.g. {done.errors[0]}"
                            if done.errors else ""))
    return stats


def print_framework(recording: Recording) -> None:
    requests = recording.requests()
    output.out.print(f"\nrequests: {len(requests)}")
    for request in recording.requests(slowest=3):
        output.out.print(f"  {request.duration_ms or 0:8.1f} ms  {request.status}  "
                         f"{request.label}  ({len(request.queries)} queries)")
    failed = [request for request in requests if request.exception]
    if failed:
        output.out.print(f"  {len(failed)} raised, e.g. {failed[0].label}: "
                         f"{failed[0].exception}")
    for shape in recording.repeated_queries()[:2]:
        output.out.print(f"N+1: {shape.most_in_one_request} runs of one query in "
                         f"{shape.example_request}: {sql_summary(shape.sql, 100)}")
    for view in recording.liveviews():
        if not view.connected:
            continue
        slowest = max(view.callbacks, key=lambda c: c.max_ms, default=None)
        if slowest is not None:
            handled = handled_text(slowest.callback, slowest.name)
            output.out.print(f"LiveView {view.view} {view.pid}: {view.state_changes} assign "
                             f"changes; slowest {slowest.callback}"
                             f"{' ' + handled if handled else ''} {slowest.max_ms:.1f} ms")
            break
