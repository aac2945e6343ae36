"""The OCPP uplink's part of the store (schema migration 4): the durable queue of
transaction messages, each session's CSMS transaction id, and the id tags StartTransaction
must carry in clear.

The queue is filled from ``session_events`` (what the session machine recorded, each event in
the transaction that changed the session) by a cursor kept in ``kv`` and advanced in the same
transaction as the rows it produced: a kill -9 between the two cannot lose an event or queue
it twice. A queue row leaves only when the CSMS answered it, or when it was given up after
TransactionMessageAttempts CALLERRORs (:mod:`edge_agent.ocpp.transactions`).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from edge_agent.store.db import get_state, iso, set_state, transaction
from protocols.idtags import hash_id_tag

#: ``kv``: the outbox_seq of the last session event turned into OCPP messages.
CURSOR_KV = "ocpp_event_cursor"
#: ``kv``: the connectors the CSMS made Inoperative (JSON list).
UNAVAILABLE_KV = "ocpp_unavailable"
START, METER_VALUES, STOP = "StartTransaction", "MeterValues", "StopTransaction"


@dataclass(frozen=True, slots=True)
class Queued:
    """One transaction message waiting for the CSMS, with what sending it needs."""

    id: int
    session_id: str
    action: str
    #: The payload without ``transactionId`` (filled in at sending, once it is known).
    payload: dict[str, Any]
    attempts: int
    connector: int
    transaction_id: int | None


@dataclass(frozen=True, slots=True)
class NewMessage:
    session_id: str
    action: str
    payload: dict[str, Any]


def cursor(conn: sqlite3.Connection) -> int:
    """The last session event already queued. The first time (the uplink just enabled), the
    newest one: the CSMS hears of sessions from now on, not of the store's history."""
    held = get_state(conn, CURSOR_KV)
    if held is not None:
        return int(held)
    with transaction(conn):
        newest = conn.execute("SELECT coalesce(max(outbox_seq), 0) FROM session_events")
        value = int(newest.fetchone()[0])
        set_state(conn, CURSOR_KV, str(value))
    return value


#: Session events turned into queue rows per transaction (``TransactionQueue.fill``).
EVENTS_PAGE = 200


def events_after(
    conn: sqlite3.Connection, after: int, *, limit: int = EVENTS_PAGE
) -> list[tuple[int, bytes]]:
    """Session events recorded after ``after`` (outbox_seq, encoded SessionEvent), in order."""
    return [
        (int(seq), bytes(payload))
        for seq, payload in conn.execute(
            "SELECT outbox_seq, payload FROM session_events WHERE outbox_seq > ? "
            "ORDER BY outbox_seq LIMIT ?",
            (after, limit),
        )
    ]


def remember_id_tag(conn: sqlite3.Connection, tag: str) -> None:
    """Keep ``tag`` in clear for the StartTransaction of a session it may start."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO ocpp_id_tags (id_tag_hash, id_tag) VALUES (?, ?) "
            "ON CONFLICT (id_tag_hash) DO UPDATE SET id_tag = excluded.id_tag",
            (hash_id_tag(tag), tag),
        )


def id_tag_of(conn: sqlite3.Connection, tag_hash: str) -> str | None:
    row = conn.execute("SELECT id_tag FROM ocpp_id_tags WHERE id_tag_hash = ?", (tag_hash,))
    found = row.fetchone()
    return None if found is None else str(found[0])


def known_session(conn: sqlite3.Connection, session_id: str) -> bool:
    """Whether the session's StartTransaction was queued (and not given up)."""
    row = conn.execute(
        "SELECT abandoned FROM ocpp_transactions WHERE session_id = ?", (session_id,)
    ).fetchone()
    return row is not None and row[0] == 0


def enqueue(
    conn: sqlite3.Connection,
    messages: Sequence[NewMessage],
    *,
    starts: Sequence[tuple[str, int, str | None]],
    cursor_to: int,
    now: datetime,
) -> None:
    """Queue ``messages`` (after registering ``starts``: session id, connector, id tag) and
    move the cursor to ``cursor_to``, in one transaction."""
    with transaction(conn):
        for session_id, connector, id_tag in starts:
            conn.execute(
                "INSERT OR IGNORE INTO ocpp_transactions (session_id, connector, id_tag) "
                "VALUES (?, ?, ?)",
                (session_id, connector, id_tag),
            )
        for m in messages:
            conn.execute(
                "INSERT INTO ocpp_queue (session_id, action, payload, created_at) "
                "VALUES (?, ?, ?, ?)",
                (m.session_id, m.action, json.dumps(m.payload, sort_keys=True), iso(now)),
            )
        set_state(conn, CURSOR_KV, str(cursor_to))


