"""``requests``, ``queries``, ``liveviews`` and ``channels``: the framework layer of a
recording made with ``record --phoenix``."""

from __future__ import annotations

from pathlib import Path

import click

from elixirscope.analysis.framework import handled_text, sql_summary
from elixirscope.cli import output
from elixirscope.cli.listing import print_listing
from elixirscope.cli.options import json_option
from elixirscope.elixir_format import inspect
from elixirscope.recordings import open_recording


def _ms(value: float | None) -> str:
    return "open" if value is None else f"{value:,.1f}"


def _cut(text: str, width: int = 90) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@click.command()
@click.argument("recording", metavar="REC", type=click.Path(path_type=Path))
@click.option("--route", metavar="R", help="Only requests whose route or path matches R "
              "(`*` matches anything): /api/products/:id, /api/*.")
@click.option("--status", type=int, metavar="S",
              help="Only responses with status S; a single digit means the class (5: 5xx).")
@click.option("--slowest", type=click.IntRange(min=1), metavar="N",
              help="The N slowest requests, slowest first.")
@json_option("One JSON object per request, its queries included.")
def requests(recording: Path, route: str | None, status: int | None, slowest: int | None,
             as_json: bool) -> None:
    """The HTTP requests of recording REC (recorded with --phoenix): method, route,
    status, duration, controller action, params (secrets redacted in the node), the
    Ecto queries made inside each, and the exception of a request that raised."""
    with open_recording(recording) as rec:
        found = rec.requests(route=route, status=status, slowest=slowest)
    if as_json:
        output.json_rows(found)
        return
    rows = []
    for request in found:
        rows.append([f"{request.start:.3f}", _ms(request.duration_ms),
                     str(request.status or "-"), request.method, request.route or request.path,
                     request.action or "", f"{len(request.queries)} / {request.query_ms:,.1f}",
                     _cut(inspect(request.params), 50) if request.params else ""])
        if request.exception:
            where = f" in {request.raised_in}" if request.raised_in else ""
            rows.append(["", "", "", "", f"  raised {_cut(request.exception, 90)}{where}",
                         "", "", ""])
            for frame in request.stack[:4]:
                rows.append(["", "", "", "", f"    {frame}", "", "", ""])
    print_listing(f"{recording}: {len(found)} requests",
                  ["start (s)", "ms", "status", "method", "route", "action",
                   "queries / ms", "params"], rows, right=2, cut=1)


@click.command()
@click.argument("recording", metavar="REC", type=click.Path(path_type=Path))
@click.option("--slowest", type=click.IntRange(min=1), metavar="N",
              help="The N slowest queries, slowest first.")
@click.option("--repeated", is_flag=True,
              help="Only query texts run 3 times or more inside one request (N+1), "
                   "the worst first.")
@json_option("One JSON object per query (per query text with --repeated).")
def queries(recording: Path, slowest: int | None, repeated: bool, as_json: bool) -> None:
    """The Ecto queries of recording REC (recorded with --phoenix): SQL, params, source
    table, rows, total/queue/query/decode times, and the request each ran in."""
    with open_recording(recording) as rec:
        if repeated:
            shapes = rec.repeated_queries()
            if as_json:
                output.json_rows(shapes)
                return
            rows = [[str(shape.most_in_one_request), str(shape.runs), str(shape.requests),
                     f"{shape.total_ms:,.1f}", shape.example_request or "",
                     sql_summary(shape.sql)] for shape in shapes]
            print_listing(f"{recording}: {len(shapes)} query texts repeated inside one "
                          "request (N+1)", ["most in one request", "runs", "requests", "ms",
                                            "e.g. in", "sql"], rows, right=4, cut=1)
            return
        found = rec.queries(slowest=slowest)
    if as_json:
        output.json_rows(found)
        return
    rows = [[f"{query.start:.3f}", _ms(query.duration_ms),
             _ms(query.queue_ms), _ms(query.query_ms), _ms(query.decode_ms),
             "" if query.rows is None else str(query.rows), query.source or "",
             query.request or "", sql_summary(query.sql), _cut(inspect(query.params), 30)]
            for query in found]
    print_listing(f"{recording}: {len(found)} queries",
                  ["start (s)", "ms", "queue", "query", "decode", "rows", "source",
                   "in", "sql", "params"], rows, right=6, cut=2)


@click.command()
@click.argument("recording", metavar="REC", type=click.Path(path_type=Path))
@json_option("One JSON object per LiveView process.")
def liveviews(recording: Path, as_json: bool) -> None:
    """The LiveViews of recording REC (recorded with --phoenix): per LiveView process,
    its callbacks (mount, handle_params, handle_event per event, handle_info per
    message, render, components) with counts and times, and how often its assigns
    changed (`elixirscope history REC PID` shows each change)."""
    with open_recording(recording) as rec:
        found = rec.liveviews()
    if as_json:
        output.json_rows(found)
        return
    rows = []
    for view in found:
        rows.append([view.pid, view.view, "websocket" if view.connected else "HTTP render",
                     str(view.state_changes), "", "", "", ""])
        for callback in view.callbacks:
            handled = handled_text(callback.callback, callback.name)
            rows.append(["", "", "", "", callback.callback + (f" {handled}" if handled else ""),
                         str(callback.count), f"{callback.total_ms:,.1f}",
                         f"{callback.max_ms:,.1f}"])
    print_listing(f"{recording}: {len(found)} LiveView processes",
                  ["pid", "view", "", "assign changes", "callback", "count", "total ms",
                   "max ms"], rows, right=1, cut=0)


@click.command()
@click.argument("recording", metavar="REC", type=click.Path(path_type=Path))
@json_option("One JSON object per topic.")
def channels(recording: Path, as_json: bool) -> None:
    """The channel topics of recording REC (recorded with --phoenix): who joined each
    (process, result), the handle_in events pushed, and every broadcast on it with the
    processes it reached (the PubSub topics LiveViews subscribe to are listed too)."""
    with open_recording(recording) as rec:
        found = rec.channels()
    if as_json:
        output.json_rows(found)
        return
    rows = []
    for topic in found:
        pushed = ", ".join(f"{event} x{count}" for event, count in topic.handled.items())
        rows.append([topic.topic, topic.channel or "", str(len(topic.joins)),
                     str(len(topic.broadcasts)), pushed])
        for event, status, payload in topic.replies[:5]:
            rows.append(["", "", "", "", f"replied to {event}: {{:{status}, "
                         f"{_cut(inspect(payload), 60)}}}"])
        for broadcast in topic.broadcasts[:5]:
            reached = ", ".join(broadcast.reached[:5]) + (
                f" (+{broadcast.count - 5})" if broadcast.count > 5 else "")
            rows.append(["", f"  at {broadcast.start:.3f} s from {broadcast.pid}", "", "",
                         f"reached {broadcast.count}: {reached or 'nobody'}  "
                         f"{_cut(inspect(broadcast.message), 60)}"])
    print_listing(f"{recording}: {len(found)} topics",
                  ["topic", "channel", "joins", "broadcasts", "handle_in / reached"], rows,
                  right=0, cut=1)
