"""Exceptions raised on a node, printed as Elixir prints them (``Exception.format/3``).

Erlang error reasons are mapped to the Elixir exception Elixir would show for them
(``badarith`` is ``ArithmeticError``); Elixir exception structs show their message. What
Elixir computes from code on the node (the application name in front of each stack
line, messages of exceptions that implement ``message/1`` without a ``:message``
field) is approximated from the data alone.
"""

from __future__ import annotations

from typing import Any

from elixirscope.beam_names import mfa_display, module_display
from elixirscope.elixir_format import inspect
from elixirscope.etf import Atom

_SIMPLE = {
    "badarg": ("ArgumentError", "argument error"),
    "badarith": ("ArithmeticError", "bad argument in arithmetic expression"),
    "system_limit": ("SystemLimitError", "a system limit has been reached"),
    "cond_clause": ("CondClauseError", "no cond clause evaluated to a truthy value"),
    "timeout_value": ("ErlangError", "Erlang error: :timeout_value"),
}

_TAGGED = {
    "badmatch": ("MatchError", "no match of right hand side value: {}"),
    "case_clause": ("CaseClauseError", "no case clause matching: {}"),
    "with_clause": ("WithClauseError", "no with clause matching: {}"),
    "try_clause": ("TryClauseError", "no try clause matching: {}"),
    "badmap": ("BadMapError", "expected a map, got: {}"),
    "badfun": ("BadFunctionError", "expected a function, got: {}"),
    "badkey": ("KeyError", "key {} not found"),
}


def format_remote_error(
    kind: str, reason: Any, stacktrace: list[Any], mfa: tuple[str, str, int]
) -> tuple[str, str]:
    """``(one_line, formatted)`` for an exception raised by the remote call ``mfa``."""
    banner = exception_banner(kind, reason, stacktrace)
    module, function, arity = mfa
    one_line = f"{module_display(module)}.{function}/{arity} raised {banner}"
    lines = [banner, *(f"    {format_stack_entry(entry)}" for entry in stacktrace)]
    return one_line, "\n".join(lines)


def exception_banner(kind: str, reason: Any, stacktrace: list[Any] | None = None) -> str:
    if kind == "exit":
        return f"** (exit) {format_exit(reason)}"
    if kind != "error":
        return f"** ({kind}) {inspect(reason)}"
    name, message = normalize_error(reason, stacktrace or [])
    return f"** ({name}) {message}"


def normalize_error(reason: Any, stacktrace: list[Any]) -> tuple[str, str]:
    """The Elixir exception name and message for an ``error``-class reason."""
    if isinstance(reason, dict) and reason.get(Atom("__exception__")) is True:
        return _exception_struct(reason)
    if isinstance(reason, Atom):
        if str(reason) in _SIMPLE:
            return _SIMPLE[str(reason)]
        if reason in (Atom("undef"), Atom("function_clause")):
            return _from_stack(str(reason), stacktrace)
    if isinstance(reason, tuple) and reason and isinstance(reason[0], Atom):
        tag = str(reason[0])
        if tag == "badkey" and len(reason) == 2:
            term = _badkey_term(stacktrace)
            if term is not None:
                return "KeyError", f"key {inspect(reason[1])} not found in: {inspect(term)}"
        if tag in _TAGGED and len(reason) == 2:
            name, template = _TAGGED[tag]
            return name, template.format(inspect(reason[1]))
        if tag == "badkey" and len(reason) == 3:
            return "KeyError", f"key {inspect(reason[1])} not found in: {inspect(reason[2])}"
        if tag == "badarity" and len(reason) == 2 and isinstance(reason[1], tuple):
            fun, args = reason[1]
            args = args if isinstance(args, list) else []
            arity = getattr(fun, "arity", "?")
            shown = ", ".join(inspect(arg) for arg in args)
            plural = "argument" if len(args) == 1 else "arguments"
            return ("BadArityError", f"{inspect(fun)} with arity {arity} called with "
                    f"{len(args)} {plural} ({shown})")
    return "ErlangError", f"Erlang error: {inspect(reason)}"


_EXIT_TEXT = {
    "normal": "normal",
    "shutdown": "shutdown",
    "killed": "killed",
    "noconnection": "no connection",
    "timeout": "time out",
    "calling_self": "process attempted to call itself",
    "noproc": "no process: the process is not alive or there's no process currently "
              "associated with the given name, possibly because its application isn't started",
}


