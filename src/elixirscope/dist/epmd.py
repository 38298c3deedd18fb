"""EPMD, the port mapper every host with Erlang nodes runs (TCP 4369 by default).

The request/response encoding is kept apart from the socket so it can be tested byte by
byte; ``list_names`` and ``lookup`` do the I/O with asyncio.
"""

from __future__ import annotations

import asyncio
import os
import struct
from dataclasses import dataclass

from elixirscope.errors import HostUnreachable, NodeNotFound, ProtocolError

PORT_PLEASE2_REQ = 122
PORT2_RESP = 119
NAMES_REQ = 110

DEFAULT_TIMEOUT = 5.0


def epmd_port() -> int:
    value = os.environ.get("ERL_EPMD_PORT", "")
    return int(value) if value.isdigit() else 4369


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """What EPMD knows of a registered node."""

    name: str
    port: int
    node_type: int  # 77 ('M') normal Erlang node, 72 ('H') hidden C node
    protocol: int
    highest_version: int
    lowest_version: int
    extra: bytes


def encode_request(payload: bytes) -> bytes:
    return struct.pack(">H", len(payload)) + payload


def port_please_request(name: str) -> bytes:
    return encode_request(bytes([PORT_PLEASE2_REQ]) + name.encode())


def names_request() -> bytes:
    return encode_request(bytes([NAMES_REQ]))


def parse_port2_response(data: bytes) -> NodeInfo | None:
    """The node's info, or ``None`` when EPMD does not know the name."""
    if len(data) < 2 or data[0] != PORT2_RESP:
        raise ProtocolError("EPMD sent an answer that is not a PORT2_RESP")
    if data[1] != 0:
        return None
    try:
        port, node_type, protocol, high, low, name_len = struct.unpack_from(">HBBHHH", data, 2)
        name_end = 12 + name_len
        name = data[12:name_end].decode()
        (extra_len,) = struct.unpack_from(">H", data, name_end)
        extra = data[name_end + 2 : name_end + 2 + extra_len]
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError("EPMD sent a truncated or garbled PORT2_RESP") from exc
    return NodeInfo(name, port, node_type, protocol, high, low, bytes(extra))


def parse_names_response(data: bytes) -> list[tuple[str, int]]:
    """``[(name, port)]`` from a NAMES_RESP (4-byte EPMD port, then text lines)."""
    if len(data) < 4:
        raise ProtocolError("EPMD sent a truncated NAMES_RESP")
    names = []
    for line in data[4:].decode("utf-8", "replace").splitlines():
        # "name NAME at port PORT"
        parts = line.split()
        if len(parts) == 5 and parts[0] == "name" and parts[2:4] == ["at", "port"]:
            names.append((parts[1], int(parts[4])))
    return names


async def _exchange(host: str, request: bytes, timeout: float) -> bytes:
    """Sends one request; EPMD answers and closes the connection."""
    port = epmd_port()
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port)
            try:
                writer.write(request)
                await writer.drain()
                return await reader.read()
            finally:
                writer.close()
    except TimeoutError as exc:
        raise HostUnreachable(f"EPMD on {host} did not answer within {timeout:g} s") from exc
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        raise HostUnreachable(
            f"cannot reach EPMD on {host} port {port} ({reason}); is a node running there?"
        ) from exc


async def list_names(host: str, timeout: float = DEFAULT_TIMEOUT) -> list[tuple[str, int]]:
    """The node names (without host) registered with EPMD on ``host`` and their ports."""
    return parse_names_response(await _exchange(host, names_request(), timeout))


async def lookup(name: str, host: str, timeout: float = DEFAULT_TIMEOUT) -> NodeInfo:
    """The port and versions of node ``name`` on ``host``; one sentence if it is unknown."""
    data = await _exchange(host, port_please_request(name), timeout)
    info = parse_port2_response(data)
    if info is None:
        known = [known_name for known_name, _ in await list_names(host, timeout)]
        listing = ", ".join(sorted(known)) if known else "none"
        raise NodeNotFound(f"no node named {name!r} on {host}; EPMD knows: {listing}")
    return info
