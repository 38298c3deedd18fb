"""Failed requests: HTTP requests answered with a 5xx, grouped by route and by what
they raised, with where it was raised and the params of one of them. Read from a
framework trace (``record --phoenix``): Phoenix catches what a controller raises and
renders an error page, so no process crashes and the crash detector sees nothing."""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from elixirscope.analysis.framework import Request, has_framework_spans, requests
from elixirscope.diagnosis.finding import Evidence, Finding
from elixirscope.elixir_format import inspect

if TYPE_CHECKING:
    from elixirscope.recording.query import RecordingQueries


def detect(rec: RecordingQueries) -> list[Finding]:
    if not has_framework_spans(rec):
        return []
    everything = requests(rec)
    by_route: dict[str, list[Request]] = defaultdict(list)
    for request in everything:
        by_route[request.label].append(request)
    groups: dict[tuple[str, str | None, str | None], list[Request]] = defaultdict(list)
    for request in everything:
        if (request.status or 0) >= 500 or request.exception:
            groups[(request.label, request.exception, request.raised_in)].append(request)
    return [_finding(failed, len(by_route[label]))
            for (label, _, _), failed in groups.items()]


def _finding(failed: list[Request], of: int) -> Finding:
    first = failed[0]
    what = f"{first.label}"
    if first.action:
        what += f" ({first.action})"
    status = first.status or "no response"
    times = f"all {of} times" if len(failed) == of else f"{len(failed)} of {of} times"
    title = f"Failing request: {what} answered {status} {times}"
    if first.exception:
        title += f": {first.exception}"
        if first.raised_in:
            title += f" raised in {first.raised_in}"
    details = [f"params: {inspect(first.params)}"] if first.params else []
    details += [f"at {request.start:.3f} s on {request.pid}: {request.status}"
                for request in failed[:5]]
    return Finding(
        kind="failed_request", title=title, severity="error", start=first.start,
        end=failed[-1].start, processes=tuple(sorted({r.pid for r in failed}))[:10],
        evidence=Evidence(spans=tuple(request.span_id for request in failed[:20])),
        next_commands=(f"elixirscope requests REC --status {str(status)[:1]}",
                       f"elixirscope range REC {first.span_id} --max-depth 4"),
        details=tuple(details), weight=float(len(failed)))
