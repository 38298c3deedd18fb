"""Attaching to a node and tracing it at run time: ``AsyncScope`` and its sync face ``Scope``.

Every call is a request to the agent's relay on the node; the relay applies patterns
and flags, enforces the limits and streams batches back to a mailbox of ours.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol, cast

from elixirscope.agent.loader import load_agent
from elixirscope.beam_names import (
    function_atom,
    mfa_display,
    module_atom,
    module_display,
    parse_pid_text,
)
from elixirscope.dist.async_node import AsyncNode, Mailbox
from elixirscope.dist.cookie import Cookie
from elixirscope.dist.node import Node, connect
from elixirscope.elixir_format import inspect
from elixirscope.errors import ElixirScopeError
from elixirscope.etf import Atom, Pid
from elixirscope.recording.recorder import Recorder
from elixirscope.recording.ring import Overflow
from elixirscope.tracing.batch import BATCH, AgentStats, BatchDecoder
from elixirscope.tracing.events import TraceEvent
from elixirscope.tracing.limits import Limits
from elixirscope.tracing.module_glob import expand_module_glob, is_glob

Level = Literal["basic", "detailed", "full"]
CAPTURES = ("args", "returns", "exceptions", "caller")
INCLUDES = ("messages", "calls", "lifecycle", "state")
DEFAULT_INCLUDES = ("messages", "calls", "lifecycle")
STOPPED = Atom("es_stopped")
DOWN = Atom("DOWN")
OK = Atom("ok")
ERROR = Atom("error")
# Batches waiting for a consumer (up to ~500k events, tens of MB); past that the
# newest are dropped and counted in ``python_dropped``.
_QUEUE_BATCHES = 256


class BatchSink(Protocol):
    """Takes the agent's batches in place of ``events()`` (a recorder)."""

    async def on_batch(self, batch: Any) -> None: ...

    def on_stopped(self, stopped: TraceStopped) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class _Drained:
    done: asyncio.Future[None]


class TraceError(ElixirScopeError):
    """A trace could not start: unknown module, function or process, or another tracer."""


class NoStateCallbacks(TraceError):
    """State capture was asked of a module that is not a GenServer or gen_statem
    callback module."""


_TRACE_LESS = ("trace less: a lower --level, fewer modules, or --trace-process on the "
               "processes that matter")


class TraceStopped(ElixirScopeError):
    """The agent's circuit breaker removed all tracing; ``reason`` names the limit, and
    ``counters`` hold what the agent counted (``value`` and ``limit`` when a limit
    acted). The message says in words what happened and what to try."""

    def __init__(self, reason: str, counters: dict[str, Any]) -> None:
        kept = counters.get("kept")
        after = f" after {kept:,} events (they are kept)" if isinstance(kept, int) else ""
        if reason.startswith("max_"):
            value, limit = counters.get("value"), counters.get("limit")
            measured = (f" ({value:,} reached {limit:,})"
                        if isinstance(value, int | float) and isinstance(limit, int | float)
                        else "")
            option = "--" + reason.replace("_", "-")
            text = (f"tracing stopped by the {reason} limit{measured}{after}; {_TRACE_LESS}, "
                    f"or raise {option}")
        elif reason.startswith("relay exit"):
            why = reason.removeprefix("relay exit ").removeprefix("(").removesuffix(")")
            text = (f"tracing stopped: the agent's relay died ({why}), "
                    f"and the events it held were lost; {_TRACE_LESS}, or lower "
                    "--max-relay-memory-mb so the agent stops tracing in time")
        else:
            text = f"tracing stopped: {reason}{after}"
        super().__init__(text)
        self.reason = reason
        self.counters = counters


@dataclass(frozen=True)
class Capabilities:
    otp_release: str
    erts_version: str
    elixir_version: str | None
    os_mon: bool
    trace_sessions: bool
    runtime_tools: bool
    schedulers: int
    degraded: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class TraceInfo:
    ref: int
    kind: str
    target: str
    options: dict[str, Any]
    status: str
    started_at_ms: int
    captured: int
    dropped: int
    sampled_out: int
    pid: Pid | None = None  # the traced process, for a process trace


