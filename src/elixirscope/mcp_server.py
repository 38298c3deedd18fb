"""ElixirScope for AI agents: an MCP server (the official ``mcp`` SDK).

Tools attach to nodes, analyse their code, plan and record traces under limits, and
query recordings: findings, spans, events, values, tracebacks, time travel, waits,
messages and explanations. Every tool answers with text an agent can read (terms as
Elixir prints them, one JSON object per line for lists) and ids it can pass back
(recording ids, event seqs, span ids, pids).

Safety: the cookie is the server's own and never appears in an answer; ``eval`` is
refused unless the server was started with it allowed; a recording always runs under
the agent's limits, with a duration cap; answers are capped in size, with the offset
to page further; values under keys that name a secret are redacted in every answer.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from collections.abc import Callable, Iterable
from inspect import signature as pysignature
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import MCPServer

from elixirscope.beam_names import parse_mfa_text
from elixirscope.code_analysis import analyze_node
from elixirscope.dist import epmd
from elixirscope.dist.cookie import Cookie
from elixirscope.dist.names import local_short_host
from elixirscope.dist.node import connect
from elixirscope.elixir_format import inspect
from elixirscope.errors import ElixirScopeError
from elixirscope.explain import explain, redact_text
from elixirscope.planner import Plan, apply_plan, make_plan
from elixirscope.process_table import fetch_process_table
from elixirscope.recordings import Recording, open_recording
from elixirscope.remote_eval import eval_elixir, eval_erlang
from elixirscope.tracing.scope import attach

__all__ = ["MAX_CHARS", "MAX_RECORD_SECONDS", "ToolBox", "build_server"]

MAX_CHARS = 16_000
MAX_RECORD_SECONDS = 120.0
DEFAULT_LIMITS = {"max_events_per_second": 20_000.0, "max_events": 2_000_000.0}
_ID = re.compile(r"^[A-Za-z0-9_.-]{1,120}$")


class ToolError(ElixirScopeError):
    """A tool call that cannot be done as asked: one sentence the agent can act on."""


class ToolBox:
    """The tools' work, apart from the protocol: each method returns the answer text."""

    def __init__(self, directory: Path, *, cookie: str | Cookie | None = None,
                 allow_eval: bool = False, max_chars: int = MAX_CHARS) -> None:
        self.directory = directory
        self.cookie = cookie
        self.allow_eval = allow_eval
        self.max_chars = max_chars
        directory.mkdir(parents=True, exist_ok=True)

    # --- answers ------------------------------------------------------------------------

    def _page(self, lines: Iterable[str], offset: int = 0) -> str:
        """Lines from ``offset``, at most ``max_chars`` characters, secrets redacted; a
        last line says how to page on when some were left."""
        every = [redact_text(line) for line in lines]
        shown: list[str] = []
        size = 0
        for line in every[offset:]:
            if size + len(line) + 1 > self.max_chars and shown:
                break
            shown.append(line[: self.max_chars])
            size += len(line) + 1
        rest = len(every) - offset - len(shown)
        if rest > 0:
            shown.append(f"… {rest} more lines: call again with offset={offset + len(shown)}")
        return "\n".join(shown) if shown else "(nothing)"

    @staticmethod
    def _rows(items: Iterable[Any]) -> list[str]:
        return [json.dumps(item.as_dict() if hasattr(item, "as_dict") else item,
                           default=_json_default, ensure_ascii=False) for item in items]

    # --- recordings ---------------------------------------------------------------------

    def _path(self, recording: str) -> Path:
        """A recording by id (its file name in the server's directory, with or without
        ``.duckdb``) or by the path of a ``.duckdb`` file."""
        if _ID.match(recording):
            name = recording if recording.endswith(".duckdb") else f"{recording}.duckdb"
            path = self.directory / name
        else:
            path = Path(recording)
            if path.suffix != ".duckdb":
                raise ToolError(f"{recording!r} is neither a recording id nor a .duckdb file")
        if not path.is_file():
            raise ToolError(f"there is no recording {recording!r}; list_recordings shows them")
        return path

    def _with(self, recording: str, work: Callable[[Recording], str]) -> str:
        with open_recording(self._path(recording)) as rec:
            return work(rec)

    def list_recordings(self) -> str:
        rows = []
        for path in sorted(self.directory.glob("*.duckdb"), key=lambda p: p.stat().st_mtime):
            rows.append({"recording": path.stem, "bytes": path.stat().st_size,
                         "modified": time.strftime("%Y-%m-%dT%H:%M:%S",
                                                   time.localtime(path.stat().st_mtime))})
        return self._page(self._rows(rows))

    def diagnose(self, recording: str, refresh: bool = False) -> str:
        def work(rec: Recording) -> str:
            found = rec.findings(refresh=refresh)
            if not found:
                return "No findings: nothing wrong was detected in what was recorded."
            lines = []
            for number, finding in enumerate(found, 1):
                lines.append(f"{number}. {finding.severity.upper()} {finding.kind}: "
                             f"{finding.title}")
                lines += [f"   · {detail}" for detail in finding.details[:6]]
                lines.append("   evidence: " + json.dumps(finding.evidence.as_dict()))
            return self._page(lines)
        return self._with(recording, work)

    def spans(self, recording: str, module: str | None = None, function: str | None = None,
              pid: str | None = None, slowest: int | None = None, limit: int = 200,
              offset: int = 0) -> str:
        return self._with(recording, lambda rec: self._page(self._rows(rec.spans(
            module=module, function=function, pid=pid, slowest=slowest,
            limit=min(limit, 5000))), offset))

    def events(self, recording: str, pid: str | None = None, module: str | None = None,
               function: str | None = None, kind: str | None = None, since: float | None = None,
               until: float | None = None, limit: int = 200, offset: int = 0) -> str:
        return self._with(recording, lambda rec: self._page(self._rows(rec.events(
            pid=pid, module=module, function=function, kind=kind, since=since, until=until,
            limit=min(limit, 5000))), offset))

    def find(self, recording: str, value: str, limit: int = 100, offset: int = 0) -> str:
        return self._with(recording, lambda rec: self._page(self._rows(
            rec.find(value, limit=min(limit, 5000))), offset))

    def traceback(self, recording: str, event: int) -> str:
        return self._with(recording, lambda rec: self._page(
            self._rows([rec.traceback(event)])))

    def state_at(self, recording: str, pid: str, t: float) -> str:
        def work(rec: Recording) -> str:
            transition = rec.state_transition_at(pid, t)
            return self._page([f"state {transition.index + 1} of {pid} at {t} s, from "
                               f"{transition.callback} at {transition.time:.6f} s "
                               f"(event {transition.seq}):", transition.state_text])
        return self._with(recording, work)

    def state_history(self, recording: str, pid: str, limit: int = 200,
                      offset: int = 0) -> str:
        return self._with(recording, lambda rec: self._page(self._rows(
            rec.state_history(pid, limit=min(limit, 5000))), offset))

    def diff(self, recording: str, pid: str, t1: float, t2: float) -> str:
        return self._with(recording, lambda rec: self._page(
            [f"{pid} from {t1} s to {t2} s:", str(rec.diff(pid, t1, t2)) or "(no change)"]))

    def field_history(self, recording: str, pid: str, path: list[Any]) -> str:
        return self._with(recording, lambda rec: self._page(self._rows(
            rec.field_history(pid, path))))

    def waits_at(self, recording: str, t: float) -> str:
        def work(rec: Recording) -> str:
            graph = rec.waits_at(t)
            lines = [f"{len(graph.edges)} calls waiting at {graph.at:.6f} s, "
                     f"{len(graph.cycles)} cycles"]
            for edge in graph.edges:
                lines.append(json.dumps({**edge.wait.as_dict(),
                                         "callee_pid": rec.dims.label(edge.callee_pid_id)
                                         if edge.callee_pid_id is not None else None},
                                        default=_json_default, ensure_ascii=False))
            for cycle in graph.cycles:
                lines.append("cycle: " + " → ".join(
                    edge.wait.span.pid_name or edge.wait.pid for edge in cycle))
            return self._page(lines)
        return self._with(recording, work)

    def messages(self, recording: str, pid: str, other: str | None = None, limit: int = 200,
                 offset: int = 0) -> str:
        return self._with(recording, lambda rec: self._page(self._rows(
            rec.message_flow(pid, other, limit=min(limit, 5000))), offset))

    def explain(self, recording: str, target: str | None = None) -> str:
        return self._with(recording, lambda rec: self._page([explain(rec, target).text]))

    # --- nodes --------------------------------------------------------------------------

    def list_nodes(self, host: str | None = None) -> str:
        where = host or local_short_host()
        names = asyncio.run(epmd.list_names(where))
        return self._page(self._rows({"node": f"{name}@{where}", "port": port}
                                     for name, port in names))

    def processes(self, node: str, sort: str = "reductions", limit: int = 30) -> str:
        if sort not in ("reductions", "memory", "mailbox"):
            raise ToolError("sort is reductions, memory or mailbox")
        with connect(node, self.cookie) as conn:
            rows = fetch_process_table(conn, sort=sort, limit=min(limit, 1000))  # type: ignore[arg-type]
        return self._page(self._rows(rows))

    def eval(self, node: str, expression: str, erlang: bool = False) -> str:
        if not self.allow_eval:
            raise ToolError("eval is off: this server was started without --allow-eval")
        evaluate = eval_erlang if erlang else eval_elixir
        with connect(node, self.cookie) as conn:
            value = conn.run(evaluate(conn.anode, expression, timeout=30.0))
        return self._page([inspect(value, limit=500, printable_limit=10_000)])

    def analyze(self, node: str, modules: list[str] | None = None, offset: int = 0) -> str:
        with connect(node, self.cookie) as conn:
            found = conn.run(analyze_node(conn.anode, modules or None))
        lines = [f"{m.name}: {', '.join(m.kinds) or 'module'}; "
                 + (f"{len(m.functions)} functions, most complex "
                    + ", ".join(f"{f.name}/{f.arity} ({f.complexity})" for f in sorted(
                        m.functions, key=lambda f: -f.complexity)[:3])
                    if m.debug_info else f"no debug info ({m.reason})")
                 for m in found.modules]
        lines += [f"risk {r.kind}: {r.text}" for r in found.risks]
        lines.append(f"call graph: {len(found.edges)} edges")
        return self._page(lines, offset)

    def plan(self, node: str, budget: float, focus: str | None = None,
             window: float = 1.0) -> str:
        with connect(node, self.cookie) as conn:
            made = conn.run(make_plan(conn.anode, budget, focus=focus, window=window))
        plan_id = f"plan-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        made.save(self.directory / f"{plan_id}.json")
        lines = [f"plan {plan_id}: ~{made.expected_events_per_s:,.0f} of {budget:,.0f} "
                 "events/s; record it with record(node, plan=...)"]
        lines += self._rows(made.items)
        return self._page(lines)

    def record(self, node: str, duration: float, modules: list[str] | None = None,
               functions: list[str] | None = None, processes: list[str] | None = None,
               children: bool = False, phoenix: bool = False, plan: str | None = None,
               max_events_per_second: float | None = None,
               max_events: float | None = None) -> str:
        if not 0 < duration <= MAX_RECORD_SECONDS:
            raise ToolError(f"duration is seconds, above 0 and at most {MAX_RECORD_SECONDS:g}")
        limits = dict(DEFAULT_LIMITS)
        for key, value in (("max_events_per_second", max_events_per_second),
                           ("max_events", max_events)):
            if value is not None:
                if value <= 0 or value == float("inf"):
                    raise ToolError(f"{key} must be a positive, finite number: a trace "
                                    "without limits is refused")
                limits[key] = float(value)
        planned = Plan.load(self.directory / f"{plan}.json") if plan else None
        if not (modules or functions or processes or phoenix or planned):
            raise ToolError("name something to trace: modules, functions, processes, "
                            "phoenix or a plan")
        recording_id = f"rec-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        path = self.directory / f"{recording_id}.duckdb"
        with connect(node, self.cookie) as conn, attach(conn, None, **limits) as scope:
            recorder = scope.record(path)
            for module in modules or []:
                scope.trace(module, "detailed")
            for text in functions or []:
                module, function, arity = parse_mfa_text(text)
                scope.trace_function(module, function, arity, level="detailed")
            for process in processes or []:
                scope.trace_process(process, include_children=children)
            if planned is not None:
                apply_plan(scope, planned)
            if phoenix:
                scope.trace_framework()
            deadline = time.monotonic() + duration
            while time.monotonic() < deadline and scope.stopped is None:
                time.sleep(0.1)
            stats = recorder.stop()
            stopped = scope.stopped
        with open_recording(path, writable=True) as rec:
            found = rec.findings()
        lines = [f"recording {recording_id}: {stats.events:,} events in {duration:g} s"
                 + (f"; the agent stopped the tracing: {stopped}" if stopped else ""),
                 f"{len(found)} findings" + (", the worst:" if found else "")]
        lines += [f"  {f.severity} {f.kind}: {f.title}" for f in found[:5]]
        lines.append(f"next: diagnose(recording={recording_id!r}), spans(...), "
                     "state_history(...)")
        return self._page(lines)


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, Path):
        return str(value)
    return inspect(value)


