"""SQL pieces that the recording's queries and the analyses on top of them share: a WHERE
clause built from optional filters, the column lists and time expressions of the
derived tables, and the small conversions every query needs."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from elixirscope.errors import QueryError
from elixirscope.recording.results import EVENT_COLUMNS
from elixirscope.tracing.events import KIND_CODES

SPAN_COLUMNS = ("s.span_id, s.node_id, s.pid_id, s.mfa_id, s.depth, s.parent_span_id, "
                "s.start_ts, s.end_ts, s.duration_ns, s.outcome, s.correlation_id, "
                "s.trigger_message_id, s.end_seq")
# A span's start on the recording's wall clock (spans joined with nodes as n).
SPAN_START = "s.start_ts + coalesce(n.time_offset_ns, 0)"
MESSAGE_COLUMNS = ("m.message_id, m.node_id, m.send_seq, m.receive_seq, m.sender_pid_id, "
                   "m.receiver_pid_id, m.target, m.sent_ts, m.received_ts, m.handled_ts, "
                   "m.queue_ns, m.to_dead, m.send_span_id, m.handler_span_id")
MESSAGE_TIME = "coalesce(m.sent_ts, m.received_ts) + coalesce(n.time_offset_ns, 0)"
# Rows fetched at a time by queries that check candidates in Python.
SEARCH_CHUNK = 2000


class Where:
    """A WHERE clause put together from optional filters."""

    def __init__(self) -> None:
        self.clauses: list[str] = []
        self.params: list[Any] = []

    def add(self, clause: str, *params: Any) -> None:
        self.clauses.append(clause)
        self.params.extend(params)

    def within(self, column: str, ids: Sequence[int] | None) -> None:
        """``column`` in ``ids``; no condition when ``ids`` is None."""
        if ids is not None:
            self.add(f"{column} IN (SELECT unnest(?::BIGINT[]))", list(ids))

    def sql(self, *extra: str) -> str:
        clauses = [*self.clauses, *extra]
        return f"WHERE {' AND '.join(clauses)}" if clauses else ""


def event_sql(where: Where, direction: str, *extra: str) -> str:
    """The events that ``where`` keeps, in causal order (``ASC`` or ``DESC``)."""
    return (f"SELECT {EVENT_COLUMNS} FROM events {where.sql(*extra)} "
            f"ORDER BY hlc {direction}, seq {direction}")


def limit_sql(limit: int | None) -> str:
    return "" if limit is None else f" LIMIT {int(limit)}"


def direction(order: str) -> str:
    """``asc``/``desc`` as SQL; anything else is a ``QueryError``."""
    if order not in ("asc", "desc"):
        raise QueryError(f"order must be asc or desc, not {order!r}")
    return order.upper()


def kind_codes(kind: str | Iterable[str]) -> list[int]:
    """The codes of event kinds named as ``call``, ``exit`` ...; ``QueryError`` for
    another name."""
    names = [kind] if isinstance(kind, str) else list(kind)
    unknown = [name for name in names if name not in KIND_CODES]
    if unknown:
        raise QueryError(f"{unknown[0]!r} is not an event kind; the kinds are "
                         f"{', '.join(KIND_CODES)}")
    return [KIND_CODES[name] for name in names]