class AsyncScope:
    """A tracing session on one node."""

    def __init__(self, node: AsyncNode, module: Atom, relay: Pid, inbox: Mailbox,
                 capabilities: Capabilities, offset_ns: int, *, owns_node: bool) -> None:
        self.node = node
        self.module = module
        self.relay = relay
        self.capabilities = capabilities
        self.stopped: TraceStopped | None = None
        self.python_dropped = 0
        self.offset_ns = offset_ns
        self.last_batch_seq = 0
        self._sinks: list[BatchSink] = []
        self._inbox = inbox
        self._owns_node = owns_node
        self._decoder = BatchDecoder(node.name, offset_ns)
        self._batches: asyncio.Queue[Any] = asyncio.Queue(_QUEUE_BATCHES)
        self._refs = iter(range(1, 1 << 62))
        self._pump = asyncio.create_task(self._receive_batches())
        self._closed = False
        # Seconds a trace may take to start before it is undone (see _start).
        self.setup_timeout = 10.0

    @classmethod
    async def attach(cls, node: str | AsyncNode, cookie: str | Cookie | None = None,
                     **limits: float | None) -> AsyncScope:
        """Connects (unless given a connection), loads the agent and starts its relay."""
        owns = not isinstance(node, AsyncNode)
        anode = await AsyncNode.connect(node, cookie) if isinstance(node, str) else node
        try:
            module = await load_agent(anode)
            inbox = anode.mailbox()
            options = {Atom("limits"): Limits(**limits).to_term()}
            reply = await anode.rpc(module, "start", [inbox.pid, options], timeout=30.0)
            if not (isinstance(reply, tuple) and reply[0] == OK):
                raise ElixirScopeError(f"the agent did not start on {anode.name}: "
                                       f"{inspect(reply)}")
            _, relay, info = reply
            await anode.monitor(relay, inbox)
            capabilities = _capabilities(info, limits)
            offset = int(info[Atom("time_offset_ns")])
            return cls(anode, module, relay, inbox, capabilities, offset, owns_node=owns)
        except BaseException:
            if owns:
                await anode.close()
            raise

    # --- tracing --------------------------------------------------------------------

    async def trace(self, module: str | Atom, level: Level = "basic", *,
                    only: Iterable[str | tuple[str, int]] | None = None,
                    exclude: Iterable[str | tuple[str, int]] = (),
                    sample_rate: float = 1.0, force: bool = False, state: bool = False,
                    calls: Literal["local", "global"] = "local") -> int | list[int]:
        """Traces calls of a module's functions: ``basic`` calls with arguments,
        ``detailed`` also returns and exceptions, ``full`` also functions that are not
        exported and the caller. Calls from inside the module count too, unless
        ``calls="global"`` (cheaper: only calls written ``Module.fun(...)``). With
        ``state`` (a GenServer, gen_statem, gen_event or gen_server2/p1_server callback
        module), every state change of the processes that run it is recorded too.
        A glob (``MyApp.*``, ``m_*``) traces each loaded module it matches: one ref each."""
        if is_glob(module):
            return [cast(int, await self.trace(found, level, only=only, exclude=exclude,
                                               sample_rate=sample_rate, force=force,
                                               state=state, calls=calls))
                    for found in await expand_module_glob(self.node, str(module))]
        if level not in ("basic", "detailed", "full"):
            raise ValueError("level is basic, detailed or full")
        if calls not in ("local", "global"):
            raise ValueError("calls is local or global")
        spec = {
            "kind": Atom("module"), "module": module_atom(module), "level": Atom(level),
            "only": Atom("all") if only is None else _function_specs(only),
            "exclude": _function_specs(exclude), "rate": _rate(sample_rate), "force": force,
            "state": state, "calls": Atom(calls),
        }
        return await self._start(spec)

    async def trace_function(self, module: str | Atom, function: str | Atom,
                             arity: int | Literal["_"] = "_", *,
                             capture: Sequence[str] = CAPTURES, match: Any = None,
                             level: Level | None = None,
                             sample_rate: float = 1.0, force: bool = False) -> int:
        """Traces one function (all arities with ``"_"``), local calls included;
        ``level`` (as for ``trace``) takes the place of ``capture``, and ``match`` a raw
        match specification in place of either (each clause still ships the whole
        argument list)."""
        unknown = set(capture) - set(CAPTURES)
        if unknown:
            raise ValueError(f"capture takes {', '.join(CAPTURES)}, not {', '.join(unknown)}")
        if level is not None and level not in ("basic", "detailed", "full"):
            raise ValueError("level is basic, detailed or full")
        spec = {
            "kind": Atom("function"), "module": module_atom(module),
            "function": function_atom(function),
            "arity": Atom("_") if arity == "_" else int(arity),
            "capture": [Atom(item) for item in capture],
            "match": Atom("undefined") if match is None else match,
            "rate": _rate(sample_rate), "force": force,
            **({"level": Atom(level)} if level is not None else {}),
        }
        return await self._start(spec)

    async def trace_framework(self, *, redact: Sequence[str] | None = None,
                              repos: Sequence[Sequence[str]] | None = None,
                              force: bool = False) -> int:
        """Traces the framework layer through ``:telemetry``: HTTP requests and their
        router dispatch (Phoenix), LiveView and LiveComponent callbacks with the
        assigns as state, socket connects, channel joins and ``handle_in``, and Ecto
        queries (of every running repo, or the telemetry prefixes in ``repos``), plus
        the ``handle_info/2`` of LiveViews and channels. Values under keys containing
        one of ``redact`` (by default password, secret, token, csrf, api_key,
        authorization, cookie ...) are replaced in the node, before they leave it."""
        spec: dict[str, Any] = {"kind": Atom("framework"), "force": force}
        if redact is not None:
            spec["redact"] = [item.encode() for item in redact]
        if repos is not None:
            spec["repos"] = [[Atom(part) for part in prefix] for prefix in repos]
        return await self._start(spec)

    async def trace_process(self, target: Pid | str, *,
                            include: Sequence[str] = DEFAULT_INCLUDES,
                            include_children: bool = False, duration: float | None = None,
                            sample_rate: float = 1.0, force: bool = False) -> int:
        """Traces one process (a pid, ``#PID<0.1.0>``, ``<0.1.0>`` or a registered
        name): its messages, its calls, its lifecycle, and with ``"state"`` in
        ``include`` the state changes of a GenServer, gen_statem or Agent; with
        ``include_children`` the processes it spawns too, each kept with probability
        ``sample_rate``."""
        unknown = set(include) - set(INCLUDES)
        if unknown:
            raise ValueError(f"include takes {', '.join(INCLUDES)}, not {', '.join(unknown)}")
        spec: dict[str, Any] = {
            "kind": Atom("process"), "target": _process(target),
            "include": [Atom(item) for item in include], "children": include_children,
            "rate": _rate(sample_rate), "force": force,
        }
        if duration is not None:
            spec["duration_ms"] = max(1, round(duration * 1000))
        return await self._start(spec)

    async def stop_trace(self, ref: int) -> TraceInfo:
        """Removes what this trace added; what other traces still need stays."""
        reply = await self._request((Atom("stop_trace"), ref))
        if reply == (ERROR, Atom("unknown_trace")):
            raise TraceError(f"there is no trace {ref} on {self.node.name}")
        return _trace_info(reply[1])

    async def list_traces(self) -> list[TraceInfo]:
        return sorted((_trace_info(item) for item in await self._request(Atom("list_traces"))),
                      key=lambda info: info.ref)

    async def set_limits(self, **limits: float | None) -> Limits:
        reply = await self._request((Atom("set_limits"), Limits(**limits).to_term()))
        return Limits.from_term(reply[1])

    async def limits(self) -> Limits:
        return Limits.from_term((await self.status())[Atom("limits")])

    async def status(self) -> dict[Any, Any]:
        result = await self._request(Atom("status"))
        assert isinstance(result, dict)
        return result

    async def sample_metrics(self, top: int = 10, hz: float = 10.0) -> None:
        """Samples process metrics into the recording ``hz`` times a second (at most
        10): mailbox length, memory, reductions, status and current function of the
        traced processes and of the ``top`` processes of the node by mailbox, memory
        and reductions. ``hz=0`` stops."""
        if hz <= 0:
            await self._request((Atom("metrics"), Atom("off")))
            return
        every = max(100, round(1000 / hz))
        await self._request((Atom("metrics"), {Atom("top"): max(0, int(top)),
                                               Atom("every_ms"): every}))

    async def emergency_stop(self) -> list[TraceInfo]:
        """Removes every pattern and flag at once; returns the traces it stopped."""
        reply = await self._request(Atom("emergency_stop"))
        return [_trace_info(item) for item in reply[1]]

    async def flush(self) -> None:
        """Asks the agent to send what it has buffered now."""
        await self._request(Atom("flush"))

    async def state_keyframes(self) -> None:
        """Asks the agent to send every process's next state whole (a recording that
        starts now then holds its base)."""
        await self._request(Atom("state_keyframes"))

    async def reset_breaker(self) -> None:
        """After a trip: forgets the stopped traces so new ones can start."""
        await self._request(Atom("reset_breaker"))
        self.stopped = None

    async def _start(self, spec: dict[str, Any]) -> int:
        """Starts a trace within ``setup_timeout`` seconds, or not at all: the agent
        undoes a start that took longer, and when the agent does not answer in time the
        session is ended on the node (relay killed, patterns and flags removed, agent
        unloaded) before this raises."""
        ref = next(self._refs)
        deadline_ms = round(self.setup_timeout * 1000)
        request = (Atom("trace"), ref, {Atom(key): value for key, value in
                                        {**spec, "deadline_ms": deadline_ms}.items()})
        try:
            reply = await self._request(request, timeout=self.setup_timeout + 10)
            unanswered = reply == (ERROR, Atom("timeout"))  # the relay never answered
        except ElixirScopeError:
            unanswered = True
        if unanswered:
            await self.abort()
            raise TraceError(f"the agent on {self.node.name} did not answer the start of "
                             f"the trace in {self.setup_timeout + 10:g} s; the session was "
                             "ended and everything it had set on the node removed")
        if reply != OK:
            raise _trace_error(reply, self.node.name)
        return ref

    async def _request(self, request: Any, timeout: float = 30.0) -> Any:
        agent_ms = round(max(1.0, timeout - 1) * 1000)
        return await self.node.rpc(self.module, "request", [self.relay, request, agent_ms],
                                   timeout=timeout)

    async def abort(self) -> None:
        """Ends the session on the node at once, without the relay's help: kills it, and
        waits (at most 15 s) until its watcher has removed every pattern and flag and
        unloaded the agent."""
        if self.node.closed.done():
            return
        with contextlib.suppress(ElixirScopeError):
            await self.node.rpc("erlang", "exit", [self.relay, Atom("kill")], timeout=5.0)
            deadline = asyncio.get_running_loop().time() + 15
            while asyncio.get_running_loop().time() < deadline:
                if await self.node.rpc("code", "is_loaded", [self.module],
                                       timeout=5.0) is False:
                    return
                await asyncio.sleep(0.05)

    # --- events ---------------------------------------------------------------------

    async def _receive_batches(self) -> None:
        with contextlib.suppress(ElixirScopeError):
            while True:
                message = await self._inbox.receive()
                tag = message[0] if isinstance(message, tuple) and message else None
                if tag == STOPPED:
                    # The relay and its watcher may both report one trip.
                    counters = {str(k): v for k, v in message[2].items()}
                    await self._stop(TraceStopped(str(message[1]), counters))
                elif tag == DOWN:
                    # The relay is gone (killed by its heap limit, or by someone); the
                    # watcher on the node has removed its patterns and flags.
                    if not self._closed:
                        await self._stop(TraceStopped(f"relay exit ({inspect(message[4])})",
                                                      {}))
                elif tag == BATCH:
                    self._learn(message)
                    if self._sinks:
                        for sink in list(self._sinks):
                            await sink.on_batch(message)
                        continue
                    try:
                        self._batches.put_nowait(message)
                    except asyncio.QueueFull:
                        self.python_dropped += BatchDecoder.count(message)
                elif isinstance(message, _Drained):
                    message.done.set_result(None)
        await self._batches.put(None)

    async def _stop(self, stopped: TraceStopped) -> None:
        if self.stopped is None:
            self.stopped = stopped
            for sink in list(self._sinks):
                sink.on_stopped(stopped)
            await self._batches.put(stopped)

    def _learn(self, batch: tuple[Any, ...]) -> None:
        """Index entries are session state: taken from every batch as it arrives,
        whoever consumes it (a malformed batch is reported by its consumer)."""
        with contextlib.suppress(TypeError, ValueError, IndexError):
            self.last_batch_seq = int(batch[1])
            self._decoder.learn(batch[2], batch[3])

    def lookup(self, index: int) -> Any:
        """What the agent numbered ``index`` in this session (a pid or a function)."""
        return self._decoder.lookup(index)

    async def next_batch(self, timeout: float | None = None) -> list[TraceEvent] | None:
        """The events of the next batch; ``None`` after ``timeout`` seconds without one
        or when the session has ended. Raises ``TraceStopped`` where the breaker
        tripped."""
        try:
            async with asyncio.timeout(timeout):
                item = await self._batches.get()
        except TimeoutError:
            return None
        if item is None:
            await self._batches.put(None)
            return None
        if isinstance(item, TraceStopped):
            raise item
        return self._decoder.decode(item)

    async def events(self, timeout: float | None = None) -> AsyncIterator[TraceEvent]:
        """The events as they arrive, until ``timeout`` seconds pass without any or the
        session ends; raises ``TraceStopped`` where the breaker tripped."""
        while (batch := await self.next_batch(timeout)) is not None:
            for event in batch:
                yield event

    @property
    def stats(self) -> AgentStats:
        return self._decoder.stats

    # --- recording ------------------------------------------------------------------

    async def record(self, path: str | Path, *, capacity: int = 1 << 20,
                     overflow: Overflow = "block", flush_interval: float = 1.0) -> Recorder:
        """Records everything this scope traces into a new file at ``path``, in the
        background, until the recorder is stopped or the scope closes. While a
        recording runs, batches go to it rather than to ``events()``."""
        return await Recorder.start(self, path, capacity=capacity, overflow=overflow,
                                    flush_interval=flush_interval)

    def add_sink(self, sink: BatchSink) -> None:
        self._sinks.append(sink)

    def remove_sink(self, sink: BatchSink) -> None:
        with contextlib.suppress(ValueError):
            self._sinks.remove(sink)

    async def drain(self) -> None:
        """Returns once every message that arrived before the call has been handled."""
        marker = _Drained(asyncio.get_running_loop().create_future())
        self._inbox.deliver(marker)
        await marker.done

    @property
    def lost_batches(self) -> int:
        """Batches the sequence numbers say never arrived."""
        return self._decoder.lost_batches

    # --- ending ---------------------------------------------------------------------

    async def close(self) -> None:
        """Stops all tracing, lets the agent unload itself, and disconnects if the
        scope made the connection."""
        if self._closed:
            return
        for sink in list(self._sinks):
            await sink.aclose()
        self._closed = True
        if not self.node.closed.done():
            try:
                await self._request(Atom("shutdown"), timeout=10.0)
            except ElixirScopeError:
                await self.abort()
        self._inbox.close()
        self._pump.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._pump
        if self._owns_node:
            await self.node.close()

    async def __aenter__(self) -> AsyncScope:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, value: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.close()