def build_server(tools: ToolBox) -> MCPServer:
    """The MCP server: each tool runs its work in a thread (recording takes seconds) and
    answers one sentence when the call cannot be done."""
    server: MCPServer = MCPServer(
        "elixirscope",
        instructions=("ElixirScope records what Elixir/Erlang (BEAM) nodes do and answers "
                      "questions about the recordings. Start with list_nodes or "
                      "list_recordings; record(node, duration, modules=[...]) then "
                      "diagnose(recording) names what is wrong; spans, events, traceback, "
                      "state_at, state_history, diff, waits_at and messages show the "
                      "evidence; explain says it in words."))

    def register(name: str, work: Callable[..., str], description: str) -> None:
        async def run(**arguments: Any) -> str:
            try:
                return await asyncio.to_thread(work, **arguments)
            except ElixirScopeError as exc:
                return f"error: {redact_text(str(exc).splitlines()[0])}"
        run.__name__ = name
        run.__doc__ = description
        run.__signature__ = _signature(work)  # type: ignore[attr-defined]
        run.__annotations__ = dict(work.__annotations__)
        server.tool(name=name, description=description)(run)

    for name, description in TOOLS.items():
        register(name, getattr(tools, name), description)

    @server.resource("elixirscope://recordings", name="recordings",
                     description="The recordings this server has (ids, sizes, times).")
    def recordings() -> str:
        return tools.list_recordings()

    @server.resource("elixirscope://recordings/{recording}/findings", name="findings",
                     description="The findings of one recording, worst first.")
    def findings(recording: str) -> str:
        return tools.diagnose(recording)

    return server


