"""Structural differences between two states, printed the way Elixir writes terms.

A change names where it happened as a path of keys: map keys as they are, list and
tuple positions as integers from 0, keyword-list keys as atoms. ``[:accounts,
"alice", :balance]`` is the path ``(Atom("accounts"), b"alice", Atom("balance"))``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from elixirscope.elixir_format import inspect
from elixirscope.etf import Atom
from elixirscope.recording.state_delta import SAME, StateChainError

_V, _M, _T, _L, _W = (Atom(name) for name in ("v", "m", "t", "l", "w"))


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()
"""What a path leads to where the state has nothing."""


@dataclass(frozen=True)
class Change:
    """``kind`` is changed, added or removed; ``old``/``new`` are ``MISSING`` where
    there is nothing (and ``old`` too where the earlier state is not known)."""

    path: tuple[Any, ...]
    kind: str
    old: Any = field(repr=False)
    new: Any = field(repr=False)

    @property
    def path_text(self) -> str:
        # Each key on its own: a path of small integers is not a charlist.
        return "[" + ", ".join(inspect(key) for key in self.path) + "]"

    def __str__(self) -> str:
        if self.kind == "added":
            return f"+ {self.path_text}: {_short(self.new)}"
        if self.kind == "removed":
            return f"- {self.path_text}" + ("" if self.old is MISSING else f": {_short(self.old)}")
        before = "?" if self.old is MISSING else _short(self.old)
        return f"~ {self.path_text}: {before} -> {_short(self.new)}"

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path_text, "kind": self.kind,
                "old": None if self.old is MISSING else inspect(self.old, limit=None),
                "new": None if self.new is MISSING else inspect(self.new, limit=None)}


@dataclass(frozen=True)
class StateDiff:
    """The changes from one state to another, in path order of discovery."""

    changes: tuple[Change, ...]

    def __bool__(self) -> bool:
        return bool(self.changes)

    def __len__(self) -> int:
        return len(self.changes)

    def __str__(self) -> str:
        return "\n".join(map(str, self.changes)) if self.changes else "(no change)"

    def as_dict(self) -> dict[str, Any]:
        return {"changes": [change.as_dict() for change in self.changes]}


def diff_terms(old: Any, new: Any) -> StateDiff:
    """What changed from ``old`` to ``new``."""
    out: list[Change] = []
    _diff(old, new, (), out)
    return StateDiff(tuple(out))


def delta_changes(base: Any, delta: Any) -> StateDiff:
    """The changes a delta record makes to ``base`` (``MISSING`` when the earlier
    state is not known: what the delta replaces is then shown as unknown)."""
    out: list[Change] = []
    _delta(base, delta, (), out)
    return StateDiff(tuple(out))


def lookup(term: Any, path: Sequence[Any]) -> Any:
    """What ``path`` leads to in ``term``, or ``MISSING``."""
    for key in path:
        term = _child(term, key)
        if term is MISSING:
            break
    return term


def _child(term: Any, key: Any) -> Any:
    if isinstance(term, dict):
        return term.get(key, MISSING) if _hashable(key) else MISSING
    if isinstance(term, list):
        if isinstance(key, Atom) and _is_keyword(term):
            return next((value for k, value in term if k == key), MISSING)
        if isinstance(key, int) and not isinstance(key, bool) and -len(term) <= key < len(term):
            return term[key]
        return MISSING
    if isinstance(term, tuple) and isinstance(key, int) and 0 <= key < len(term):
        return term[key]
    return MISSING


def _diff(old: Any, new: Any, path: tuple[Any, ...], out: list[Change]) -> None:
    if type(old) is type(new) and old == new:
        return
    if isinstance(old, dict) and isinstance(new, dict):
        for key, value in new.items():
            if key in old:
                _diff(old[key], value, (*path, key), out)
            else:
                out.append(Change((*path, key), "added", MISSING, value))
        out.extend(Change((*path, key), "removed", value, MISSING)
                   for key, value in old.items() if key not in new)
    elif isinstance(old, tuple) and isinstance(new, tuple) and len(old) == len(new):
        for index, (a, b) in enumerate(zip(old, new, strict=True)):
            _diff(a, b, (*path, index), out)
    elif isinstance(old, list) and isinstance(new, list) and (old or new):
        if _is_keyword(old) and _is_keyword(new) and _unique_keys(old) and _unique_keys(new):
            _diff(dict(old), dict(new), path, out)
        else:
            _diff_list(old, new, path, out)
    else:
        out.append(Change(path, "changed", old, new))


def _diff_list(old: list[Any], new: list[Any], path: tuple[Any, ...],
               out: list[Change], offset: int = 0) -> None:
    """Common head and tail kept; in between, element by element, then what one
    side has more of. Positions count from ``offset`` (``old`` is a slice)."""
    prefix = 0
    while prefix < min(len(old), len(new)) and _same(old[prefix], new[prefix]):
        prefix += 1
    suffix = 0
    while (suffix < min(len(old), len(new)) - prefix
           and _same(old[-1 - suffix], new[-1 - suffix])):
        suffix += 1
    old_mid, new_mid = old[prefix:len(old) - suffix], new[prefix:len(new) - suffix]
    start = offset + prefix
    if old_mid and new_mid and len(old_mid) == len(new_mid):
        for i, (a, b) in enumerate(zip(old_mid, new_mid, strict=True)):
            _diff(a, b, (*path, start + i), out)
        return
    out.extend(Change((*path, start + i), "removed", value, MISSING)
               for i, value in enumerate(old_mid))
    out.extend(Change((*path, start + i), "added", MISSING, value)
               for i, value in enumerate(new_mid))


def _delta(base: Any, delta: Any, path: tuple[Any, ...], out: list[Change]) -> None:
    tag = delta[0]
    if tag == _V:
        if base is MISSING:
            out.append(Change(path, "changed", MISSING, delta[1]))
        else:
            _diff(base, delta[1], path, out)
    elif tag == _M:
        for key, inner in delta[1]:
            old = _child(base, key) if base is not MISSING else MISSING
            if inner[0] == _V and base is not MISSING and old is MISSING:
                out.append(Change((*path, key), "added", MISSING, inner[1]))
            else:
                _delta(old, inner, (*path, key), out)
        for key in delta[2]:
            old = _child(base, key) if base is not MISSING else MISSING
            out.append(Change((*path, key), "removed", old, MISSING))
    elif tag == _T:
        for index, inner in delta[1]:
            old = _child(base, index - 1) if base is not MISSING else MISSING
            _delta(old, inner, (*path, index - 1), out)
    elif tag == _L:
        _list_delta(base, delta, path, out)
    elif tag == _W:
        added, keep = delta[1], delta[2]
        if isinstance(base, list):
            _diff_list(base, [*added, *base[:keep]], path, out)
        else:
            out.extend(Change((*path, i), "added", MISSING, value)
                       for i, value in enumerate(added))
    else:
        raise StateChainError(f"unknown delta {tag!r}")


def _list_delta(base: Any, delta: Any, path: tuple[Any, ...], out: list[Change]) -> None:
    _, prefix, suffix, middle = delta
    known = isinstance(base, list)
    old_mid = base[prefix:len(base) - suffix] if known else []
    if middle[0] == _V:
        if known:
            _diff_list(old_mid, list(middle[1]), path, out, offset=prefix)
        else:
            out.extend(Change((*path, prefix + i), "changed", MISSING, value)
                       for i, value in enumerate(middle[1]))
        return
    for offset, inner in enumerate(middle[1]):
        if inner != SAME:
            old = old_mid[offset] if known else MISSING
            _delta(old, inner, (*path, prefix + offset), out)


def _same(a: Any, b: Any) -> bool:
    return type(a) is type(b) and a == b


def _is_keyword(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(item, tuple) and len(item) == 2
                               and isinstance(item[0], Atom) for item in items)


def _unique_keys(items: list[Any]) -> bool:
    return len({key for key, _ in items}) == len(items)


def _hashable(key: Any) -> bool:
    try:
        hash(key)
    except TypeError:
        return False
    return True


def _short(term: Any) -> str:
    return inspect(term, limit=20, printable_limit=200)
