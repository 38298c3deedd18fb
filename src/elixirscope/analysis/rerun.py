"""``rerun``: call a recorded function again, with the recorded arguments, on a live
node, and compare what it does now with what the recording says it did.

SIDE-EFFECTING: this really runs the function on the node (it may move money, write
files, send messages). It is opt-in: nothing else in ElixirScope calls it, and the
command line asks for ``--yes-run-it``. The call runs in a fresh process on the node
(an rpc), not in the recorded process, so code that depends on its caller (``self()``,
the process dictionary, a GenServer's state) behaves differently. Pids and references
in the arguments are the recorded ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from elixirscope.analysis.find import same
from elixirscope.analysis.results import RerunResult
from elixirscope.beam_names import function_atom, module_atom
from elixirscope.elixir_format import inspect
from elixirscope.errors import QueryError, RemoteError
from elixirscope.etf import Atom, decode
from elixirscope.recording.results import Span

if TYPE_CHECKING:
    from elixirscope.dist.node import Node
    from elixirscope.recording.query import RecordingQueries

MAX_DIFFERENCES = 20
# Arguments the agent left out of a recorded call (see elixir_format.MARKERS).
ELIDED = (Atom("$state"), Atom("$elided"), Atom("$not_recorded"))


def rerun(rec: RecordingQueries, span: Span | int, node: Node, *,
          timeout: float = 15.0) -> RerunResult:
    """Calls ``span``'s function on ``node`` with its recorded arguments (SIDE EFFECTS:
    the call really runs) and compares the result with the recorded one."""
    found = span if isinstance(span, Span) else rec.span(span)
    if found.outcome not in ("return", "exception") or found.result_payload is None:
        raise QueryError(f"span {found.span_id} ({found.mfa}) has no recorded result "
                               f"to compare with: it ended by {found.outcome}")
    if rec.event(found.span_id).truncated:
        raise QueryError(f"the arguments of span {found.span_id} were cut to the "
                               "recording's max_term_bytes, so the call cannot be repeated")
    args = decode(found.args_payload)
    if not isinstance(args, list) or len(args) != found.arity:
        raise QueryError(f"span {found.span_id} did not record its arguments "
                               "(trace the function with arguments to re-run it)")
    if any(marker in args for marker in ELIDED):
        raise QueryError(f"span {found.span_id} ({found.mfa}) did not record all its "
                               "arguments (a process state, or one too large to ship), so "
                               "the call cannot be repeated")
    recorded = decode(found.result_payload)
    module, function = module_atom(found.module), function_atom(found.function)
    exported = node.rpc("erlang", "function_exported", [module, function, found.arity],
                        timeout=timeout)
    if exported is not True:
        node.rpc("code", "ensure_loaded", [module], timeout=timeout)
        exported = node.rpc("erlang", "function_exported", [module, function, found.arity],
                            timeout=timeout)
    if exported is not True:
        raise QueryError(f"{found.mfa} is not exported on {node.name} (a local "
                               "function, or a module not loaded there): it cannot be "
                               "called from outside, so nothing was run")
    try:
        result = node.rpc(module, function, args, timeout=timeout)
    except RemoteError as exc:
        now = (Atom(exc.kind), exc.reason)
        if found.outcome == "exception" and _same_exception(recorded, now):
            return RerunResult(found, "equal", recorded, now)
        return RerunResult(found, "raised", recorded, now, error=str(exc))
    if found.outcome == "exception":
        return RerunResult(found, "differs", recorded, result, (
            f"the recording raised {inspect(recorded)}, now it returned {inspect(result)}",))
    differences = tuple(differences_between(recorded, result))
    return RerunResult(found, "differs" if differences else "equal", recorded, result,
                       differences)


def differences_between(old: Any, new: Any, path: str = "",
                        limit: int = MAX_DIFFERENCES) -> list[str]:
    """Where two terms differ, as ``path: old -> new`` lines (at most ``limit``)."""
    found: list[str] = []
    _diff(old, new, path, found, limit)
    return found


def _diff(old: Any, new: Any, path: str, found: list[str], limit: int) -> None:
    if len(found) >= limit or same(old, new):
        return
    where = path or "the result"
    if type(old) is type(new) is dict:
        for key in sorted(old.keys() | new.keys(), key=repr):
            step = f"{path}[{inspect(key)}]"
            if key not in new:
                found.append(f"{step}: {_short(old[key])} is gone")
            elif key not in old:
                found.append(f"{step}: new, {_short(new[key])}")
            else:
                _diff(old[key], new[key], step, found, limit)
            if len(found) >= limit:
                return
        return
    if type(old) is type(new) and type(old) in (tuple, list) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            _diff(a, b, f"{path}{'.elem' if type(old) is tuple else '.at'}({index})",
                  found, limit)
        return
    if type(old) is type(new) and type(old) in (tuple, list):
        found.append(f"{where}: {len(old)} elements, now {len(new)}: {_short(old)} -> "
                     f"{_short(new)}")
        return
    found.append(f"{where}: {_short(old)} -> {_short(new)}")


def _same_exception(recorded: Any, now: tuple[Atom, Any]) -> bool:
    return isinstance(recorded, tuple) and len(recorded) == 2 and same(recorded[0], now[0]) \
        and same(recorded[1], now[1])


def _short(term: Any) -> str:
    text = inspect(term)
    return text if len(text) <= 80 else text[:79] + "…"
