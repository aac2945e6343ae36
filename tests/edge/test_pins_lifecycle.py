"""Booking PINs die with their booking, at the agent: a PIN starts one session (its use is
stored with the start), a revoked PIN is refused offline, the window is the booking's own,
and a known old PIN cannot reset the keypad lockout — on the real store and authorizer."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from edge_agent.auth.authorizer import Authorizer, Moment, Pin
from edge_agent.auth.decision import AuthVerdict
from edge_agent.auth.lockout import Lockout
from edge_agent.errors import StoreError
from edge_agent.sessions.machine import EmitSessionEvent, Session
from edge_agent.store import auth as auth_store
from edge_agent.store.db import connect, transaction
from edge_agent.store.schema import MIGRATIONS
from edge_agent.store.sessions import EventContext, record_event
from protocols.enums import AuthorizationStatus, CredentialKind, SessionEventType, StopReason
from protocols.messages import CredentialRef, RevokedPin
from protocols.pins import issue_pin

from .conftest import T0

S = AuthorizationStatus
CHARGER = "site-1"
SECRET = b"0123456789abcdef-secret"
#: T0 is a 15-minute boundary: a booking of T0 .. T0 + 30 min, as the cloud issues it.
BOOKING = issue_pin(SECRET, CHARGER, 1, T0, T0 + timedelta(minutes=30), nonce=0)
AT = Moment(now=T0 + timedelta(minutes=1), mono=100.0, clock_synced=True)


@pytest.fixture
def authorizer(conn: sqlite3.Connection) -> Authorizer:
    return Authorizer(
        conn,
        charger_id=CHARGER,
        verifier=None,
        pin_secret=SECRET,
        lockout=Lockout(max_failures=3, lockout_s=60.0),
    )


def _start(conn: sqlite3.Connection, decision: AuthVerdict, connector: int = 1) -> None:
    """Store the start of the session ``decision`` reserved, as the connector controller does."""
    assert decision.session_id is not None
    session = Session(
        session_id=decision.session_id,
        connector=connector,
        credential=CredentialRef(kind=decision.kind, ref=decision.ref),
        started_at=AT.now,
        started_mono=AT.mono,
        meter_start_wh=1000,
        meter_wh=1000,
        max_meter_wh=1000,
        auth_expires_at=decision.expires_at,
    )
    ctx = EventContext(device_id=CHARGER, now=AT.now, clock_synced=True, offline=True)
    record_event(conn, EmitSessionEvent(SessionEventType.STARTED, session), ctx)
    stopped = replace(
        session,
        event_seq=2,
        stopped_at=AT.now + timedelta(minutes=5),
        stop_reason=StopReason.LOCAL,
    )
    record_event(conn, EmitSessionEvent(SessionEventType.STOPPED, stopped), ctx)


def _present(authorizer: Authorizer, pin: str, at: Moment = AT) -> AuthVerdict:
    return authorizer.authorize(Pin(pin), connector=1, at=at, connector_busy=False)


def test_a_pin_starts_one_session(conn: sqlite3.Connection, authorizer: Authorizer) -> None:
    first = _present(authorizer, BOOKING.pin)
    assert first.status is S.ACCEPTED
    _start(conn, first)
    again = _present(authorizer, BOOKING.pin, replace(AT, mono=200.0))
    assert again.status is S.REPLAYED
    assert first.session_id is not None
    assert first.session_id in again.reason
    used = conn.execute("SELECT ref, session_id FROM used_pins").fetchall()
    assert used == [(first.ref, first.session_id)]


def test_the_use_is_stored_with_the_start_so_a_raced_second_start_is_refused(
    conn: sqlite3.Connection, authorizer: Authorizer
) -> None:
    """Two presentations decided before either started: the second start is refused by the
    store, and nothing of it (session row, outbox row) is kept."""
    one, two = _present(authorizer, BOOKING.pin), _present(authorizer, BOOKING.pin)
    assert one.status is two.status is S.ACCEPTED
    _start(conn, one)
    outbox_rows = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    with pytest.raises(StoreError, match="started"):
        _start(conn, two)
    assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == outbox_rows


def test_an_accepted_pin_whose_start_failed_is_not_used_up(
    conn: sqlite3.Connection, authorizer: Authorizer
) -> None:
    assert _present(authorizer, BOOKING.pin).status is S.ACCEPTED  # the meter was silent
    assert _present(authorizer, BOOKING.pin).status is S.ACCEPTED


def test_a_revoked_pin_is_blocked_offline_until_its_window_ends(
    conn: sqlite3.Connection, authorizer: Authorizer
) -> None:
    with transaction(conn):
        held = auth_store.revoke_pins(
            conn,
            [RevokedPin(ref=_present(authorizer, BOOKING.pin).ref, until=BOOKING.valid_until)],
            now=AT.now,
        )
    assert held == 1
    decision = _present(authorizer, BOOKING.pin)
    assert decision.status is S.BLOCKED
    assert "revoked" in decision.reason
    # A revocation that lands between the decision and the start still stops the start.
    accepted = replace(decision, status=S.ACCEPTED, session_id="01J0000000000000000000000A")
    with pytest.raises(StoreError, match="revoked"):
        _start(conn, accepted)
    # Once the window is over the revocation is forgotten: the PIN is Expired anyway.
    with transaction(conn):
        auth_store.prune_pins(conn, before=BOOKING.valid_until + timedelta(seconds=1))
    assert conn.execute("SELECT count(*) FROM revoked_pins").fetchone()[0] == 0
    late = Moment(BOOKING.valid_until, 300.0, clock_synced=True)
    assert _present(authorizer, BOOKING.pin, late).status is S.EXPIRED


def test_a_30_minute_booking_pin_is_refused_when_the_booking_ends(
    authorizer: Authorizer,
) -> None:
    """No grace after the end: the slot may be the next driver's (10 minutes early is the
    only slack, before the start)."""
    before_end = Moment(BOOKING.valid_until - timedelta(seconds=1), 100.0, clock_synced=True)
    assert authorizer.evaluate(
        Pin(BOOKING.pin), connector=1, at=before_end, connector_busy=False
    ).accepted
    at_end = Moment(BOOKING.valid_until, 100.0, clock_synced=True)
    decision = authorizer.evaluate(Pin(BOOKING.pin), connector=1, at=at_end, connector_busy=False)
    assert decision.status is S.EXPIRED
    early = Moment(T0 - timedelta(minutes=10), 100.0, clock_synced=True)
    assert authorizer.evaluate(
        Pin(BOOKING.pin), connector=1, at=early, connector_busy=False
    ).accepted


def test_a_known_old_pin_does_not_reset_the_lockout(
    conn: sqlite3.Connection, authorizer: Authorizer
) -> None:
    """Typing one's own used PIN between guesses must not clear the failure count."""
    first = _present(authorizer, BOOKING.pin)
    _start(conn, first)
    wrong = "000" + ("1234567" if BOOKING.pin[3:] != "1234567" else "7654321")
    for i in range(2):
        at = replace(AT, mono=100.0 + i)
        assert _present(authorizer, wrong, at).status is S.INVALID
        assert _present(authorizer, BOOKING.pin, at).status is S.REPLAYED
    assert _present(authorizer, wrong, replace(AT, mono=103.0)).status is S.INVALID
    assert authorizer.lockout.locked(110.0)
    fresh = issue_pin(SECRET, CHARGER, 1, T0, T0 + timedelta(minutes=30), nonce=1)
    assert _present(authorizer, fresh.pin, replace(AT, mono=110.0)).status is S.BLOCKED


def test_a_store_from_before_pin_tracking_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    old = sqlite3.connect(path, isolation_level=None)
    for script in MIGRATIONS[:2]:
        old.executescript(script)
    old.execute("PRAGMA user_version = 2")
    old.close()
    conn = connect(path)
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert {"used_pins", "revoked_pins"} <= tables
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    finally:
        conn.close()


def test_pin_sessions_carry_the_pin_reference_never_the_pin(
    conn: sqlite3.Connection, authorizer: Authorizer
) -> None:
    decision = _present(authorizer, BOOKING.pin)
    _start(conn, decision)
    row = conn.execute("SELECT credential_kind, credential_ref FROM sessions").fetchone()
    assert row == (CredentialKind.PIN.value, decision.ref)
    assert BOOKING.pin not in "\n".join(conn.iterdump())
