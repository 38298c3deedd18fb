"""Errors ElixirScope raises. ``str(error)`` is always one readable sentence."""

from __future__ import annotations


class ElixirScopeError(Exception):
    """Base class of every error ElixirScope raises on purpose."""


class ETFDecodeError(ElixirScopeError, ValueError):
    """Bytes that are not a valid External Term Format term."""

    def __init__(self, message: str, offset: int) -> None:
        super().__init__(f"{message} at byte offset {offset}")
        self.offset = offset


class ETFEncodeError(ElixirScopeError, TypeError):
    """A Python value that has no Erlang term form."""


class InvalidName(ElixirScopeError):
    """A node, module, function or pid written in a form we cannot read."""


class ConnectError(ElixirScopeError):
    """The node could not be reached or would not accept us."""


class CookieNotFound(ConnectError):
    """No cookie in the argument, ``$ERLANG_COOKIE`` or ``~/.erlang.cookie``."""


class NodeNotFound(ConnectError):
    """EPMD on the host does not know the node name."""


class HostUnreachable(ConnectError):
    """The host or its EPMD or the node's port did not answer."""


class AuthenticationFailed(ConnectError):
    """The node rejected our cookie (or we rejected the node's)."""


class NameRefused(ConnectError):
    """The node refused the name we connected with."""


class ProtocolError(ElixirScopeError):
    """The peer sent something the distribution protocol does not allow."""


class ConnectionLost(ElixirScopeError):
    """The connection to the node went away."""


class RpcTimeout(ElixirScopeError, TimeoutError):
    """A remote call did not answer in time; the connection stays usable."""


class RemoteError(ElixirScopeError):
    """A remote call raised. ``kind`` is ``error``, ``exit`` or ``throw``.

    ``str()`` gives one line; ``formatted`` gives the Elixir-style banner and stacktrace."""

    def __init__(self, kind: str, reason: object, stacktrace: list[object], message: str,
                 formatted: str = "") -> None:
        super().__init__(message)
        self.kind = kind
        self.reason = reason
        self.stacktrace = stacktrace
        self.formatted = formatted or message


class QueryError(ElixirScopeError):
    """A question a recording cannot answer as asked."""