class Scope:
    """``AsyncScope`` for synchronous code (the methods block until the agent answers)."""

    def __init__(self, node: Node, scope: AsyncScope, *, owns_node: bool) -> None:
        self.node = node
        self.ascope = scope
        self._owns_node = owns_node

    @property
    def capabilities(self) -> Capabilities:
        return self.ascope.capabilities

    @property
    def stopped(self) -> TraceStopped | None:
        return self.ascope.stopped

    def trace(self, module: str | Atom, level: Level = "basic",
              **options: Any) -> int | list[int]:
        return self.node.run(self.ascope.trace(module, level, **options))

    def trace_function(self, module: str | Atom, function: str | Atom,
                       arity: int | Literal["_"] = "_", **options: Any) -> int:
        return self.node.run(self.ascope.trace_function(module, function, arity, **options))

    def trace_process(self, target: Pid | str, **options: Any) -> int:
        return self.node.run(self.ascope.trace_process(target, **options))

    def trace_framework(self, **options: Any) -> int:
        return self.node.run(self.ascope.trace_framework(**options))

    def stop_trace(self, ref: int) -> TraceInfo:
        return self.node.run(self.ascope.stop_trace(ref))

    def list_traces(self) -> list[TraceInfo]:
        return self.node.run(self.ascope.list_traces())

    def set_limits(self, **limits: float | None) -> Limits:
        return self.node.run(self.ascope.set_limits(**limits))

    def limits(self) -> Limits:
        return self.node.run(self.ascope.limits())

    def sample_metrics(self, top: int = 10, hz: float = 10.0) -> None:
        self.node.run(self.ascope.sample_metrics(top, hz))

    def emergency_stop(self) -> list[TraceInfo]:
        return self.node.run(self.ascope.emergency_stop())

    def flush(self) -> None:
        self.node.run(self.ascope.flush())

    def reset_breaker(self) -> None:
        self.node.run(self.ascope.reset_breaker())

    def status(self) -> dict[Any, Any]:
        return self.node.run(self.ascope.status())

    def record(self, path: str | Path, **options: Any) -> Recorder:
        """``AsyncScope.record`` for synchronous code; ``Recorder.stop()`` or leaving
        the scope flushes and closes the file."""
        return self.node.run(self.ascope.record(path, **options))

    def events(self, timeout: float | None = 1.0) -> Iterator[TraceEvent]:
        """Events as they arrive, until ``timeout`` seconds pass without any (one trip
        to the I/O thread per batch, not per event)."""
        while (batch := self.node.run(self.ascope.next_batch(timeout))) is not None:
            yield from batch

    def close(self) -> None:
        self.node.run(self.ascope.close())
        if self._owns_node:
            self.node.close()

    def __enter__(self) -> Scope:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def attach(node: str | Node, cookie: str | Cookie | None = None,
           **limits: float | None) -> Scope:
    """Attaches to a node: loads the agent and returns a ``Scope`` (a context manager)."""
    owns = isinstance(node, str)
    conn = connect(node, cookie) if isinstance(node, str) else node
    try:
        scope = conn.run(AsyncScope.attach(conn.anode, None, **limits))
    except BaseException:
        if owns:
            conn.close()
        raise
    return Scope(conn, scope, owns_node=owns)


