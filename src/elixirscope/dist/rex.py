"""Remote calls through ``rex``, the node's rpc server, as request and reply terms.

The request asks rex to run ``erpc:execute_call(CallRef, M, F, A)``, the function erpc
itself runs on the far side: it ends the call by exiting with ``{CallRef, Class, ...}``,
which rex hands back as ``{badrpc, {'EXIT', {CallRef, Class, ...}}}``. That keeps the
exception class (error, exit or throw) and the stacktrace exactly, which a plain
``{call, M, F, A}`` loses (rex folds error and exit together and returns throws as
values). The price is a dependency on an internal function of erpc, present since
OTP 23; where a node lacks it, ``plain_request`` is the fallback.
"""

from __future__ import annotations

from typing import Any

from elixirscope.errors import RemoteError
from elixirscope.etf import Atom, Pid, Reference
from elixirscope.remote_errors import format_remote_error

GEN_CALL = Atom("$gen_call")
CALL = Atom("call")
BADRPC = Atom("badrpc")
EXIT = Atom("EXIT")
RETURN = Atom("return")
ERPC = Atom("erpc")
EXECUTE_CALL = Atom("execute_call")
UNDEF = Atom("undef")
CLASSES = {Atom("error"), Atom("exit"), Atom("throw")}


def wrapped_request(reply_to: Pid, tag: Reference, call_ref: Reference, module: Atom,
                    function: Atom, args: list[Any], group_leader: Pid) -> tuple[Any, ...]:
    mfa = [call_ref, module, function, args]
    return (GEN_CALL, (reply_to, tag), (CALL, ERPC, EXECUTE_CALL, mfa, group_leader))


def plain_request(reply_to: Pid, tag: Reference, module: Atom, function: Atom,
                  args: list[Any], group_leader: Pid) -> tuple[Any, ...]:
    return (GEN_CALL, (reply_to, tag), (CALL, module, function, args, group_leader))


def lacks_wrapper(reply: Any) -> bool:
    """True when the node has no ``erpc:execute_call/4`` (the reply is its ``undef``)."""
    exit_value = _badrpc_exit(reply)
    if not (isinstance(exit_value, tuple) and len(exit_value) == 2 and exit_value[0] == UNDEF):
        return False
    stack = exit_value[1]
    return (isinstance(stack, list) and bool(stack) and isinstance(stack[0], tuple)
            and stack[0][:2] == (ERPC, EXECUTE_CALL))


def wrapped_result(reply: Any, call_ref: Reference, mfa: tuple[Atom, Atom, int]) -> Any:
    """The call's value, or ``RemoteError`` with its class, reason and stacktrace."""
    exit_value = _badrpc_exit(reply)
    if (isinstance(exit_value, tuple) and len(exit_value) >= 3 and exit_value[0] == call_ref):
        kind = exit_value[1]
        if kind == RETURN:
            return exit_value[2]
        if kind in CLASSES:
            stack = exit_value[3] if len(exit_value) > 3 else []
            raise _remote_error(str(kind), exit_value[2], stack, mfa)
    return plain_result(reply, mfa)


def plain_result(reply: Any, mfa: tuple[Atom, Atom, int]) -> Any:
    """The value from a plain rex reply; errors and exits can only be told apart by shape."""
    if isinstance(reply, tuple) and len(reply) == 2 and reply[0] == BADRPC:
        exit_value = _badrpc_exit(reply)
        if exit_value is None:
            raise _remote_error("exit", reply[1], [], mfa)
        if (isinstance(exit_value, tuple) and len(exit_value) == 2
                and _looks_like_stacktrace(exit_value[1])):
            raise _remote_error("error", exit_value[0], exit_value[1], mfa)
        raise _remote_error("exit", exit_value, [], mfa)
    return reply


def _badrpc_exit(reply: Any) -> Any:
    if (isinstance(reply, tuple) and len(reply) == 2 and reply[0] == BADRPC
            and isinstance(reply[1], tuple) and len(reply[1]) == 2 and reply[1][0] == EXIT):
        return reply[1][1]
    return None


def _looks_like_stacktrace(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(entry, tuple) and len(entry) == 4 for entry in value
    )


def _remote_error(kind: str, reason: Any, stack: Any,
                  mfa: tuple[Atom, Atom, int]) -> RemoteError:
    stacktrace = stack if isinstance(stack, list) else []
    one_line, formatted = format_remote_error(kind, reason, stacktrace, mfa)
    return RemoteError(kind, reason, stacktrace, one_line, formatted)
