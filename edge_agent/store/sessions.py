"""Sessions in the store: each state change of a session and the event that reports it are
written in ONE transaction (session row, session_events row, outbox row; for a start with a
booking PIN, the PIN's single use too).

Sessions and session events are never thinned or deleted by the agent.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime

from edge_agent.errors import StoreError
from edge_agent.sessions.machine import EmitSessionEvent, Session
from edge_agent.store import auth as auth_store
from edge_agent.store import outbox
from edge_agent.store.db import iso, transaction
from protocols.enums import CredentialKind, SessionEventType, StopReason
from protocols.ids import new_ulid
from protocols.messages import CredentialRef, SessionEvent


@dataclass(frozen=True, slots=True)
class EventContext:
    """What the envelope of a session event needs beyond the session itself."""

    device_id: str
    now: datetime
    clock_synced: bool
    #: The cloud link was down when this happened (the sync task knows).
    offline: bool


def record_event(
    conn: sqlite3.Connection, effect: EmitSessionEvent, ctx: EventContext
) -> SessionEvent:
    """Persist ``effect.session`` and queue its event, atomically; return the event sent."""
    session = effect.session
    with transaction(conn):
        if effect.event is SessionEventType.STARTED:
            _insert(conn, session, ctx.now)
            if session.credential.kind is CredentialKind.PIN:
                _use_pin(conn, session, ctx.now)
        else:
            _update(conn, session, ctx.now)

        def build(seq: int) -> SessionEvent:
            return SessionEvent(
                msg_id=new_ulid(),
                device_id=ctx.device_id,
                seq=seq,
                ts=ctx.now,
                clock_synced=ctx.clock_synced,
                session_id=session.session_id,
                event=effect.event,
                event_seq=session.event_seq,
                connector=session.connector,
                offline=ctx.offline,
                credential=session.credential,
                booking_id=session.booking_id,
                started_at=session.started_at,
                meter_start_wh=session.meter_start_wh,
                meter_wh=session.meter_wh,
                energy_wh=session.energy_wh,
                power_w=None if session.power_w is None else max(session.power_w, 0.0),
                stopped_at=session.stopped_at,
                stop_reason=session.stop_reason,
                meter_went_backwards=session.went_backwards,
                elapsed_s=session.elapsed_s,
            )

        message, payload = outbox.enqueue(conn, build, now=ctx.now)
        conn.execute(
            "INSERT INTO session_events (session_id, event_seq, event, outbox_seq, payload) "
            "VALUES (?, ?, ?, ?, ?)",
            (session.session_id, session.event_seq, effect.event.value, message.seq, payload),
        )
    return message


def _insert(conn: sqlite3.Connection, s: Session, now: datetime) -> None:
    try:
        conn.execute(
            "INSERT INTO sessions (session_id, connector, credential_kind, credential_ref, "
            "booking_id, started_at, meter_start_wh, last_meter_wh, last_meter_at, "
            "max_meter_wh, meter_went_backwards, auth_expires_at, max_wh, max_s, event_seq) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                s.session_id,
                s.connector,
                s.credential.kind.value,
                s.credential.ref,
                s.booking_id,
                iso(s.started_at),
                s.meter_start_wh,
                s.meter_wh,
                iso(now),
                s.max_meter_wh,
                int(s.went_backwards),
                None if s.auth_expires_at is None else iso(s.auth_expires_at),
                s.max_wh,
                s.max_s,
                s.event_seq,
            ),
        )
    except sqlite3.IntegrityError as exc:
        raise StoreError(
            f"cannot start session {s.session_id} on connector {s.connector}: {exc}"
        ) from exc


def _use_pin(conn: sqlite3.Connection, s: Session, now: datetime) -> None:
    """A booking PIN starts one session: its use commits with the start, or neither does.

    The authorizer refused a used or revoked PIN already; this is the authority should two
    presentations race, or a revocation land between the decision and the start.
    """
    ref = s.credential.ref
    if auth_store.pin_revoked(conn, ref):
        raise StoreError(f"cannot start session {s.session_id}: PIN {ref} was revoked")
    if not auth_store.claim_pin(
        conn, ref, session_id=s.session_id, now=now, expires_at=s.auth_expires_at
    ):
        used_by = auth_store.pin_used_by(conn, ref)
        raise StoreError(f"cannot start session {s.session_id}: PIN {ref} started {used_by}")


def _update(conn: sqlite3.Connection, s: Session, now: datetime) -> None:
    stopped = s.stopped_at is not None
    cursor = conn.execute(
        "UPDATE sessions SET last_meter_wh = ?, last_meter_at = ?, max_meter_wh = ?, "
        "meter_went_backwards = ?, event_seq = ?, stopped_at = ?, meter_stop_wh = ?, "
        "energy_wh = ?, stop_reason = ?, elapsed_s = coalesce(?, elapsed_s) "
        "WHERE session_id = ? AND stopped_at IS NULL AND event_seq = ? - 1",
        (
            s.meter_wh,
            iso(now),
            s.max_meter_wh,
            int(s.went_backwards),
            s.event_seq,
            None if s.stopped_at is None else iso(s.stopped_at),
            s.meter_wh if stopped else None,
            s.energy_wh if stopped else None,
            None if s.stop_reason is None else s.stop_reason.value,
            s.elapsed_s,
            s.session_id,
            s.event_seq,
        ),
    )
    if cursor.rowcount != 1:
        # Not open, or an event out of order: both are bugs that must not reach the cloud.
        raise StoreError(f"session {s.session_id} is not open at event_seq {s.event_seq - 1}")


def extend_authorization(conn: sqlite3.Connection, session_id: str, until: datetime) -> bool:
    """Let open session ``session_id`` be authorized until ``until`` (the later of that and
    what it holds: an extension never shortens; none — no expiry — stays none). False when
    no such session is open."""
    with transaction(conn):
        row = conn.execute(
            "SELECT auth_expires_at FROM sessions WHERE session_id = ? AND stopped_at IS NULL",
            (session_id,),
        ).fetchone()
        if row is None:
            return False
        held = None if row[0] is None else datetime.fromisoformat(str(row[0]))
        if held is not None and held < until:
            conn.execute(
                "UPDATE sessions SET auth_expires_at = ? WHERE session_id = ?",
                (iso(until), session_id),
            )
    return True


def update_meter(
    conn: sqlite3.Connection, session: Session, *, now: datetime, mono: float | None = None
) -> None:
    """Keep the last register value of an open session current (called with each reading
    batch, in its transaction), so crash recovery bills from a recent value; and, given the
    monotonic clock ``mono``, its elapsed seconds, so a restart counts on from them."""
    elapsed = None if mono is None else session.elapsed_at(mono)
    conn.execute(
        "UPDATE sessions SET last_meter_wh = ?, last_meter_at = ?, max_meter_wh = ?, "
        "meter_went_backwards = ?, elapsed_s = coalesce(?, elapsed_s) "
        "WHERE session_id = ? AND stopped_at IS NULL",
        (
            session.meter_wh,
            iso(now),
            session.max_meter_wh,
            int(session.went_backwards),
            elapsed,
            session.session_id,
        ),
    )


_COLUMNS = (
    "session_id, connector, credential_kind, credential_ref, booking_id, started_at, "
    "meter_start_wh, last_meter_wh, max_meter_wh, meter_went_backwards, auth_expires_at, "
    "max_wh, max_s, event_seq, stopped_at, stop_reason, elapsed_s"
)


def _session(row: sqlite3.Row | tuple[object, ...], started_mono: float) -> Session:
    (
        sid,
        connector,
        kind,
        ref,
        booking_id,
        started_at,
        start_wh,
        last_wh,
        max_wh_seen,
        backwards,
        auth_exp,
        max_wh,
        max_s,
        event_seq,
        stopped_at,
        reason,
        elapsed,
    ) = row
    elapsed_s = None if elapsed is None else float(str(elapsed))
    return Session(
        session_id=str(sid),
        connector=int(str(connector)),
        credential=CredentialRef(kind=CredentialKind(str(kind)), ref=str(ref)),
        started_at=datetime.fromisoformat(str(started_at)),
        started_mono=started_mono,
        meter_start_wh=int(str(start_wh)),
        meter_wh=int(str(last_wh)),
        max_meter_wh=int(str(max_wh_seen)),
        event_seq=int(str(event_seq)),
        booking_id=None if booking_id is None else str(booking_id),
        auth_expires_at=None if auth_exp is None else datetime.fromisoformat(str(auth_exp)),
        max_wh=None if max_wh is None else int(str(max_wh)),
        max_s=None if max_s is None else int(str(max_s)),
        went_backwards=bool(backwards),
        stopped_at=None if stopped_at is None else datetime.fromisoformat(str(stopped_at)),
        stop_reason=None if reason is None else StopReason(str(reason)),
        # Open: what it ran until the store last heard of it, counted on from started_mono.
        elapsed_before_s=(elapsed_s or 0.0) if stopped_at is None else 0.0,
        elapsed_s=elapsed_s if stopped_at is not None else None,
    )


def open_sessions(conn: sqlite3.Connection, *, started_mono: float = 0.0) -> list[Session]:
    """Sessions not yet stopped (after a crash: the ones recovery must close or resume).

    The monotonic clock does not survive a restart: ``started_mono`` is the caller's
    monotonic clock now, from which each session counts on from its stored elapsed seconds.
    """
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM sessions WHERE stopped_at IS NULL ORDER BY connector"  # noqa: S608 -- constant column list
    )
    return [_session(tuple(r), started_mono) for r in rows]


def get_session(conn: sqlite3.Connection, session_id: str) -> Session | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM sessions WHERE session_id = ?",  # noqa: S608 -- constant column list
        (session_id,),
    ).fetchone()
    return None if row is None else _session(tuple(row), 0.0)