async def attach_async(node: str | AsyncNode, cookie: str | Cookie | None = None,
                       **limits: float | None) -> AsyncScope:
    return await AsyncScope.attach(node, cookie, **limits)


# --- conversions ----------------------------------------------------------------------

def _rate(sample_rate: float) -> float:
    if not 0.0 < sample_rate <= 1.0:
        raise ValueError("sample_rate is above 0 and at most 1")
    return float(sample_rate)


def _function_specs(specs: Iterable[str | tuple[str, int]]) -> list[Any]:
    return [(function_atom(spec[0]), int(spec[1])) if isinstance(spec, tuple)
            else function_atom(spec) for spec in specs]


def _process(target: Pid | str) -> Any:
    if isinstance(target, Pid):
        return target
    numbers = parse_pid_text(target)
    if numbers is not None:
        return numbers
    return module_atom(target)


def _capabilities(info: dict[Any, Any], limits: dict[str, Any]) -> Capabilities:
    def get(key: str) -> Any:
        return info.get(Atom(key))

    elixir = get("elixir_version")
    degraded = []
    if not get("os_mon"):
        degraded.append("max_cpu_percent is unavailable: os_mon is not running on the node")
    if not get("trace_sessions"):
        degraded.append("no trace sessions (OTP 27+): tracing uses the node-wide session, "
                        "so ElixirScope refuses to start where another tracer is active "
                        "unless force=True")
    if not get("runtime_tools"):
        degraded.append("runtime_tools is missing: dbg-based conflict checks are skipped")
    if limits.get("max_cpu_percent") is not None and not get("os_mon"):
        degraded.append("the max_cpu_percent limit you set will not be enforced")
    return Capabilities(
        otp_release=get("otp_release").decode(), erts_version=get("erts_version").decode(),
        elixir_version=elixir.decode() if isinstance(elixir, bytes) else None,
        os_mon=bool(get("os_mon")), trace_sessions=bool(get("trace_sessions")),
        runtime_tools=bool(get("runtime_tools")), schedulers=int(get("schedulers")),
        degraded=degraded)


