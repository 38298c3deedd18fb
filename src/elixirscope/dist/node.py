"""The synchronous face of a node connection, for scripts and the command line."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterable
from types import TracebackType
from typing import Any, TypeVar

from elixirscope.dist.async_node import (
    DEFAULT_RPC_TIMEOUT,
    DEFAULT_TICK_TIME,
    AsyncNode,
    Mailbox,
    Monitor,
)
from elixirscope.dist.cookie import Cookie
from elixirscope.etf import Atom, Pid
from elixirscope.loop_thread import LoopThread

T = TypeVar("T")

# Margin on top of a call's own timeout before the waiting thread gives up on the loop.
_GRACE = 5.0


class SyncMailbox:
    """A process of ours (see ``AsyncNode.mailbox``), used from synchronous code."""

    def __init__(self, node: Node, box: Mailbox) -> None:
        self._node = node
        self.box = box
        self.pid = box.pid

    def receive(self, timeout: float | None = None) -> Any:
        wait = None if timeout is None else timeout + _GRACE
        return self._node.run(self.box.receive(timeout), wait)

    def close(self) -> None:
        self._node._loop.loop.call_soon_threadsafe(self.box.close)


class SyncMonitor:
    def __init__(self, node: Node, monitor: Monitor) -> None:
        self._node = node
        self.monitor = monitor
        self.ref = monitor.ref

    def wait(self, timeout: float | None = None) -> Any:
        """The process's exit reason, once it is down."""
        wait = None if timeout is None else timeout + _GRACE
        return self._node.run(self.monitor.wait(timeout), wait)


class Node:
    """A connection to one BEAM node as a hidden node. Close it, or use it in ``with``."""

    def __init__(self, anode: AsyncNode, loop: LoopThread) -> None:
        self.anode = anode
        self._loop = loop

    @property
    def name(self) -> str:
        """The node we are connected to, e.g. ``app@host``."""
        return self.anode.name

    @property
    def own_name(self) -> str:
        return self.anode.own_name

    @property
    def connected(self) -> bool:
        return not self.anode.closed.done()

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Runs a coroutine that uses ``self.anode`` on the connection's loop."""
        return self._loop.run(coroutine, timeout)


    def rpc(
        self,
        module: str | Atom,
        function: str | Atom,
        args: Iterable[Any] = (),
        *,
        timeout: float = DEFAULT_RPC_TIMEOUT,
        output: Callable[[str], None] | None = None,
    ) -> Any:
        """``module.function(*args)`` on the node (see ``AsyncNode.rpc``)."""
        coroutine = self.anode.rpc(module, function, args, timeout=timeout, output=output)
        return self.run(coroutine, timeout + _GRACE)

    def send(self, to: Pid | str | Atom, message: Any) -> None:
        self.run(self.anode.send(to, message), _GRACE)

    def mailbox(self, name: str | None = None) -> SyncMailbox:
        async def make() -> Mailbox:
            return self.anode.mailbox(name)

        return SyncMailbox(self, self.run(make(), _GRACE))

    def monitor(self, target: Pid | str | Atom, box: SyncMailbox | None = None) -> SyncMonitor:
        monitor = self.run(self.anode.monitor(target, box.box if box else None), _GRACE)
        return SyncMonitor(self, monitor)

    def demonitor(self, monitor: SyncMonitor) -> None:
        self.run(self.anode.demonitor(monitor.monitor), _GRACE)

    def link(self, box: SyncMailbox, pid: Pid) -> None:
        self.run(self.anode.link(box.box, pid), _GRACE)

    def unlink(self, box: SyncMailbox, pid: Pid) -> None:
        self.run(self.anode.unlink(box.box, pid), _GRACE)

    def close(self) -> None:
        if self._loop.loop.is_closed():
            return
        self.run(self.anode.close(), _GRACE)

    def __enter__(self) -> Node:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Node {self.name} {'connected' if self.connected else 'closed'}>"


def connect(
    node: str,
    cookie: str | Cookie | None = None,
    *,
    timeout: float = 10.0,
    tick_time: float = DEFAULT_TICK_TIME,
    own_name: str | None = None,
) -> Node:
    """Connects to ``node`` (``name@host``) as a hidden node.

    The cookie comes from the argument, then ``$ERLANG_COOKIE``, then
    ``~/.erlang.cookie``."""
    loop = LoopThread.shared()
    anode = loop.run(AsyncNode.connect(node, cookie, timeout=timeout, tick_time=tick_time,
                                       own_name=own_name), timeout + _GRACE)
    return Node(anode, loop)
