"""Terms written as Elixir literals, for the command line (``elixirscope find``):
integers, floats, atoms (``:ok``, ``:"with space"``, ``true``, ``nil``, ``Bank.Account``),
strings (``"text"``, binaries), charlists (``~c"ab"``, ``'ab'``), tuples, lists, maps
(``%{a: 1, "k" => 2}``) and pids (``#PID<0.123.0>``, resolved by a callback, since only
the recording knows a pid's node)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from elixirscope.errors import ElixirScopeError
from elixirscope.etf import Atom

_TOKEN = re.compile(r"""
    \s*(?:
      (?P<pid>\#PID<\d+\.\d+\.\d+>)
    | (?P<float>[+-]?\d[\d_]*\.\d[\d_]*(?:[eE][+-]?\d+)?)
    | (?P<int>[+-]?\d[\d_]*)
    | (?P<qatom>:"(?:[^"\\]|\\.)*")
    | (?P<atom>:[A-Za-z_][A-Za-z0-9_@]*[?!]?)
    | (?P<key>[a-z_][A-Za-z0-9_]*[?!]?:(?=\s))
    | (?P<alias>[A-Z][A-Za-z0-9_]*(?:\.[A-Z][A-Za-z0-9_]*)*)
    | (?P<word>[a-z_][A-Za-z0-9_]*)
    | (?P<string>"(?:[^"\\]|\\.)*")
    | (?P<charlist>(?:~c"(?:[^"\\]|\\.)*")|(?:'(?:[^'\\]|\\.)*'))
    | (?P<punct>%\{|=>|[{}\[\],])
    )""", re.VERBOSE)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "\\": "\\", '"': '"', "'": "'",
            "e": "\x1b", "s": " "}


class LiteralError(ElixirScopeError):
    """Text that is not one of the Elixir literals ``parse_term`` reads."""


def parse_term(text: str, pid: Callable[[str], Any] | None = None) -> Any:
    """The term ``text`` writes. A string at the top is a ``str``; inside a term,
    ``bytes`` (a binary, as the decoder gives it)."""
    tokens = _tokens(text)
    if not tokens:
        raise LiteralError("the value is empty")
    parser = _Parser(tokens, pid)
    value = parser.term(top=True)
    if parser.at < len(tokens):
        raise LiteralError(f"unexpected {tokens[parser.at][1]!r} after the value")
    return value


def _tokens(text: str) -> list[tuple[str, str]]:
    found = []
    at = 0
    while at < len(text):
        if not text[at:].strip():
            break
        match = _TOKEN.match(text, at)
        if not match or match.end() == at:
            raise LiteralError(f"cannot read {text[at:].strip()[:20]!r} as an Elixir literal "
                               "(strings need double quotes: '\"text\"')")
        kind = match.lastgroup or ""
        found.append((kind, match.group(kind)))
        at = match.end()
    return found


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]],
                 pid: Callable[[str], Any] | None) -> None:
        self.tokens = tokens
        self.at = 0
        self.pid = pid

    def take(self) -> tuple[str, str]:
        if self.at >= len(self.tokens):
            raise LiteralError("the value ends too early")
        token = self.tokens[self.at]
        self.at += 1
        return token

    def peek(self) -> str | None:
        return self.tokens[self.at][1] if self.at < len(self.tokens) else None

    def term(self, top: bool = False) -> Any:
        kind, text = self.take()
        if kind == "int":
            return int(text.replace("_", ""))
        if kind == "float":
            return float(text.replace("_", ""))
        if kind == "atom":
            return Atom(text[1:])
        if kind == "qatom":
            return Atom(_unescape(text[2:-1]))
        if kind == "alias":
            return Atom(text if text.startswith("Elixir.") else f"Elixir.{text}")
        if kind == "word":
            if text not in ("true", "false", "nil"):
                raise LiteralError(f"{text!r} is not a value (atoms start with ':', strings "
                                   "need double quotes: '\"text\"')")
            return {"true": True, "false": False}.get(text, Atom(text))
        if kind == "string":
            value = _unescape(text[1:-1])
            return value if top else value.encode("utf-8")
        if kind == "charlist":
            body = text[3:-1] if text.startswith("~c") else text[1:-1]
            return [ord(char) for char in _unescape(body)]
        if kind == "pid":
            if self.pid is None:
                raise LiteralError("pids cannot be given here")
            return self.pid(text)
        if text == "{":
            return tuple(self.items("}"))
        if text == "[":
            return self.items("]")
        if text == "%{":
            return self.map()
        raise LiteralError(f"unexpected {text!r}")

    def items(self, close: str) -> list[Any]:
        found: list[Any] = []
        while self.peek() != close:
            found.append(self.term())
            if self.peek() == ",":
                self.take()
            elif self.peek() != close:
                raise LiteralError(f"expected ',' or {close!r}")
        self.take()
        return found

    def map(self) -> dict[Any, Any]:
        found: dict[Any, Any] = {}
        while self.peek() != "}":
            if self.at < len(self.tokens) and self.tokens[self.at][0] == "key":
                key: Any = Atom(self.take()[1][:-1])
            else:
                key = self.term()
                if self.take()[1] != "=>":
                    raise LiteralError("expected '=>' in a map")
            found[key] = self.term()
            if self.peek() == ",":
                self.take()
            elif self.peek() != "}":
                raise LiteralError("expected ',' or '}' in a map")
        self.take()
        return found
