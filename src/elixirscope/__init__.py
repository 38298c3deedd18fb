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
    RemoteError,
    RpcTimeout,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncNode",
    "AuthenticationFailed",
    "ConnectError",
    "ConnectionLost",
    "ElixirScopeError",
    "HostUnreachable",
    "Node",
    "NodeNotFound",
    "RemoteError",
    "RpcTimeout",
    "__version__",
    "connect",
    "inspect",
]
