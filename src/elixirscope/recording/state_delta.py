"""State records as the agent writes them, and how a delta rebuilds a state.

A state record's payload is ``{N, Body}``: ``N`` numbers the process's state records,
``Body`` is one of ``{key, State}``, ``{initial, State}`` (whole states), ``{delta,
Delta}`` (against record ``N - 1``), ``same``, ``{terminate, Reason}`` (the state is
unchanged), ``{too_large, Bytes}`` or ``{unavailable, Why}`` (the state is unknown
until the next whole one). The delta grammar is documented in the agent's source
(section "State capture").

``apply_delta`` never changes its input: containers on the changed path are copied,
the rest is shared, so consecutive states cost memory only where they differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from elixirscope.errors import ElixirScopeError
from elixirscope.etf import Atom, PairMap, decode

_V, _M, _T, _L, _W, _E = (Atom(name) for name in ("v", "m", "t", "l", "w", "e"))
SAME = Atom("same")


class StateChainError(ElixirScopeError):
    """A delta that does not fit the state it should apply to."""


@dataclass(frozen=True)
class StateRecord:
    """One decoded state record: ``kind`` is key, initial, delta, same, terminate,
    too_large or unavailable; ``value`` the state, delta, reason, size or why."""

    number: int
    kind: str
    value: Any

    @property
    def whole(self) -> bool:
        return self.kind in ("key", "initial")

    @property
    def changes_state(self) -> bool:
        return self.kind in ("key", "initial", "delta")

    @property
    def breaks_chain(self) -> bool:
        return self.kind in ("too_large", "unavailable")


def parse_record(payload: bytes) -> StateRecord:
    """The ``{N, Body}`` a state record's payload holds."""
    term = decode(payload)
    if not (isinstance(term, tuple) and len(term) == 2 and isinstance(term[0], int)):
        raise StateChainError(f"a state record holds {term!r}, not {{N, Body}}")
    number, body = term
    if body == SAME:
        return StateRecord(number, "same", None)
    if isinstance(body, tuple) and len(body) == 2 and isinstance(body[0], Atom):
        return StateRecord(number, str(body[0]), body[1])
    raise StateChainError(f"a state record holds an unknown body {body!r}")


def apply_delta(base: Any, delta: Any) -> Any:
    """The state ``delta`` makes of ``base``."""
    if not isinstance(delta, tuple) or not delta:
        raise StateChainError(f"not a delta: {delta!r}")
    tag = delta[0]
    if tag == _V:
        return delta[1]
    if tag == _M:
        return _apply_map(base, delta[1], delta[2])
    if tag == _T:
        if not isinstance(base, tuple):
            raise StateChainError("a tuple delta for a state that is not a tuple")
        items = list(base)
        for index, inner in delta[1]:
            items[index - 1] = apply_delta(items[index - 1], inner)
        return tuple(items)
    if tag == _L:
        return _apply_list(base, *delta[1:])
    if tag == _W:
        if not isinstance(base, list):
            raise StateChainError("a list delta for a state that is not a list")
        added, keep = delta[1], delta[2]
        return [*added, *base[:keep]]
    raise StateChainError(f"unknown delta {tag!r}")


def _apply_map(base: Any, changed: list[Any], removed: list[Any]) -> Any:
    if isinstance(base, PairMap):
        return _apply_pair_map(base, changed, removed)
    if not isinstance(base, dict):
        raise StateChainError("a map delta for a state that is not a map")
    out = dict(base)
    try:
        for key, inner in changed:
            out[key] = inner[1] if inner[0] == _V else apply_delta(out[key], inner)
        for key in removed:
            del out[key]
    except KeyError as exc:
        raise StateChainError(f"a map delta names a key the state lacks: {exc}") from None
    return out


def _apply_pair_map(base: PairMap, changed: list[Any], removed: list[Any]) -> PairMap:
    """The same on a map whose keys a dict would merge (``1`` and ``1.0``)."""
    pairs = list(base.pairs)

    def position(key: Any) -> int | None:
        return next((i for i, (k, _) in enumerate(pairs) if type(k) is type(key) and k == key),
                    None)

    for key, inner in changed:
        at = position(key)
        if at is None:
            pairs.append((key, apply_delta(None, inner)))
        else:
            pairs[at] = (key, apply_delta(pairs[at][1], inner))
    gone = [position(key) for key in removed]
    return PairMap(pair for i, pair in enumerate(pairs) if i not in gone)


def _apply_list(base: Any, prefix: int, suffix: int, middle: Any) -> list[Any]:
    if not isinstance(base, list) or prefix + suffix > len(base):
        raise StateChainError("a list delta for a state that is not such a list")
    end = len(base) - suffix
    if middle[0] == _V:
        mid = list(middle[1])
    else:
        old_mid = base[prefix:end]
        if len(old_mid) != len(middle[1]):
            raise StateChainError("an element-wise list delta of the wrong length")
        mid = [old if inner == SAME else apply_delta(old, inner)
               for old, inner in zip(old_mid, middle[1], strict=True)]
    return [*base[:prefix], *mid, *base[end:]]
