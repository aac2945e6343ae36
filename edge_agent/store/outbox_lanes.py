"""The sync task's view of the outbox: which rows to send next, and deleting acked ranges.

Lanes (see :mod:`edge_agent.sync.uplink`): session events, command results and authorization
decisions first, then telemetry queued since the link came up (live), then the backlog oldest
first. Queries walk the primary key (``seq``) so a 100,000-row backlog costs index range scans,
not table scans.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from edge_agent.store.db import transaction
from edge_agent.store.outbox import OutboxRow
from protocols import topics
from protocols.enums import MessageKind

#: Kinds that jump the queue: a session's start/stop, a command's answer and an authorization
#: decision (a refused unlock) are what a driver and the cloud wait for; telemetry can trail.
#: Decisions are few — one per credential presented, PIN guesses bounded by the lockout. One
#: list with cloud ingest's urgent lane (protocols.topics.URGENT_KINDS), as column values.
URGENT_KINDS = tuple(sorted(kind.value for kind in topics.URGENT_KINDS))

_COLUMNS = "seq, kind, created_at, payload"
# A dict lookup, not MessageKind(value): this runs for every row of a 100,000-row drain.
_KIND = {kind.value: kind for kind in MessageKind}


def _rows(cursor: Iterable[tuple[Any, ...]]) -> list[OutboxRow]:
    return [OutboxRow(s, _KIND[k], c, p) for s, k, c, p in cursor]


def high_water(conn: sqlite3.Connection) -> int:
    """The highest seq queued (0 when the outbox is empty)."""
    return int(conn.execute("SELECT coalesce(max(seq), 0) FROM outbox").fetchone()[0])


def urgent_seqs(conn: sqlite3.Connection, upto: int) -> list[int]:
    """Seqs of urgent rows (:data:`URGENT_KINDS`) at or below ``upto``, oldest first."""
    marks = ",".join("?" * len(URGENT_KINDS))
    rows = conn.execute(
        f"SELECT seq FROM outbox WHERE seq <= ? AND kind IN ({marks}) ORDER BY seq",  # noqa: S608 -- placeholders only
        (upto, *URGENT_KINDS),
    )
    return [int(r[0]) for r in rows]


def rows_after(conn: sqlite3.Connection, after: int, limit: int) -> list[OutboxRow]:
    """Rows queued after ``after`` (any kind), oldest first."""
    return _rows(
        conn.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",  # noqa: S608 -- constant columns
            (after, limit),
        )
    )


def backlog_between(conn: sqlite3.Connection, after: int, upto: int, limit: int) -> list[OutboxRow]:
    """Rows that are not urgent (telemetry, status) with ``after < seq <= upto``, oldest first."""
    marks = ",".join("?" * len(URGENT_KINDS))
    return _rows(
        conn.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE seq > ? AND seq <= ? "  # noqa: S608 -- constant columns
            f"AND kind NOT IN ({marks}) ORDER BY seq LIMIT ?",
            (after, upto, *URGENT_KINDS, limit),
        )
    )


def rows_by_seq(conn: sqlite3.Connection, seqs: list[int]) -> list[OutboxRow]:
    """The rows for ``seqs`` that still exist (acked or thinned ones are gone), by seq."""
    found: list[OutboxRow] = []
    for first in range(0, len(seqs), 500):
        chunk = seqs[first : first + 500]
        marks = ",".join("?" * len(chunk))
        found += _rows(
            conn.execute(
                f"SELECT {_COLUMNS} FROM outbox WHERE seq IN ({marks}) ORDER BY seq",  # noqa: S608 -- placeholders only
                chunk,
            )
        )
    return sorted(found, key=lambda r: r.seq)


def delete_ranges(conn: sqlite3.Connection, ranges: list[tuple[int, int]]) -> int:
    """Delete the rows the cloud acknowledged (inclusive ranges) in one transaction."""
    deleted = 0
    with transaction(conn):
        for first, last in ranges:
            deleted += conn.execute(
                "DELETE FROM outbox WHERE seq BETWEEN ? AND ?", (first, last)
            ).rowcount
    return deleted


def backlog(conn: sqlite3.Connection) -> tuple[int, datetime | None]:
    """Rows not yet acknowledged and the creation time of the oldest."""
    count, oldest = conn.execute("SELECT count(*), min(created_at) FROM outbox").fetchone()
    return int(count), None if oldest is None else datetime.fromisoformat(str(oldest))
