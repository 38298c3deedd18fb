"""ElixirScope: an execution-cinema, time-travel debugger for Elixir and Erlang systems."""

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
from elixirscope.version import __version__

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
