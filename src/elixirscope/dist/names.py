"""Node names: ``name@host``, short or long, and the names we give ourselves."""

from __future__ import annotations

import secrets
import socket

from elixirscope.errors import ConnectError


def split_node_name(node: str) -> tuple[str, str]:
    """``("app", "host")`` from ``"app@host"``; a bare ``"app"`` means this host."""
    name, at, host = node.partition("@")
    if not name or (at and not host) or "@" in host:
        raise ConnectError(f"{node!r} is not a node name; expected name@host")
    return name, host or local_short_host()


def is_long_host(host: str) -> bool:
    """Long names (-name) have a dotted host, a domain or an IP address; short ones do not."""
    return "." in host or ":" in host


def local_short_host() -> str:
    return socket.gethostname().split(".")[0]


def own_node_name(target_host: str, local_address: str, name: str | None = None) -> str:
    """Our hidden node's name, in the target's naming style: ``name`` as given when it
    has a host part, else ``name`` (default ``elixirscope_<random>``) at our host.

    For long names the host part is the local address of the socket we connected with:
    it is dotted, and it is what the node sees us come from."""
    if name and "@" in name:
        return name
    unique = name or f"elixirscope_{secrets.token_hex(4)}"
    if is_long_host(target_host):
        return f"{unique}@{local_address}"
    return f"{unique}@{local_short_host()}"
