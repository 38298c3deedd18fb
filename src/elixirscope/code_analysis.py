"""Code analysis of what a node runs, from the debug info of its loaded modules: no
source checkout needed.

The analyzer (``agent/elixirscope_analyzer.erl``) is compiled on the node for one
analysis, summarises each module there and is unloaded. Here the summaries become:

* per module: what it is (GenServer, Supervisor, LiveView, Phoenix controller, Ecto
  repo ...), its functions with their complexity (1 + branches), nesting and size;
  a module without debug info is listed as such, never guessed;
* the call graph between the analysed modules (local and remote calls, with counts)
  and the processes each function calls or casts to by a name written in the code;
* risks: a GenServer callback that calls another process (directly, or through a
  function of the analysed modules that does: a deadlock risk when the other calls
  back), a callback that sleeps, blocks on I/O or receives selectively, and a process
  that is only ever cast to (its mailbox has no back-pressure);
* the running supervisors whose callback module is analysed, or that supervise an
  analysed module, with their strategy and children.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from elixirscope.agent.loader import load_agent, unload
from elixirscope.beam_names import mfa_display, module_atom, module_display
from elixirscope.dist.async_node import AsyncNode
from elixirscope.elixir_format import inspect
from elixirscope.errors import ElixirScopeError
from elixirscope.etf import Atom, decode
from elixirscope.supervisors import Supervisor, live_supervisors

__all__ = ["CodeAnalysis", "FunctionInfo", "ModuleInfo", "Risk", "SourceError",
           "analyze_node", "analyze_source", "application_modules"]

ANALYZER = "elixirscope_analyzer"
SOURCE_ANALYZER = "elixirscope_source_analyzer.exs"
# Applications whose processes and modules are the runtime's, not the system's own.
RUNTIME_APPS = frozenset({"kernel", "stdlib", "compiler", "runtime_tools", "sasl", "erts",
                          "elixir", "logger", "iex", "mix", "crypto", "os_mon", "eex",
                          "public_key", "asn1", "ssl", "inets", "syntax_tools", "tools",
                          "parsetools", "xmerl", "mnesia", "observer", "wx", "debugger",
                          "et", "reltool", "ex_unit", "hex"})
MAX_MODULES = 2_000
CALLBACKS = frozenset({"init", "handle_call", "handle_cast", "handle_info", "handle_continue",
                       "handle_event", "terminate", "code_change", "mount", "handle_params",
                       "handle_in", "join", "update"})
_KINDS = (
    (("gen_server", "GenServer", ":gen_server"), "GenServer"),
    (("supervisor", "Supervisor", ":supervisor"), "Supervisor"),
    (("gen_statem", ":gen_statem"), "gen_statem"),
    (("gen_event", ":gen_event"), "gen_event"),
    (("application", "Application", ":application"), "Application"),
    (("Agent",), "Agent"),  # from source: `use Agent` (compiled, it declares no behaviour)
    (("Phoenix.LiveView",), "LiveView"),
    (("Phoenix.LiveComponent",), "LiveComponent"),
    (("Phoenix.Channel",), "Channel"),
    (("Phoenix.Socket",), "Phoenix socket"),
    (("Phoenix.Endpoint",), "Phoenix endpoint"),
    (("Plug",), "Plug"),
)
_BY_EXPORTS = (
    ({"__routes__/0"}, "Phoenix router"),
    ({"__adapter__/0", "config/0"}, "Ecto repo"),
    ({"__schema__/1"}, "Ecto schema"),
)


@dataclass(frozen=True)
class FunctionInfo:
    module: str
    name: str
    arity: int
    line: int
    clauses: int
    branches: int
    nesting: int
    size: int
    calls: tuple[tuple[str, int], ...]  # "Module.fun/2" and how many call sites
    targets: tuple[tuple[str, str], ...]  # ("call" | "cast", the process as written)
    sleeps: int
    blocking: tuple[str, ...]
    receives: int
    exported: bool = True

    @property
    def mfa(self) -> str:
        return f"{self.module}.{self.name}/{self.arity}"

    @property
    def complexity(self) -> int:
        return 1 + self.branches


@dataclass(frozen=True)
class ModuleInfo:
    name: str
    debug_info: bool
    reason: str | None  # why there is no debug info
    kinds: tuple[str, ...]
    behaviours: tuple[str, ...]
    exports: int
    file: str | None
    functions: tuple[FunctionInfo, ...] = ()
    # The running supervisors whose callback module this is, or that supervise it.
    supervisors: tuple[Supervisor, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["functions"] = [asdict(f) | {"complexity": f.complexity} for f in self.functions]
        data["supervisors"] = [s.as_dict() for s in self.supervisors]
        return data


@dataclass(frozen=True)
class Risk:
    kind: str  # call_in_callback, sleep_in_callback, blocking_in_callback,
    #            receive_in_callback, cast_only
    module: str
    function: str  # "Module.fun/2", or the process for cast_only
    text: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CodeAnalysis:
    node: str
    modules: tuple[ModuleInfo, ...]
    edges: tuple[tuple[str, str, int], ...]  # caller, callee, call sites (analysed only)
    risks: tuple[Risk, ...]
    not_found: tuple[str, ...] = field(default=())

    def module(self, name: str) -> ModuleInfo:
        return next(m for m in self.modules if m.name == name)

    def function(self, mfa: str) -> FunctionInfo | None:
        return next((f for m in self.modules for f in m.functions if f.mfa == mfa), None)

    def as_dict(self) -> dict[str, Any]:
        return {"node": self.node, "modules": [m.as_dict() for m in self.modules],
                "edges": [list(e) for e in self.edges], "risks": [r.as_dict() for r in self.risks],
                "not_found": list(self.not_found)}


async def application_modules(node: AsyncNode) -> list[str]:
    """The modules of the node's own applications (the runtime's left out), sorted."""
    apps = await node.rpc("application", "which_applications", [])
    names = [str(app[0]) for app in apps if str(app[0]) not in RUNTIME_APPS]
    found: list[str] = []
    for app in names:
        reply = await node.rpc("application", "get_key", [Atom(app), Atom("modules")])
        if isinstance(reply, tuple) and reply[0] == Atom("ok"):
            found += [module_display(str(m)) for m in reply[1]]
    return sorted(set(found))[:MAX_MODULES]


async def analyze_node(node: AsyncNode, modules: list[str] | None = None,
                       *, supervisors: bool = True) -> CodeAnalysis:
    """Analyses ``modules`` (module names as Elixir or Erlang writes them), or the
    modules of the node's own applications."""
    wanted = modules if modules else await application_modules(node)
    atoms = [module_atom(name) for name in wanted]
    analyzer = await load_agent(node, ANALYZER)
    try:
        raw = await node.rpc(analyzer, "analyze", [atoms], timeout=120.0)
    finally:
        await unload(node, analyzer)
    infos = [_module(str(module), data) for module, data in raw]
    not_found = tuple(m.name for m in infos if m.reason == "not_found")
    infos = [m for m in infos if m.reason != "not_found"]
    if supervisors:
        running = await live_supervisors(node)
        infos = [ModuleInfo(**{**_fields(m), "supervisors": tuple(
            s for s in running if s.module == m.name or any(
                re.search(rf"(?<![\w.]){re.escape(m.name)}(?![\w.])", child.modules)
                for child in s.children))}) for m in infos]
    return CodeAnalysis(node=node.name, modules=tuple(infos), edges=_edges(infos),
                        risks=tuple(_risks(infos)), not_found=not_found)