def _trace_info(item: dict[Any, Any]) -> TraceInfo:
    fields = {str(key): value for key, value in item.items()}
    kind = str(fields["kind"])
    if kind == "module":
        target = module_display(fields["module"])
    elif kind == "function":
        target = mfa_display(fields["module"], fields["function"], fields["arity"])
    elif kind == "framework":
        target = "the framework layer (telemetry)"
    else:
        target = inspect(fields.get("pid"))
        if isinstance(fields.get("name"), Atom) and fields["name"] != Atom("undefined"):
            target = f"{module_display(fields['name'])} ({target})"
    status = fields.get("status")
    options = {key: value for key, value in fields.items()
               if key not in ("ref", "kind", "module", "function", "arity", "pid", "name",
                              "status", "started_at", "captured", "dropped", "sampled_out")}
    return TraceInfo(
        ref=int(fields["ref"]), kind=kind, target=target, options=options,
        status=inspect(status).lstrip(":") if status is not None else "unknown",
        started_at_ms=int(fields.get("started_at", 0)),
        captured=int(fields.get("captured", 0)), dropped=int(fields.get("dropped", 0)),
        sampled_out=int(fields.get("sampled_out", 0)),
        pid=fields["pid"] if isinstance(fields.get("pid"), Pid) else None)


