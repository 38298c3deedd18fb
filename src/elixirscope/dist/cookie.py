"""The magic cookie: where it comes from, and a holder that never shows it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from elixirscope.errors import CookieNotFound


class Cookie:
    """The secret shared by the nodes of a cluster. Its repr and str hide the value."""

    __slots__ = ("_secret", "source")

    def __init__(self, secret: str, source: str) -> None:
        if not secret:
            raise CookieNotFound(f"the cookie from {source} is empty")
        self._secret = secret.encode("latin-1", "replace")
        self.source = source

    def digest(self, challenge: int) -> bytes:
        """MD5 of the cookie followed by the challenge in decimal, as the handshake wants."""
        return hashlib.md5(self._secret + str(challenge).encode(), usedforsecurity=False).digest()

    def reveal(self) -> str:
        """The secret itself, for the rare code that must hand it on (never for printing)."""
        return self._secret.decode("latin-1")

    def __repr__(self) -> str:
        return f"<Cookie from {self.source}>"

    __str__ = __repr__


def resolve_cookie(cookie: str | Cookie | None = None) -> Cookie:
    """The cookie from the argument, then ``$ERLANG_COOKIE``, then ``~/.erlang.cookie``."""
    if isinstance(cookie, Cookie):
        return cookie
    if cookie is not None:
        return Cookie(cookie, "the argument")
    from_env = os.environ.get("ERLANG_COOKIE")
    if from_env:
        return Cookie(from_env, "$ERLANG_COOKIE")
    path = Path.home() / ".erlang.cookie"
    try:
        text = path.read_text(encoding="latin-1").strip()
    except FileNotFoundError:
        raise CookieNotFound(
            "no cookie given: pass --cookie, set $ERLANG_COOKIE, or create ~/.erlang.cookie"
        ) from None
    except OSError as exc:
        raise CookieNotFound(f"cannot read {path}: {exc.strerror}") from None
    return Cookie(text, str(path))