class SourceError(ElixirScopeError):
    """A source tree could not be analysed (no such folder, no `elixir`)."""


def analyze_source(directory: Path, modules: list[str] | None = None) -> CodeAnalysis:
    """Analyses the Elixir files under ``directory`` before the app runs: each is parsed
    with a local ``elixir``'s ``Code.string_to_quoted`` (never compiled or run) and
    summarised as a node's debug info is, into the same report (``modules`` keeps only
    those named)."""
    if not directory.is_dir():
        raise SourceError(f"{directory} is not a folder")
    elixir = shutil.which("elixir")
    if elixir is None:
        raise SourceError("analysing a source tree needs `elixir` on PATH")
    script = resources.files("elixirscope.agent").joinpath(SOURCE_ANALYZER)
    with tempfile.TemporaryDirectory(prefix="elixirscope-source-") as tmp, \
            resources.as_file(script) as script_path:
        out = Path(tmp) / "summary.etf"
        result = subprocess.run([elixir, str(script_path), str(directory), str(out)],
                                capture_output=True, text=True, timeout=300, check=False)
        if result.returncode != 0 or not out.exists():
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise SourceError(f"parsing {directory} failed: {' / '.join(tail)}")
        raw = decode(out.read_bytes())
    wanted = {module_display(str(module_atom(m))) for m in modules or []}
    infos = [_module(str(module), data) for module, data in raw
             if not wanted or module_display(str(module)) in wanted]
    return CodeAnalysis(node=f"source {directory}", modules=tuple(infos),
                        edges=_edges(infos), risks=tuple(_risks(infos)))


