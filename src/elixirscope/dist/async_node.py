"""A hidden node connected to one BEAM node, on asyncio.

``AsyncNode.connect`` looks the node up in EPMD, runs the handshake and then reads
frames in a background task. The node gets pids of ours to talk to: mailboxes, the
reply address of remote calls, and per-call group leaders that capture what the
remote code prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import secrets
import time
from collections.abc import Callable, Iterable
from typing import Any, cast

from elixirscope.beam_names import function_atom, mfa_display, module_atom
from elixirscope.dist import epmd, protocol, rex
from elixirscope.dist.cookie import Cookie, resolve_cookie
from elixirscope.dist.handshake import ClientHandshake, Peer
from elixirscope.dist.io_server import IoCapture, chardata_to_text, io_reply
from elixirscope.dist.names import own_node_name, split_node_name
from elixirscope.errors import (
    ConnectError,
    ConnectionLost,
    HostUnreachable,
    ProtocolError,
    RpcTimeout,
)
from elixirscope.etf import Atom, Pid, Reference

log = logging.getLogger(__name__)

DEFAULT_TICK_TIME = 60.0
DEFAULT_RPC_TIMEOUT = 15.0
NORMAL = Atom("normal")
NOCONNECTION = Atom("noconnection")
NOPROC = Atom("noproc")
DOWN = Atom("DOWN")
PROCESS = Atom("process")
EXIT = Atom("EXIT")
IO_REQUEST = Atom("io_request")


class Mailbox:
    """A process of ours: a pid the node can send to, and a queue of what arrived.

    Exit signals from linked processes arrive as ``(:EXIT, pid, reason)`` and monitor
    notifications as ``(:DOWN, ref, :process, pid, reason)``, as in a process that
    traps exits."""

    def __init__(self, node: AsyncNode, pid: Pid, name: Atom | None) -> None:
        self.node = node
        self.pid = pid
        self.name = name
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._closed: BaseException | None = None

    def deliver(self, message: Any) -> None:
        if self._closed is None:
            self._queue.put_nowait(message)

    async def receive(self, timeout: float | None = None) -> Any:
        """The next message; ``TimeoutError`` after ``timeout`` seconds."""
        if self._queue.empty() and self._closed is not None:
            raise self._closed
        try:
            async with asyncio.timeout(timeout):
                message = await self._queue.get()
        except TimeoutError:
            raise TimeoutError(f"no message for {self} within {timeout:g} s") from None
        if message is _CLOSED:
            self._queue.put_nowait(_CLOSED)
            assert self._closed is not None
            raise self._closed
        return message

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, error: BaseException | None = None) -> None:
        if self._closed is None:
            self._closed = error or ConnectionLost(f"{self} is closed")
            self._queue.put_nowait(_CLOSED)
            self.node._forget(self)

    def __repr__(self) -> str:
        label = f" {self.name}" if self.name else ""
        return f"<Mailbox{label} #PID<0.{self.pid.id}.{self.pid.serial}>>"


_CLOSED = object()


class Monitor:
    """A monitor on a remote process; ``reason`` resolves when it goes down."""

    def __init__(self, ref: Reference, target: Pid | Atom, owner: Pid) -> None:
        self.ref = ref
        self.target = target
        self.owner = owner
        self.reason: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def wait(self, timeout: float | None = None) -> Any:
        """The exit reason once the process is down."""
        async with asyncio.timeout(timeout):
            return await asyncio.shield(self.reason)


class _Call:
    __slots__ = ("capture", "future", "mfa")

    def __init__(self, mfa: tuple[Atom, Atom, int], capture: IoCapture) -> None:
        self.mfa = mfa
        self.capture = capture
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class AsyncNode:
    """One connection to one node; the methods are coroutines on the connection's loop."""

    def __init__(self, peer: Peer, own_name: str, creation: int,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 *, tick_time: float = DEFAULT_TICK_TIME) -> None:
        self.peer = peer
        self.name = peer.name
        self.own_name = own_name
        self.creation = creation
        self.tick_time = tick_time
        self.closed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        self._reader = reader
        self._writer = writer
        self._decoder = protocol.Decoder()
        self._own_atom = Atom(own_name)
        self._pid_ids = itertools.count(1)
        self._ref_ids = itertools.count(1)
        self._mailboxes: dict[int, Mailbox] = {}
        self._registered: dict[Atom, Mailbox] = {}
        self._calls: dict[Reference, _Call] = {}
        self._group_leaders: dict[int, _Call] = {}
        self._monitors: dict[Reference, Monitor] = {}
        self._links: set[tuple[int, Pid]] = set()
        # Monitors the node holds on our processes (io:request monitors its group leader).
        self._watchers: dict[Reference, tuple[int, Pid]] = {}
        self._unlink_ids = itertools.count(1)
        self._rpc_pid = self.make_pid()
        self._system_pid = self.make_pid()
        self._rex_wrapped = True
        self._last_sent = self._last_received = time.monotonic()
        self._reading_paused = False
        self._tasks: list[asyncio.Task[None]] = []
        self.dropped_messages = 0
        self.malformed_frames = 0

    # --- connecting -----------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        node: str,
        cookie: str | Cookie | None = None,
        *,
        timeout: float = 10.0,
        tick_time: float = DEFAULT_TICK_TIME,
        own_name: str | None = None,
    ) -> AsyncNode:
        """Connects as a hidden node; cookie from the argument, ``$ERLANG_COOKIE`` or
        ``~/.erlang.cookie``; our name ``own_name`` or a random one."""
        name, host = split_node_name(node)
        secret = resolve_cookie(cookie)
        target = f"{name}@{host}"
        info = await epmd.lookup(name, host, timeout)
        if info.highest_version < 6:
            raise ConnectError(f"{target} speaks distribution version {info.highest_version}; "
                               "OTP 23 or later is required")
        try:
            async with asyncio.timeout(timeout):
                reader, writer = await asyncio.open_connection(host, info.port)
        except TimeoutError:
            raise HostUnreachable(f"{target} did not accept a connection within {timeout:g} s"
                                  ) from None
        except OSError as exc:
            raise HostUnreachable(
                f"cannot connect to {target} on port {info.port} ({exc.strerror or exc})"
            ) from None
        try:
            local_address = writer.get_extra_info("sockname")[0]
            own = own_node_name(host, local_address, own_name)
            creation = secrets.randbelow(0xFFFFFFFF - 4) + 4
            handshake = ClientHandshake(own, secret, creation=creation, target=target)
            writer.write(handshake.start())
            async with asyncio.timeout(timeout):
                while not handshake.done:
                    data = await reader.read(65536)
                    if not data:
                        raise handshake.connection_closed()
                    reply = handshake.receive_data(data)
                    if reply:
                        writer.write(reply)
        except TimeoutError:
            writer.close()
            raise ConnectError(f"{target} did not finish the handshake within {timeout:g} s"
                               ) from None
        except BaseException:
            writer.close()
            raise
        assert handshake.peer is not None
        self = cls(handshake.peer, own, creation, reader, writer, tick_time=tick_time)
        self._start(handshake.leftover)
        await self._adopt_tick_time()
        log.debug("connected to %s as hidden node %s", self.name, own)
        return self

    async def _adopt_tick_time(self) -> None:
        """Ticks at the node's own pace: a node with a short net_ticktime drops a
        connection that stays silent for longer than that."""
        try:
            ticktime = await self.rpc("net_kernel", "get_net_ticktime", [], timeout=5.0)
        except Exception:  # a node that will not say keeps our default
            return
        if isinstance(ticktime, tuple):  # {ongoing_change_to, Seconds}
            ticktime = ticktime[-1]
        if isinstance(ticktime, int) and ticktime > 0:
            self.tick_time = min(self.tick_time, float(ticktime))

    def _start(self, leftover: bytes) -> None:
        self._tasks = [
            asyncio.create_task(self._read_loop(leftover), name=f"dist-read {self.name}"),
            asyncio.create_task(self._tick_loop(), name=f"dist-tick {self.name}"),
        ]

    # --- identifiers ----------------------------------------------------------------

    def make_pid(self) -> Pid:
        return Pid(self._own_atom, next(self._pid_ids), 0, self.creation)

    def make_ref(self) -> Reference:
        n = next(self._ref_ids)
        return Reference(self._own_atom, self.creation, (n & 0x3FFFF, n >> 18 & 0xFFFFFFFF, 0))

    # --- processes of ours ----------------------------------------------------------

    def mailbox(self, name: str | None = None) -> Mailbox:
        """A new process of ours; with ``name``, reachable as ``{name, our_node}`` too."""
        self._check_open()
        atom = Atom(name) if name else None
        if atom is not None and atom in self._registered:
            raise ValueError(f"the name {name} is already registered")
        box = Mailbox(self, self.make_pid(), atom)
        self._mailboxes[box.pid.id] = box
        if atom is not None:
            self._registered[atom] = box
        return box

    def _forget(self, box: Mailbox) -> None:
        self._mailboxes.pop(box.pid.id, None)
        if box.name is not None:
            self._registered.pop(box.name, None)
        self._process_ended(box.pid)

    def _process_ended(self, pid: Pid) -> None:
        """Tells the node's links and monitors on one of our processes that it ended."""
        if self.closed.done():
            return
        for owner, linked in [link for link in self._links if link[0] == pid.id]:
            self._links.discard((owner, linked))
            self._write(protocol.exit_signal(pid, linked, NORMAL))
        for ref, (target, watcher) in list(self._watchers.items()):
            if target == pid.id:
                del self._watchers[ref]
                self._write(protocol.monitor_p_exit(pid, watcher, ref, NORMAL))

    def _local_id(self, process: Pid | Atom) -> int | None:
        """The id of a live process of ours, by pid or registered name."""
        if isinstance(process, Pid):
            if process.id in self._mailboxes or process.id in self._group_leaders:
                return process.id
            return None
        box = self._registered.get(process)
        return box.pid.id if box else None

    # --- sending --------------------------------------------------------------------

    async def send(self, to: Pid | str | Atom, message: Any) -> None:
        """Sends ``message`` to a pid, or to a name registered on the node."""
        self._check_open()
        if isinstance(to, Pid):
            self._write(protocol.send(to, message))
        else:
            self._write(protocol.reg_send(self._system_pid, Atom(to), message))
        await self._writer.drain()

    async def link(self, box: Mailbox, pid: Pid) -> None:
        """Links ``box`` with a remote process; its exit arrives as ``(:EXIT, pid, reason)``."""
        self._check_open()
        self._links.add((box.pid.id, pid))
        self._write(protocol.link(box.pid, pid))
        await self._writer.drain()

    async def unlink(self, box: Mailbox, pid: Pid) -> None:
        self._check_open()
        self._links.discard((box.pid.id, pid))
        self._write(protocol.unlink_id(next(self._unlink_ids), box.pid, pid))
        await self._writer.drain()

    async def monitor(self, target: Pid | str | Atom, box: Mailbox | None = None) -> Monitor:
        """Monitors a remote process (by pid or registered name). When it goes down,
        ``Monitor.reason`` resolves, and ``box`` (if given) receives the DOWN tuple."""
        self._check_open()
        owner = box.pid if box else self._system_pid
        ref = self.make_ref()
        process = target if isinstance(target, Pid) else Atom(target)
        monitor = Monitor(ref, process, owner)
        self._monitors[ref] = monitor
        self._write(protocol.monitor_p(owner, process, ref))
        await self._writer.drain()
        return monitor

    async def demonitor(self, monitor: Monitor) -> None:
        if self._monitors.pop(monitor.ref, None) is not None and not self.closed.done():
            self._write(protocol.demonitor_p(monitor.owner, monitor.target, monitor.ref))
            await self._writer.drain()

    # --- remote calls ---------------------------------------------------------------

    async def rpc(
        self,
        module: str | Atom,
        function: str | Atom,
        args: Iterable[Any] = (),
        *,
        timeout: float = DEFAULT_RPC_TIMEOUT,
        output: Callable[[str], None] | None = None,
    ) -> Any:
        """Calls ``module.function(*args)`` on the node through ``rex``.

        Returns the decoded value or raises ``RemoteError``; after ``timeout`` seconds
        raises ``RpcTimeout`` (the call may still finish on the node; its late answer is
        dropped). What the call prints goes to ``output``, line by line as it arrives."""
        self._check_open()
        mod, fun, arglist = module_atom(module), function_atom(function), list(args)
        mfa = (mod, fun, len(arglist))
        while True:
            tag, call_ref, group_leader = self.make_ref(), self.make_ref(), self.make_pid()
            call = _Call(mfa, IoCapture(output))
            self._calls[tag] = call
            self._group_leaders[group_leader.id] = call
            if self._rex_wrapped:
                request = rex.wrapped_request(self._rpc_pid, tag, call_ref, mod, fun, arglist,
                                              group_leader)
            else:
                request = rex.plain_request(self._rpc_pid, tag, mod, fun, arglist, group_leader)
            try:
                self._write(protocol.reg_send(self._rpc_pid, Atom("rex"), request))
                async with asyncio.timeout(timeout):
                    await self._writer.drain()
                    reply = await call.future
                    await call.capture.flush()
            except TimeoutError:
                raise RpcTimeout(
                    f"{mfa_display(*mfa)} on {self.name} did not answer within {timeout:g} s"
                ) from None
            finally:
                self._calls.pop(tag, None)
                self._group_leaders.pop(group_leader.id, None)
                self._process_ended(group_leader)
            if self._rex_wrapped and rex.lacks_wrapper(reply):
                self._rex_wrapped = False
                continue
            if self._rex_wrapped:
                return rex.wrapped_result(reply, call_ref, mfa)
            return rex.plain_result(reply, mfa)

    # --- the connection -------------------------------------------------------------

    def pause_reading(self) -> None:
        """Stops reading from the node: TCP pushes back until the node's distribution
        buffer is busy, which is how a slow consumer makes the agent drop batches
        (counted) instead of piling them up in this process."""
        self._reading_paused = True
        cast(asyncio.Transport, self._writer.transport).pause_reading()

    def resume_reading(self) -> None:
        self._reading_paused = False
        # Silence while we were not reading says nothing about the node.
        self._last_received = time.monotonic()
        cast(asyncio.Transport, self._writer.transport).resume_reading()

    def _check_open(self) -> None:
        if self.closed.done():
            raise self.closed.result()

    def _write(self, data: bytes) -> None:
        self._writer.write(data)
        self._last_sent = time.monotonic()

    async def _read_loop(self, leftover: bytes) -> None:
        error: BaseException
        try:
            if leftover:
                self._handle(self._decoder.receive_data(leftover))
            while True:
                data = await self._reader.read(1 << 18)
                if not data:
                    error = ConnectionLost(f"{self.name} closed the connection")
                    break
                self._last_received = time.monotonic()
                self._handle(self._decoder.receive_data(data))
        except ProtocolError as exc:
            error = ConnectionLost(f"dropped the connection to {self.name}: {exc}")
        except OSError as exc:
            error = ConnectionLost(f"lost the connection to {self.name} ({exc.strerror or exc})")
        except asyncio.CancelledError:
            error = ConnectionLost(f"the connection to {self.name} is closed")
        self._shutdown(error)

    async def _tick_loop(self) -> None:
        while True:
            interval = self.tick_time / 4
            await asyncio.sleep(interval)
            now = time.monotonic()
            if not self._reading_paused and now - self._last_received > self.tick_time:
                self._shutdown(ConnectionLost(
                    f"{self.name} stopped answering (nothing for {self.tick_time:g} s)"))
                return
            if now - self._last_sent >= interval:
                self._write(protocol.TICK)

    def _handle(self, events: list[protocol.Event]) -> None:
        for event in events:
            kind = type(event)
            if kind is protocol.Send:
                assert isinstance(event, protocol.Send)
                self._on_send(event.to, event.message)
            elif kind is protocol.Tick:
                continue
            else:
                self._on_control(event)

    def _on_send(self, to: Pid | Reference, message: Any) -> None:
        if not isinstance(to, Pid):
            self.dropped_messages += 1
            return
        if to.id == self._rpc_pid.id:
            self._on_rpc_reply(message)
        elif to.id in self._group_leaders:
            self._on_io_request(self._group_leaders[to.id], message)
        elif to.id in self._mailboxes:
            self._mailboxes[to.id].deliver(message)
        else:
            self.dropped_messages += 1

    def _on_rpc_reply(self, message: Any) -> None:
        if isinstance(message, tuple) and len(message) == 2:
            call = self._calls.get(message[0])
            if call is not None and not call.future.done():
                call.future.set_result(message[1])
                return
        self.dropped_messages += 1

    def _on_io_request(self, call: _Call, message: Any) -> None:
        if not (isinstance(message, tuple) and len(message) == 4 and message[0] == IO_REQUEST):
            return
        _, sender, reply_as, request = message
        answer, pending_format = call.capture.handle(request)
        if isinstance(sender, Pid):
            self._write(protocol.send(sender, io_reply(reply_as, answer)))
        if pending_format is not None:
            call.capture.add(self._format_remotely(*pending_format))

    async def _format_remotely(self, module: Atom, function: Atom, args: list[Any]) -> str:
        """Text of ``io:format``-style output, which only the node can format."""
        try:
            return chardata_to_text(await self.rpc(module, function, args, timeout=5.0))
        except Exception as exc:  # the output is lost, the call it came from is not
            return f"<output not formatted: {exc}>\n"

    def _on_control(self, event: protocol.Event) -> None:
        if isinstance(event, protocol.RegSend):
            box = self._registered.get(event.to)
            if box is None:
                self.dropped_messages += 1
            else:
                box.deliver(event.message)
        elif isinstance(event, protocol.MonitorPExit):
            monitor = self._monitors.pop(event.ref, None)
            if monitor is not None:
                if not monitor.reason.done():
                    monitor.reason.set_result(event.reason)
                box = self._mailboxes.get(monitor.owner.id)
                if box is not None:
                    box.deliver((DOWN, event.ref, PROCESS, event.sender, event.reason))
        elif isinstance(event, protocol.Exit):
            box = self._mailboxes.get(event.to.id)
            linked = (box.pid.id, event.sender) in self._links if box else False
            if box is not None and (linked or not event.via_link):
                self._links.discard((box.pid.id, event.sender))
                box.deliver((EXIT, event.sender, event.reason))
        elif isinstance(event, protocol.Link):
            if event.to.id in self._mailboxes:
                self._links.add((event.to.id, event.sender))
            else:
                self._write(protocol.exit_signal(event.to, event.sender, NOPROC))
        elif isinstance(event, protocol.UnlinkId):
            self._links.discard((event.to.id, event.sender))
            self._write(protocol.unlink_id_ack(event.id, event.to, event.sender))
        elif isinstance(event, protocol.MonitorP):
            target = self._local_id(event.to)
            if target is None:
                self._write(protocol.monitor_p_exit(event.to, event.sender, event.ref, NOPROC))
            else:
                self._watchers[event.ref] = (target, event.sender)
        elif isinstance(event, protocol.DemonitorP):
            self._watchers.pop(event.ref, None)
        elif isinstance(event, protocol.Malformed):
            self.malformed_frames += 1
            log.warning("ignored a malformed frame from %s: %s", self.name, event.error)

    def _shutdown(self, error: BaseException) -> None:
        if self.closed.done():
            return
        self.closed.set_result(error)
        log.debug("connection to %s ended: %s", self.name, error)
        for call in self._calls.values():
            if not call.future.done():
                call.future.set_exception(error)
        for monitor in self._monitors.values():
            if not monitor.reason.done():
                monitor.reason.set_result(NOCONNECTION)
        for box in list(self._mailboxes.values()):
            box.close(error)
        self._writer.close()
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()

    async def close(self) -> None:
        """Ends the connection; the node sees us go as a normal disconnect."""
        self._shutdown(ConnectionLost(f"the connection to {self.name} is closed"))
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def __repr__(self) -> str:
        state = "closed" if self.closed.done() else "connected"
        return f"<AsyncNode {self.name} as {self.own_name} {state}>"

