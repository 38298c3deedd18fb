"""ElixirScope: an execution-cinema, time-travel debugger for Elixir and Erlang systems.

The names below load on first use: ``import elixirscope`` (and the command line, which
imports its parts) does not pay for the distribution, tracing and query layers until
one of them is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from elixirscope.version import __version__

if TYPE_CHECKING:
    from elixirscope.dist.async_node import AsyncNode
    from elixirscope.dist.node import Node, connect
    from elixirscope.elixir_format import inspect
    from elixirscope.errors import (
        AuthenticationFailed,
        ConnectError,
        ConnectionLost,
        ElixirScopeError,
        HostUnreachable,
        NodeNotFound,
        QueryError,
        RemoteError,
        RpcTimeout,
    )
    from elixirscope.recordings import Recording, open_recording
    from elixirscope.tracing.events import TraceEvent
    from elixirscope.tracing.limits import Limits
    from elixirscope.tracing.scope import (
        AsyncScope,
        Capabilities,
        Scope,
        TraceError,
        TraceInfo,
        TraceStopped,
        attach,
        attach_async,
    )

_WHERE = {
    "AsyncNode": "elixirscope.dist.async_node",
    "Node": "elixirscope.dist.node", "connect": "elixirscope.dist.node",
    "inspect": "elixirscope.elixir_format",
    **dict.fromkeys(("AuthenticationFailed", "ConnectError", "ConnectionLost",
                     "ElixirScopeError", "HostUnreachable", "NodeNotFound", "QueryError",
                     "RemoteError", "RpcTimeout"), "elixirscope.errors"),
    "Recording": "elixirscope.recordings", "open_recording": "elixirscope.recordings",
    "TraceEvent": "elixirscope.tracing.events",
    "Limits": "elixirscope.tracing.limits",
    **dict.fromkeys(("AsyncScope", "Capabilities", "Scope", "TraceError", "TraceInfo",
                     "TraceStopped", "attach", "attach_async"), "elixirscope.tracing.scope"),
}

__all__ = [
    "AsyncNode",
    "AsyncScope",
    "AuthenticationFailed",
    "Capabilities",
    "ConnectError",
    "ConnectionLost",
    "ElixirScopeError",
    "HostUnreachable",
    "Limits",
    "Node",
    "NodeNotFound",
    "QueryError",
    "Recording",
    "RemoteError",
    "RpcTimeout",
    "Scope",
    "TraceError",
    "TraceEvent",
    "TraceInfo",
    "TraceStopped",
    "__version__",
    "attach",
    "attach_async",
    "connect",
    "inspect",
    "open_recording",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'elixirscope' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