def _fields(info: ModuleInfo) -> dict[str, Any]:
    return {f: getattr(info, f) for f in info.__dataclass_fields__}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _module(module: str, data: dict[Any, Any]) -> ModuleInfo:
    get = {str(k): v for k, v in data.items()}.get
    name = module_display(module)
    exports = [f"{f}/{a}" for f, a in get("exports") or [] if isinstance(a, int)]
    behaviours = tuple(module_display(str(b)) for b in get("behaviours") or [])
    kinds = [kind for names, kind in _KINDS if set(names) & set(behaviours)]
    kinds += [kind for needed, kind in _BY_EXPORTS if needed <= set(exports)]
    if "Plug" in behaviours and "action/2" in exports and any(
            callee.startswith("Phoenix.Controller.") for f in get("functions") or []
            for callee in _callees(f)):
        kinds = [kind for kind in kinds if kind != "Plug"] + ["Phoenix controller"]
    # __info__/1, __struct__/0, __schema__/1 ...: what `use` and defstruct generate.
    exported = set(exports)
    functions = tuple(f for f in (_function(name, data, exported)
                                  for data in get("functions") or [])
                      if not f.name.startswith("__"))
    if any(callee.startswith("Agent.start") for f in functions for callee, _ in f.calls) \
            and "child_spec/1" in exports and "Agent" not in kinds:
        kinds.append("Agent")
    reason = get("reason")
    file = get("file")
    return ModuleInfo(name=name, debug_info=bool(get("debug_info")),
                      reason=None if reason is None else inspect(reason).lstrip(":"),
                      kinds=tuple(dict.fromkeys(kinds)), behaviours=behaviours,
                      exports=len(exports), file=_text(file) if file not in (None, Atom("nil"))
                      else None, functions=functions)


def _callees(data: dict[Any, Any]) -> list[str]:
    calls = {str(k): v for k, v in data.items()}.get("calls") or []
    return [mfa_display(str(m), str(f), a) for (m, f, a), _ in calls]


def _function(module: str, data: dict[Any, Any], exported: set[str]) -> FunctionInfo:
    fields = {str(k): v for k, v in data.items()}
    get = fields.get

    def number(key: str) -> int:
        value = fields.get(key)
        return value if isinstance(value, int) else 0

    calls = tuple(sorted(((mfa_display(str(m), str(f), a), n)
                          for (m, f, a), n in get("calls") or []), key=lambda c: c[0]))
    targets = tuple((str(op), _target(target)) for op, target in get("targets") or [])
    return FunctionInfo(
        module=module, name=str(get("name")), arity=number("arity"), line=number("line"),
        clauses=number("clauses"), branches=number("branches"), nesting=number("nesting"),
        size=number("size"), calls=calls, targets=targets, sleeps=number("sleeps"),
        blocking=tuple(mfa_display(str(m), str(f), a)
                       for m, f, a in get("blocking") or []),
        receives=number("receives"),
        exported=f"{get('name')}/{number('arity')}" in exported)