def head(conn: sqlite3.Connection) -> Queued | None:
    """The oldest waiting message: the only one that may be sent (one queue, in order)."""
    row = conn.execute(
        "SELECT q.id, q.session_id, q.action, q.payload, q.attempts, t.connector, "
        "t.transaction_id FROM ocpp_queue q JOIN ocpp_transactions t USING (session_id) "
        "ORDER BY q.id LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return Queued(
        id=int(row[0]),
        session_id=str(row[1]),
        action=str(row[2]),
        payload=json.loads(row[3]),
        attempts=int(row[4]),
        connector=int(row[5]),
        transaction_id=None if row[6] is None else int(row[6]),
    )


def depth(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM ocpp_queue").fetchone()[0])


def delivered(
    conn: sqlite3.Connection,
    message: Queued,
    *,
    transaction_id: int | None,
    refused: str | None = None,
) -> None:
    """The CSMS answered ``message``: it leaves the queue; a StartTransaction's answer gives
    the session its transaction id and, when its idTagInfo was not Accepted, the refusal
    (``refused``: the status), in the same commit; after a StopTransaction the id tag in
    clear is no longer needed."""
    with transaction(conn):
        conn.execute("DELETE FROM ocpp_queue WHERE id = ?", (message.id,))
        if message.action == START and transaction_id is not None:
            conn.execute(
                "UPDATE ocpp_transactions SET transaction_id = ? WHERE session_id = ?",
                (transaction_id, message.session_id),
            )
        if message.action == START and refused is not None:
            conn.execute(
                "UPDATE ocpp_transactions SET refused = ? WHERE session_id = ?",
                (refused, message.session_id),
            )
        elif message.action == STOP:
            conn.execute(
                "UPDATE ocpp_transactions SET id_tag = NULL WHERE session_id = ?",
                (message.session_id,),
            )


def refusals_to_act_on(conn: sqlite3.Connection) -> list[str]:
    """Sessions the CSMS refused whose stop has not been asked for yet (oldest first)."""
    rows = conn.execute(
        "SELECT session_id FROM ocpp_transactions WHERE refused IS NOT NULL "
        "AND refusal_stopped = 0 ORDER BY rowid"
    )
    return [str(r[0]) for r in rows]


def refusal_acted_on(conn: sqlite3.Connection, session_id: str) -> None:
    """The stop of a refused session was asked for (or it was no longer open)."""
    with transaction(conn):
        conn.execute(
            "UPDATE ocpp_transactions SET refusal_stopped = 1 WHERE session_id = ?",
            (session_id,),
        )


def attempt_failed(conn: sqlite3.Connection, message: Queued) -> int:
    """Count a CALLERROR for ``message``; return its attempts so far."""
    with transaction(conn):
        conn.execute("UPDATE ocpp_queue SET attempts = attempts + 1 WHERE id = ?", (message.id,))
    return message.attempts + 1


def give_up(conn: sqlite3.Connection, message: Queued) -> int:
    """Drop ``message`` after its attempts; a StartTransaction takes its session's later
    messages with it (they could only name a transaction the CSMS never opened). Returns how
    many rows left the queue."""
    with transaction(conn):
        if message.action != START:
            return conn.execute("DELETE FROM ocpp_queue WHERE id = ?", (message.id,)).rowcount
        conn.execute(
            "UPDATE ocpp_transactions SET abandoned = 1, id_tag = NULL WHERE session_id = ?",
            (message.session_id,),
        )
        return conn.execute(
            "DELETE FROM ocpp_queue WHERE session_id = ?", (message.session_id,)
        ).rowcount


def session_of(conn: sqlite3.Connection, transaction_id: int) -> tuple[str, int] | None:
    """The session (id, connector) the CSMS's ``transaction_id`` names."""
    row = conn.execute(
        "SELECT session_id, connector FROM ocpp_transactions WHERE transaction_id = ? "
        "ORDER BY rowid DESC LIMIT 1",
        (transaction_id,),
    ).fetchone()
    return None if row is None else (str(row[0]), int(row[1]))


def transaction_of(conn: sqlite3.Connection, session_id: str) -> int | None:
    row = conn.execute(
        "SELECT transaction_id FROM ocpp_transactions WHERE session_id = ?", (session_id,)
    ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def clear_cache(conn: sqlite3.Connection) -> int:
    """ClearCache: forget every cached id-tag answer (the local list stays)."""
    with transaction(conn):
        return conn.execute("DELETE FROM auth_cache").rowcount


def session_id_tag(conn: sqlite3.Connection, session_id: str) -> str | None:
    """The idTag the session's StartTransaction carried (StopTransaction repeats it)."""
    row = conn.execute(
        "SELECT id_tag FROM ocpp_transactions WHERE session_id = ?", (session_id,)
    ).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def unavailable(conn: sqlite3.Connection) -> set[int]:
    """Connectors the CSMS set Inoperative (ChangeAvailability persists across restarts)."""
    held = get_state(conn, UNAVAILABLE_KV)
    return set() if held is None else {int(c) for c in json.loads(held)}


def set_unavailable(conn: sqlite3.Connection, connectors: set[int]) -> None:
    with transaction(conn):
        set_state(conn, UNAVAILABLE_KV, json.dumps(sorted(connectors)))
