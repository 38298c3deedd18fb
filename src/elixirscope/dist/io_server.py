"""Enough of the Erlang I/O protocol to be the group leader of a remote call.

Output requests are answered ``ok`` at once and their text handed to a callback;
input requests get ``{error, enotsup}``, as from a process with no terminal. Output
that is a format call (``io:format`` sends ``{put_chars, Enc, io_lib, format, Args}``)
can only be formatted on the node; the caller does that and hands the text back
through :meth:`IoCapture.add`, which keeps the lines in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from elixirscope.etf import Atom

OK = Atom("ok")
ERROR = Atom("error")
ENOTSUP = Atom("enotsup")
IO_REPLY = Atom("io_reply")
PUT_CHARS = Atom("put_chars")
REQUESTS = Atom("requests")

FormatCall = tuple[Atom, Atom, list[Any]]


def io_reply(reply_as: Any, answer: Any) -> tuple[Any, ...]:
    return (IO_REPLY, reply_as, answer)


def chardata_to_text(data: Any) -> str:
    """Text of Erlang chardata: nested lists of code points and UTF-8 binaries."""
    parts: list[str] = []
    stack = [data]
    while stack:
        item = stack.pop()
        if isinstance(item, bytes):
            parts.append(item.decode("utf-8", "replace"))
        elif isinstance(item, int):
            parts.append(chr(item) if 0 <= item <= 0x10FFFF else "\ufffd")
        elif isinstance(item, list):
            stack.extend(reversed(item))
    return "".join(parts)


class IoCapture:
    """The output of one remote call, in order, to ``sink`` (dropped when ``None``)."""

    def __init__(self, sink: Callable[[str], None] | None) -> None:
        self._sink = sink
        self._chain: asyncio.Future[None] | None = None

    def handle(self, request: Any) -> tuple[Any, FormatCall | None]:
        """The answer to an io request, and a format call to run if it needs one."""
        if isinstance(request, tuple) and request and request[0] == PUT_CHARS:
            if len(request) == 3:
                self._emit_now(chardata_to_text(request[2]))
                return OK, None
            if len(request) == 2:
                self._emit_now(chardata_to_text(request[1]))
                return OK, None
            if len(request) == 5 and isinstance(request[4], list):
                return OK, (request[2], request[3], request[4])
        if isinstance(request, tuple) and len(request) == 2 and request[0] == REQUESTS:
            pending = None
            for item in request[1] if isinstance(request[1], list) else []:
                answer, fmt = self.handle(item)
                if answer != OK:
                    return answer, pending
                pending = pending or fmt
            return OK, pending
        return (ERROR, ENOTSUP), None

    def _emit_now(self, text: str) -> None:
        if self._chain is None or self._chain.done():
            if self._sink is not None and text:
                self._sink(text)
        else:
            self.add(_ready(text))

    def add(self, text: Awaitable[str]) -> None:
        """Emits ``text`` once it is ready and everything before it has been emitted."""
        previous = self._chain

        async def emit_after() -> None:
            value = await text
            if previous is not None:
                await previous
            if self._sink is not None and value:
                self._sink(value)

        self._chain = asyncio.ensure_future(emit_after())

    async def flush(self) -> None:
        if self._chain is not None:
            await self._chain


async def _ready(text: str) -> str:
    return text