def _target(target: Any) -> str:
    if isinstance(target, Atom):
        return module_display(str(target)) if str(target) != "dynamic" else "(dynamic)"
    if isinstance(target, tuple) and target:
        tag = str(target[0])
        if tag == "var":
            return f"(variable {target[1]})"
        if tag == "local_call":
            return f"({target[1]}(...))"
        if tag == "via" and len(target) == 3:
            return f"{{:via, {module_display(str(target[1]))}, {{{inspect(target[2])}, _}}}}"
        if tag == "call":
            return f"({module_display(str(target[1]))}.{target[2]}(...))"
        if tag == "via":
            return f"{{:via, {module_display(str(target[1]))}, _}}"
        if tag == "global":
            return f"{{:global, {inspect(target[1])}}}"
        return f"{{{module_display(tag)}, node}}"
    return inspect(target)


def _edges(modules: list[ModuleInfo]) -> tuple[tuple[str, str, int], ...]:
    known = {f.mfa for m in modules for f in m.functions}
    return tuple((f.mfa, callee, n) for m in modules for f in m.functions
                 for callee, n in f.calls if callee in known and callee != f.mfa)


def _is_callback(info: ModuleInfo, function: FunctionInfo) -> bool:
    server = {"GenServer", "gen_statem", "gen_event", "LiveView", "LiveComponent", "Channel"}
    return bool(server & set(info.kinds)) and function.name in CALLBACKS


def _risks(modules: list[ModuleInfo]) -> list[Risk]:
    by_mfa = {f.mfa: f for m in modules for f in m.functions}
    risks: list[Risk] = []
    for info in modules:
        for function in info.functions:
            if not _is_callback(info, function):
                continue
            for path, (op, target) in _process_calls(function, by_mfa):
                if op != "call":
                    continue
                via = "".join(f" → {step}" for step in path)
                risks.append(Risk(
                    "call_in_callback", info.name, function.mfa,
                    f"{function.mfa}{via} calls {target} and waits for it: if {target} "
                    f"ever calls {info.name}'s process back, both wait (a deadlock)"))
            if function.sleeps:
                risks.append(Risk("sleep_in_callback", info.name, function.mfa,
                                  f"{function.mfa} sleeps inside a callback: its process "
                                  "answers nothing meanwhile and its mailbox grows"))
            if function.blocking:
                risks.append(Risk("blocking_in_callback", info.name, function.mfa,
                                  f"{function.mfa} does blocking I/O in a callback "
                                  f"({', '.join(function.blocking[:3])})"))
            if function.receives and info.kinds and "GenServer" in info.kinds:
                risks.append(Risk("receive_in_callback", info.name, function.mfa,
                                  f"{function.mfa} has a receive inside a GenServer "
                                  "callback: a selective receive scans the whole mailbox"))
    calls: dict[str, int] = defaultdict(int)
    casts: dict[str, list[str]] = defaultdict(list)
    for info in modules:
        for function in info.functions:
            for op, target in function.targets:
                if target.startswith("("):
                    continue  # a name the code computes: not known here
                if op == "call":
                    calls[target] += 1
                else:
                    casts[target].append(function.mfa)
    for target, sites in sorted(casts.items()):
        if not calls.get(target):
            risks.append(Risk("cast_only", target, target,
                              f"{target} is only ever cast to ({len(sites)} call sites, e.g. "
                              f"{sites[0]}): nothing slows its senders down when it falls "
                              "behind, its mailbox grows without bound"))
    return risks


def _process_calls(function: FunctionInfo, by_mfa: dict[str, FunctionInfo], depth: int = 2
                   ) -> list[tuple[list[str], tuple[str, str]]]:
    """The processes a function calls or casts to, itself or through the analysed
    functions it calls (``depth`` levels), with the path of functions in between."""
    found: list[tuple[list[str], tuple[str, str]]] = [([], target)
                                                      for target in function.targets]
    if depth > 0:
        for callee, _ in function.calls:
            inner = by_mfa.get(callee)
            if inner is not None and inner is not function:
                found += [([callee, *path], target)
                          for path, target in _process_calls(inner, by_mfa, depth - 1)]
    return found
