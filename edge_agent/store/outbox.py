"""The transactional outbox: every message the agent sends, written in the transaction of the
state change it reports, under a per-device ``seq`` that never repeats and never skips.

The sync task reads it through :mod:`edge_agent.store.outbox_lanes` (lanes, and deleting the ranges
the cloud's application acks name); :func:`pending` lists rows in seq order for tools.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from edge_agent.errors import StoreError
from protocols.enums import MessageKind
from protocols.messages import Envelope, encode_message

M = TypeVar("M", bound=Envelope)

#: Message types and the topic kind they travel on.
_KIND_OF: dict[str, MessageKind] = {
    "TelemetryBatch": MessageKind.TELEMETRY,
    "SessionEvent": MessageKind.SESSION,
    "Status": MessageKind.STATUS,
    "CommandResult": MessageKind.CMD_RESULT,
    "AuthDecision": MessageKind.AUTH,
}


@dataclass(frozen=True, slots=True)
class OutboxRow:
    seq: int
    kind: MessageKind
    created_at: str
    payload: bytes


def next_seq(conn: sqlite3.Connection) -> int:
    """Allocate the next uplink seq; call inside a transaction so it rolls back with it."""
    if not conn.in_transaction:
        raise StoreError("a seq must be allocated inside a transaction")
    row = conn.execute(
        "UPDATE counters SET value = value + 1 WHERE name = 'uplink_seq' RETURNING value"
    ).fetchone()
    return int(row[0])


def enqueue(
    conn: sqlite3.Connection, build: Callable[[int], M], *, now: datetime
) -> tuple[M, bytes]:
    """Allocate a seq, build the message with it, encode it and queue it; return both.

    Raises :class:`StoreError` outside a transaction: a queued message without the state
    change it reports (or the reverse) is exactly what the outbox exists to prevent.
    """
    seq = next_seq(conn)
    message = build(seq)
    if message.seq != seq:
        raise StoreError(f"message built with seq {message.seq}, allocated {seq}")
    kind = _KIND_OF.get(type(message).__name__)
    if kind is None:
        raise StoreError(f"{type(message).__name__} is not an uplink message")
    payload = encode_message(message)
    conn.execute(
        "INSERT INTO outbox (seq, kind, created_at, payload) VALUES (?, ?, ?, ?)",
        (seq, kind.value, now.isoformat(), payload),
    )
    return message, payload


def pending(conn: sqlite3.Connection, *, after_seq: int = 0, limit: int = 100) -> list[OutboxRow]:
    """Rows not yet acknowledged, oldest first."""
    rows = conn.execute(
        "SELECT seq, kind, created_at, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
        (after_seq, limit),
    )
    return [OutboxRow(int(s), MessageKind(k), str(c), bytes(p)) for s, k, c, p in rows]


def depth(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM outbox").fetchone()[0])
