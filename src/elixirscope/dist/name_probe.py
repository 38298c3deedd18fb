"""A node's own full name (``ejabberd@localhost``), which EPMD does not know.

EPMD lists names without a host, and the host a node calls itself (``-sname x@localhost``)
need not be the machine's. The node says its full name in the challenge of the
distribution handshake, before any cookie is checked: we open the handshake, read the
challenge and hang up without answering it, which the node drops silently.
"""

from __future__ import annotations

import asyncio
import contextlib

from elixirscope.dist.cookie import Cookie
from elixirscope.dist.handshake import ClientHandshake
from elixirscope.dist.names import is_long_host, own_node_name
from elixirscope.errors import ElixirScopeError

PROBE_TIMEOUT = 2.0


async def node_full_name(host: str, port: int, timeout: float = PROBE_TIMEOUT) -> str | None:
    """The name the node listening on ``host``:``port`` gives itself, or ``None`` when it
    does not say (it refused our name style, or did not answer in time)."""
    local = "127.0.0.1" if is_long_host(host) else ""
    # The cookie is never used: we hang up before the reply that would carry its digest.
    handshake = ClientHandshake(own_node_name(host, local, "elixirscope_probe"),
                                Cookie("unused", "the name probe"), creation=4,
                                target=host)
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(handshake.start())
                while handshake.peer is None:
                    data = await reader.read(4096)
                    if not data:
                        return None
                    handshake.receive_data(data)
                return handshake.peer.name
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except (TimeoutError, OSError, ElixirScopeError):
        return None
