"""Authorization data in the store: the local list (versioned), the cache (bounded, LRU,
expiring), used token ids (single use), used and revoked booking PINs, and the decision log,
each decision with its report queued in the outbox (``auth`` topic) in the same transaction.

Id tags are stored only as :func:`protocols.idtags.hash_id_tag` hashes, PINs only as
:func:`protocols.pins.pin_ref` references. The look-ups an authorization is evaluated with
(:func:`list_entry`, :func:`cache_peek`, :func:`jti_used`, :func:`pin_used_by`,
:func:`pin_revoked`) only read, so they also serve the field CLI on its read-only connection.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Iterable
from datetime import datetime

from edge_agent.auth.decision import AuthVerdict, ListEntry
from edge_agent.errors import StaleAuthListVersion, StoreError
from edge_agent.store import outbox
from edge_agent.store.db import iso
from protocols.enums import AuthListUpdateType, AuthorizationStatus, CredentialKind
from protocols.errors import MessageError
from protocols.ids import new_ulid
from protocols.messages import AuthDecision as AuthDecisionMessage
from protocols.messages import AuthListUpdate, CredentialRef, RevokedPin


def _time(text: str | None) -> datetime | None:
    return None if text is None else datetime.fromisoformat(text)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else iso(moment)


# --- local list ------------------------------------------------------------------------------


def auth_list_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM kv WHERE key = 'auth_list_version'").fetchone()
    return 0 if row is None else int(row[0])


def apply_auth_list_update(conn: sqlite3.Connection, update: AuthListUpdate) -> int:
    """Apply a Full or Differential update whose version moves forward; return entry count.

    Raises :class:`StaleAuthListVersion` for an old or repeated version (OCPP 1.6
    SendLocalList answers VersionMismatch): a delayed diff must not undo a newer list.
    """
    if not conn.in_transaction:
        raise StoreError("apply_auth_list_update needs a transaction")
    held = auth_list_version(conn)
    if update.version <= held:
        raise StaleAuthListVersion(update.version, held)
    if update.update_type is AuthListUpdateType.FULL:
        conn.execute("DELETE FROM auth_list")
    for entry in update.entries:
        if entry.status is None:
            conn.execute("DELETE FROM auth_list WHERE id_tag_hash = ?", (entry.id_tag_hash,))
        else:
            conn.execute(
                "INSERT INTO auth_list (id_tag_hash, status, expires_at) VALUES (?, ?, ?) "
                "ON CONFLICT (id_tag_hash) DO UPDATE SET status = excluded.status, "
                "expires_at = excluded.expires_at",
                (entry.id_tag_hash, entry.status.value, _iso(entry.expires_at)),
            )
    conn.execute(
        "INSERT INTO kv (key, value) VALUES ('auth_list_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (str(update.version),),
    )
    return int(conn.execute("SELECT count(*) FROM auth_list").fetchone()[0])


def list_entry(conn: sqlite3.Connection, tag_hash: str) -> ListEntry | None:
    row = conn.execute(
        "SELECT status, expires_at FROM auth_list WHERE id_tag_hash = ?", (tag_hash,)
    ).fetchone()
    return None if row is None else ListEntry(AuthorizationStatus(row[0]), _time(row[1]))


# --- cache -----------------------------------------------------------------------------------


def cache_peek(conn: sqlite3.Connection, tag_hash: str) -> tuple[ListEntry, datetime] | None:
    """The cached entry and when the cache lets go of it, expired or not; reads only (no
    eviction, no LRU bookkeeping: :func:`cache_get` does those)."""
    row = conn.execute(
        "SELECT status, expires_at FROM auth_cache WHERE id_tag_hash = ?", (tag_hash,)
    ).fetchone()
    if row is None:
        return None
    # The cache's own expiry is not a credential expiry: the cached status stands until then.
    return ListEntry(AuthorizationStatus(row[0])), datetime.fromisoformat(row[1])


def cache_get(conn: sqlite3.Connection, tag_hash: str, *, now: datetime) -> ListEntry | None:
    """The cached entry, or None; an expired entry is deleted and not returned. A hit counts
    as a use for least-recently-used eviction."""
    row = conn.execute(
        "SELECT status, expires_at FROM auth_cache WHERE id_tag_hash = ?", (tag_hash,)
    ).fetchone()
    if row is None:
        return None
    expires_at = datetime.fromisoformat(row[1])
    if now >= expires_at:
        conn.execute("DELETE FROM auth_cache WHERE id_tag_hash = ?", (tag_hash,))
        return None
    conn.execute(
        "UPDATE auth_cache SET last_used = (SELECT coalesce(max(last_used), 0) + 1 "
        "FROM auth_cache) WHERE id_tag_hash = ?",
        (tag_hash,),
    )
    # The cache's own expiry is not a credential expiry: the cached status stands until then.
    return ListEntry(AuthorizationStatus(row[0]))


def cache_put(
    conn: sqlite3.Connection,
    tag_hash: str,
    status: AuthorizationStatus,
    *,
    expires_at: datetime,
    max_entries: int,
) -> int:
    """Insert or refresh an entry, then evict expired and least-recently-used entries beyond
    ``max_entries``; return how many were evicted."""
    conn.execute(
        "INSERT INTO auth_cache (id_tag_hash, status, expires_at, last_used) "
        "VALUES (?, ?, ?, (SELECT coalesce(max(last_used), 0) + 1 FROM auth_cache)) "
        "ON CONFLICT (id_tag_hash) DO UPDATE SET status = excluded.status, "
        "expires_at = excluded.expires_at, last_used = excluded.last_used",
        (tag_hash, status.value, iso(expires_at)),
    )
    count = int(conn.execute("SELECT count(*) FROM auth_cache").fetchone()[0])
    excess = count - max_entries
    if excess <= 0:
        return 0
    return conn.execute(
        "DELETE FROM auth_cache WHERE id_tag_hash IN "
        "(SELECT id_tag_hash FROM auth_cache ORDER BY last_used LIMIT ?)",
        (excess,),
    ).rowcount


def cache_size(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM auth_cache").fetchone()[0])


# --- single-use tokens -----------------------------------------------------------------------


def jti_used(conn: sqlite3.Connection, jti: str) -> bool:
    """Whether ``jti`` is recorded as used; reads only (:func:`claim_jti` records it)."""
    return conn.execute("SELECT 1 FROM used_tokens WHERE jti = ?", (jti,)).fetchone() is not None


def claim_jti(conn: sqlite3.Connection, jti: str, *, now: datetime, expires_at: datetime) -> bool:
    """Record ``jti`` as used; False when it already was (the token is a replay)."""
    cursor = conn.execute(
        "INSERT INTO used_tokens (jti, used_at, expires_at) VALUES (?, ?, ?) "
        "ON CONFLICT (jti) DO NOTHING",
        (jti, iso(now), iso(expires_at)),
    )
    return cursor.rowcount == 1


def prune_used_tokens(conn: sqlite3.Connection, *, before: datetime) -> int:
    """Forget ids of tokens that expired before ``before`` (they fail on expiry anyway).

    Comparing ISO strings is correct here: every time is stored in UTC with the same format.
    """
    return conn.execute("DELETE FROM used_tokens WHERE expires_at < ?", (iso(before),)).rowcount


# --- booking PINs ----------------------------------------------------------------------------


def pin_used_by(conn: sqlite3.Connection, ref: str) -> str | None:
    """The session a PIN (by :func:`protocols.pins.pin_ref`) started, if any; reads only."""
    row = conn.execute("SELECT session_id FROM used_pins WHERE ref = ?", (ref,)).fetchone()
    return None if row is None else str(row[0])


def claim_pin(
    conn: sqlite3.Connection,
    ref: str,
    *,
    session_id: str,
    now: datetime,
    expires_at: datetime | None,
) -> bool:
    """Record that the PIN ``ref`` started ``session_id``; False when it already started one.

    Called in the transaction that stores the session start (:mod:`edge_agent.store.sessions`):
    the start and the use commit together or not at all.
    """
    cursor = conn.execute(
        "INSERT INTO used_pins (ref, session_id, used_at, expires_at) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (ref) DO NOTHING",
        (ref, session_id, iso(now), _iso(expires_at)),
    )
    return cursor.rowcount == 1


def pin_revoked(conn: sqlite3.Connection, ref: str) -> bool:
    """Whether the cloud revoked the PIN ``ref`` (its booking was cancelled); reads only."""
    return conn.execute("SELECT 1 FROM revoked_pins WHERE ref = ?", (ref,)).fetchone() is not None


def revoke_pins(conn: sqlite3.Connection, pins: Iterable[RevokedPin], *, now: datetime) -> int:
    """Store the revocations (a repeat keeps the later ``until``) and forget those whose window
    is over; return how many revocations are held."""
    if not conn.in_transaction:
        raise StoreError("revoke_pins needs a transaction")
    for pin in pins:
        conn.execute(
            "INSERT INTO revoked_pins (ref, until, revoked_at) VALUES (?, ?, ?) "
            "ON CONFLICT (ref) DO UPDATE SET until = max(until, excluded.until)",
            (pin.ref, iso(pin.until), iso(now)),
        )
    prune_pins(conn, before=now)
    return int(conn.execute("SELECT count(*) FROM revoked_pins").fetchone()[0])


def prune_pins(conn: sqlite3.Connection, *, before: datetime) -> int:
    """Forget revocations and uses of PINs whose window ended before ``before``: such a PIN
    is refused as Expired whatever else is known of it."""
    cutoff = iso(before)
    revoked = conn.execute("DELETE FROM revoked_pins WHERE until < ?", (cutoff,)).rowcount
    used = conn.execute(
        "DELETE FROM used_pins WHERE expires_at IS NOT NULL AND expires_at < ?", (cutoff,)
    ).rowcount
    return revoked + used


# --- decision log ----------------------------------------------------------------------------

#: Longest reason the wire carries (protocols.messages.AuthDecision).
REASON_MAX_CHARS = 500
#: Longest credential reference the wire carries (protocols.messages.CredentialRef).
REF_MAX_CHARS = 128


def wire_ref(decision: AuthVerdict) -> str:
    """The reference the decision's report carries: the stored one, unless a token's ``jti``
    (chosen by whoever signed it) is too long for the wire — then a hash of it."""
    if decision.kind is CredentialKind.TOKEN and len(decision.ref) > REF_MAX_CHARS:
        return "jti-" + hashlib.sha256(decision.ref.encode("utf-8", "replace")).hexdigest()[:32]
    return decision.ref


def record_decision(
    conn: sqlite3.Connection,
    decision: AuthVerdict,
    *,
    device_id: str,
    connector: int,
    now: datetime,
    clock_synced: bool,
) -> AuthDecisionMessage:
    """Log ``decision`` and queue its report (``auth`` topic) in the caller's transaction;
    return the report.

    Raises :class:`StoreError` outside a transaction (a decision logged but never reported,
    or the reverse, is what the outbox exists to prevent) and when the report cannot be
    built (a bug: the decision is then not recorded either, and the caller refuses).
    """
    if not conn.in_transaction:
        raise StoreError("record_decision needs a transaction")

    def build(seq: int) -> AuthDecisionMessage:
        return AuthDecisionMessage(
            msg_id=new_ulid(),
            device_id=device_id,
            seq=seq,
            ts=now,
            clock_synced=clock_synced,
            connector=connector,
            credential=CredentialRef(kind=decision.kind, ref=wire_ref(decision)),
            status=decision.status,
            reason=decision.reason[:REASON_MAX_CHARS],
            decided_at=now,
            session_id=decision.session_id,
        )

    try:
        message, _ = outbox.enqueue(conn, build, now=now)
    # ValueError/TypeError: a rule the report's model checks when it is built (a reference
    # that could be the credential itself); MessageError: one encoding checks (a field out of
    # range, too large).
    except (ValueError, TypeError, MessageError) as exc:
        raise StoreError(f"decision report not built: {exc}") from exc
    conn.execute(
        "INSERT INTO decisions (ts, connector, kind, ref, status, reason, outbox_seq, session_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            iso(now),
            connector,
            decision.kind.value,
            decision.ref,
            decision.status.value,
            decision.reason,
            message.seq,
            decision.session_id,
        ),
    )
    return message