def format_exit(reason: Any) -> str:
    """An exit reason as ``Exception.format_exit/1`` words it."""
    if isinstance(reason, Atom) and str(reason) in _EXIT_TEXT:
        return _EXIT_TEXT[str(reason)]
    if isinstance(reason, tuple) and len(reason) == 2 and isinstance(reason[0], Atom):
        tag, detail = reason
        if tag == Atom("shutdown"):
            return f"shutdown: {inspect(detail)}"
        if tag == Atom("nodedown"):
            return f"no connection to {detail}"
    # A call that exited in the callee: {Reason, {Module, Function, Args}}.
    if (isinstance(reason, tuple) and len(reason) == 2 and isinstance(reason[1], tuple)
            and len(reason[1]) == 3 and isinstance(reason[1][0], Atom)
            and isinstance(reason[1][2], list)):
        module, function, args = reason[1]
        call = f"{module_display(str(module))}.{function}({', '.join(map(inspect, args))})"
        return f"exited in: {call}\n    ** (EXIT) {format_exit(reason[0])}"
    return inspect(reason)


# Where Elixir finds the map of a ``{badkey, Key}``: the arguments of the call on top.
_BADKEY_MAP_ARG = {
    ("Elixir.Map", "get_and_update!", 3): 0,
    ("Elixir.Map", "update!", 3): 0,
    ("maps", "update", 3): 2,
    ("maps", "get", 2): 1,
    ("erlang", "map_get", 2): 1,
}


def _badkey_term(stacktrace: list[Any]) -> Any:
    top = stacktrace[0] if stacktrace else None
    if isinstance(top, tuple) and len(top) == 4 and isinstance(top[2], list):
        position = _BADKEY_MAP_ARG.get((str(top[0]), str(top[1]), len(top[2])))
        if position is not None:
            return top[2][position]
    return None


def _from_stack(reason: str, stacktrace: list[Any]) -> tuple[str, str]:
    top = stacktrace[0] if stacktrace and isinstance(stacktrace[0], tuple) else None
    where = "a function"
    if top and len(top) == 4:
        arity = len(top[2]) if isinstance(top[2], list) else top[2]
        where = _mfa_text((top[0], top[1], arity, []))
    if reason == "undef":
        return "UndefinedFunctionError", f"function {where} is undefined or private"
    return "FunctionClauseError", f"no function clause matching in {where}"


def _exception_struct(exception: dict[Any, Any]) -> tuple[str, str]:
    module = exception.get(Atom("__struct__"))
    name = module_display(str(module)) if isinstance(module, Atom) else "Exception"
    message = exception.get(Atom("message"))
    if isinstance(message, bytes):
        return name, message.decode("utf-8", "replace")
    fields = {str(key): value for key, value in exception.items() if isinstance(key, Atom)}
    if name == "KeyError" and "key" in fields:
        text = f"key {inspect(fields['key'])} not found"
        if fields.get("term") is not None:
            text += f" in: {inspect(fields['term'])}"
        return name, text
    if name in ("MatchError", "CaseClauseError", "WithClauseError", "TryClauseError"):
        return name, _TAGGED[_STRUCT_TAGS[name]][1].format(inspect(fields.get("term")))
    if name in ("UndefinedFunctionError", "FunctionClauseError") and "function" in fields:
        where = _mfa_text((fields.get("module"), fields.get("function"), fields.get("arity"), []))
        if name == "UndefinedFunctionError":
            return name, f"function {where} is undefined or private"
        return name, f"no function clause matching in {where}"
    shown = {key: value for key, value in exception.items()
             if key not in (Atom("__struct__"), Atom("__exception__"))}
    return name, inspect(shown)


_STRUCT_TAGS = {"MatchError": "badmatch", "CaseClauseError": "case_clause",
                "WithClauseError": "with_clause", "TryClauseError": "try_clause"}


def format_stack_entry(entry: Any) -> str:
    """``lib/bank/account.ex:42: Bank.Account.withdraw/2``, as in an Elixir stacktrace."""
    if not (isinstance(entry, tuple) and len(entry) == 4):
        return inspect(entry)
    location = entry[3]
    where = ""
    if isinstance(location, list):
        info = {str(key): value for key, value in
                (item for item in location if isinstance(item, tuple) and len(item) == 2)}
        file = info.get("file")
        if isinstance(file, list):
            file = "".join(chr(c) for c in file if isinstance(c, int))
        elif isinstance(file, bytes):
            file = file.decode("utf-8", "replace")
        if isinstance(file, str) and file:
            line = info.get("line")
            where = f"{file}:{line}: " if isinstance(line, int) else f"{file}: "
    return where + _mfa_text(entry)


def _mfa_text(entry: tuple[Any, ...]) -> str:
    """``Mod.fun/2``, or ``Mod.fun(arg1, arg2)`` when the stack entry has arguments."""
    module, function, arity = entry[0], entry[1], entry[2]
    if isinstance(module, Atom) and isinstance(function, Atom) and not isinstance(arity, list):
        return mfa_display(module, function, arity)
    prefix = module_display(str(module)) if isinstance(module, Atom) else inspect(module)
    name = str(function) if isinstance(function, Atom) else inspect(function)
    if isinstance(arity, list):
        return f"{prefix}.{name}({', '.join(inspect(arg) for arg in arity)})"
    return f"{prefix}.{name}/{arity}"