def _signature(work: Callable[..., str]) -> Any:
    return pysignature(work)


TOOLS = {
    "list_nodes": "The nodes EPMD knows on a host (default: this one).",
    "processes": "The live process table of a node: pid, name, current function, "
                 "mailbox, memory, reductions (sort: reductions, memory or mailbox).",
    "eval": "Evaluates an Elixir (or, with erlang=true, Erlang) expression on a node. "
            "Off unless the server was started with --allow-eval.",
    "analyze": "What a node's code is, from the debug info of its loaded modules: module "
               "kinds, complexity, the call graph's size, and risks (GenServer callbacks "
               "calling other processes, sleeping, blocking, cast-only processes).",
    "plan": "Measures call rates on a node and chooses what to trace within an event "
            "budget (events/s), most relevant to the focus first; returns a plan id for "
            "record(plan=...).",
    "record": "Records a node for `duration` seconds (at most 120) under limits: modules "
              "(calls and returns), functions ('Mod.fun/2'), processes (pids or names: "
              "their messages and lifecycle; with children=true the processes they "
              "supervise or spawn too, which is how crashes and restarts are seen), "
              "phoenix (the framework layer), or a plan id. Returns the recording id and "
              "its findings.",
    "list_recordings": "The recordings this server can query, by id.",
    "diagnose": "What is wrong in a recording, worst first: each finding's title (the root "
                "cause in one sentence), details and evidence ids.",
    "spans": "Traced calls of a recording (call to return) with duration, arguments and "
             "result; `slowest` gives the N slowest.",
    "events": "Events of a recording (kind: call, return, exception, send, receive, spawn, "
              "exit, state ...), filtered by pid, module, function, time (seconds).",
    "find": "Events whose payload holds a value (an Elixir term, e.g. `{:deposit, 42}` or "
            "`%{id: 7}`).",
    "traceback": "The traced calls around an event (innermost first), the message that "
                 "started the outermost and its sender's calls, back to the origin.",
    "state_at": "A process's state at a time (seconds from the start of the recording).",
    "state_history": "Every recorded state change of a process, with the callback and "
                     "the message that caused it.",
    "diff": "How a process's state changed between two times.",
    "field_history": "Every change of one field of a process's state (path: a list of keys).",
    "waits_at": "Who waits on whom at a time (calls to other processes), and the cycles "
                "(deadlocks).",
    "messages": "The messages a process sent and received (to and from `other` if given).",
    "explain": "A paragraph that explains the recording, a finding (its number), a span "
               "('span 123') or a process, built from the findings and their evidence.",
}