def _trace_error(reply: Any, node: str) -> ElixirScopeError:
    if isinstance(reply, tuple) and len(reply) == 2 and reply[0] == ERROR:
        reason = reply[1]
        if reason == Atom("no_telemetry"):
            return TraceError(f":telemetry is not loaded on {node}: there is no framework "
                              "layer (Phoenix, Ecto) to trace there")
        if isinstance(reason, tuple) and reason:
            tag = str(reason[0])
            if tag == "unknown_module":
                return TraceError(f"module {module_display(reason[1])} is not loaded on "
                                  f"{node} and could not be loaded")
            if tag == "unknown_function":
                _, module, function, arity = reason
                return TraceError(f"{mfa_display(module, function, arity)} does not exist "
                                  f"on {node}")
            if tag == "no_state_callbacks":
                return NoStateCallbacks(f"{module_display(reason[1])} is not a GenServer or "
                                  "gen_statem callback module; trace its processes with "
                                  "include=(\"state\",)")
            if tag == "telemetry_attach":
                return TraceError(f"the telemetry handlers could not be attached on {node}: "
                                  f"{inspect(reason[1])}")
            if tag == "no_process":
                return TraceError(f"no process {inspect(reason[1])} on {node}")
            if tag == "traced_by_others":
                who = "; ".join(item.decode() for item in reason[1])
                return TraceError(f"{node} is already traced by {who}; to trace anyway, "
                                  "pass --force (force=True from Python)")
            if tag == "tripped":
                return TraceStopped(str(reason[1]), {})
            if tag == "setup_timeout":
                return TraceError(f"starting the trace on {node} took {reason[1]:,} ms, more "
                                  "than it was given (the node is busy); it was undone and "
                                  "nothing of it stays: trace less, or allow more time "
                                  "(--setup-timeout)")
        return TraceError(f"the agent on {node} refused the trace: {inspect(reason)}")
    return TraceError(f"the agent on {node} answered {inspect(reply)}")
