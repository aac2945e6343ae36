"""The store: pragmas on every connection, migrations, atomic outbox, sessions, size cap."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from edge_agent.auth.decision import AuthVerdict
from edge_agent.errors import StoreError
from edge_agent.sessions.machine import EmitSessionEvent, Session
from edge_agent.store import outbox, readings
from edge_agent.store.auth import record_decision
from edge_agent.store.db import (
    connect,
    get_state,
    integrity_ok,
    migrate,
    set_state,
    transaction,
    used_bytes,
)
from edge_agent.store.schema import SCHEMA_VERSION
from edge_agent.store.sessions import EventContext, get_session, open_sessions, record_event
from protocols.enums import (
    AuthorizationStatus,
    CredentialKind,
    MessageKind,
    SessionEventType,
    StopReason,
)
from protocols.ids import new_ulid
from protocols.messages import (
    MAX_PAYLOAD_BYTES,
    CredentialRef,
    MeterReading,
    SessionEvent,
    TelemetryBatch,
    parse_message,
)
from protocols.meters import Quantity

from .conftest import T0


def _session(connector: int = 1, start_wh: int = 1000) -> Session:
    return Session(
        session_id=new_ulid(),
        connector=connector,
        credential=CredentialRef(kind=CredentialKind.ID_TAG, ref="a" * 64),
        started_at=T0,
        started_mono=0.0,
        meter_start_wh=start_wh,
        meter_wh=start_wh,
        max_meter_wh=start_wh,
    )


def _ctx(offline: bool = False) -> EventContext:
    return EventContext(device_id="site-1", now=T0, clock_synced=True, offline=offline)


def _reading(meter_wh: float, i: int = 0) -> MeterReading:
    return MeterReading(
        meter_id="m1",
        ts=T0 + timedelta(seconds=i),
        clock_synced=True,
        values={Quantity.ENERGY_IMPORT_WH: meter_wh, Quantity.POWER_W: 7000.0},
    )


def test_every_connection_gets_wal_and_synchronous_full(db_path: Path) -> None:
    for _ in range(2):
        conn = connect(db_path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # 2 = FULL (SQLite docs, PRAGMA synchronous).
        assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        conn.close()


def test_migrate_is_idempotent_and_refuses_a_newer_schema(conn: sqlite3.Connection) -> None:
    assert migrate(conn) == SCHEMA_VERSION
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="newer"):
        migrate(conn)


def test_store_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    bogus = tmp_path / "junk.db"
    bogus.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError):
        connect(bogus)


def test_seq_is_consecutive_and_rolls_back_with_its_transaction(
    conn: sqlite3.Connection,
) -> None:
    with pytest.raises(StoreError, match="transaction"):
        outbox.next_seq(conn)
    with transaction(conn):
        assert outbox.next_seq(conn) == 1
    allocated: list[int] = []

    def crash_before_commit() -> None:
        with transaction(conn):
            allocated.append(outbox.next_seq(conn))
            raise RuntimeError("crash before commit")

    with pytest.raises(RuntimeError):
        crash_before_commit()
    assert allocated == [2]
    with transaction(conn):
        assert outbox.next_seq(conn) == 2


def test_session_start_and_stop_commit_with_their_outbox_rows(conn: sqlite3.Connection) -> None:
    session = _session()
    started = record_event(conn, EmitSessionEvent(SessionEventType.STARTED, session), _ctx())
    stopped_session = replace(
        session.with_meter(1500, 0.0),
        event_seq=2,
        stopped_at=T0 + timedelta(minutes=5),
        stop_reason=StopReason.LOCAL,
    )
    stopped = record_event(
        conn, EmitSessionEvent(SessionEventType.STOPPED, stopped_session), _ctx(offline=True)
    )
    assert (started.seq, stopped.seq) == (1, 2)
    rows = outbox.pending(conn)
    assert [r.seq for r in rows] == [1, 2]
    assert all(r.kind is MessageKind.SESSION for r in rows)
    wire = parse_message(MessageKind.SESSION, rows[1].payload)
    assert isinstance(wire, SessionEvent)
    assert wire.energy_wh == 500
    assert wire.offline is True
    assert wire.stop_reason is StopReason.LOCAL
    stored = get_session(conn, session.session_id)
    assert stored is not None
    assert stored.stopped_at is not None
    assert conn.execute(
        "SELECT energy_wh, meter_stop_wh FROM sessions WHERE session_id = ?",
        (session.session_id,),
    ).fetchone() == (500, 1500)
    assert open_sessions(conn) == []


def test_a_failed_event_writes_nothing(conn: sqlite3.Connection) -> None:
    session = _session()
    record_event(conn, EmitSessionEvent(SessionEventType.STARTED, session), _ctx())
    # A second open session on the same connector is refused by the schema, and the seq
    # allocated for it rolls back too.
    with pytest.raises(StoreError):
        record_event(conn, EmitSessionEvent(SessionEventType.STARTED, _session()), _ctx())
    # An event out of order (event_seq skipping) is refused.
    with pytest.raises(StoreError, match="not open"):
        record_event(
            conn,
            EmitSessionEvent(SessionEventType.UPDATED, replace(session, event_seq=5)),
            _ctx(),
        )
    assert [r.seq for r in outbox.pending(conn)] == [1]
    assert conn.execute("SELECT count(*) FROM session_events").fetchone()[0] == 1


def test_reading_batches_queue_telemetry_and_keep_open_sessions_current(
    conn: sqlite3.Connection,
) -> None:
    session = _session()
    record_event(conn, EmitSessionEvent(SessionEventType.STARTED, session), _ctx())
    batch = [_reading(1000 + i, i) for i in range(3)]
    readings.add_batch(
        conn,
        batch,
        device_id="site-1",
        now=T0,
        clock_synced=True,
        open_sessions=[session.with_meter(1002, 7000.0)],
    )
    (recovered,) = open_sessions(conn)
    assert recovered.meter_wh == 1002
    rows = outbox.pending(conn)
    assert [r.kind for r in rows] == [MessageKind.SESSION, MessageKind.TELEMETRY]
    assert readings.latest(conn, "m1") == (
        (T0 + timedelta(seconds=2)).isoformat(),
        {"energy_import_wh": 1002.0, "power_w": 7000.0},
    )


def test_size_cap_thins_oldest_telemetry_and_never_sessions(conn: sqlite3.Connection) -> None:
    cap = 256 * 1024
    sessions = []
    for i in range(20):
        s = replace(_session(connector=1), session_id=new_ulid())
        record_event(conn, EmitSessionEvent(SessionEventType.STARTED, s), _ctx())
        record_event(
            conn,
            EmitSessionEvent(
                SessionEventType.STOPPED,
                replace(s, event_seq=2, stopped_at=T0, stop_reason=StopReason.LOCAL),
            ),
            _ctx(),
        )
        sessions.append(s.session_id)
        del i
    # "Hours" of readings: 4 meters x 1 Hz x 1 h, in 1-second batches of 4.
    total_thinned = 0
    for second in range(3600):
        batch = [_reading(1000 + second, second) for _ in range(4)]
        result = readings.add_batch(
            conn, batch, device_id="site-1", now=T0, clock_synced=True, max_bytes=cap
        )
        total_thinned += result.readings
    assert used_bytes(conn) <= cap
    assert total_thinned > 0
    assert readings.thinned_total(conn).readings == total_thinned
    assert readings.thinned_total(conn).batches > 0
    kept = {r[0] for r in conn.execute("SELECT session_id FROM sessions")}
    assert kept == set(sessions)
    assert conn.execute("SELECT count(*) FROM session_events").fetchone()[0] == 40
    # Every session event is still queued; the newest readings survived, the oldest went.
    kinds = [r.kind for r in outbox.pending(conn, limit=100_000)]
    assert kinds.count(MessageKind.SESSION) == 40
    oldest, newest, count = conn.execute(
        "SELECT min(ts), max(ts), count(*) FROM readings"
    ).fetchone()
    assert newest == (T0 + timedelta(seconds=3599)).isoformat()
    assert oldest > T0.isoformat()
    assert 0 < count < 4 * 3600
    assert integrity_ok(conn)


def test_key_value_state_round_trips(conn: sqlite3.Connection) -> None:
    assert get_state(conn, "clock_synced_once") is None
    set_state(conn, "clock_synced_once", "1")
    set_state(conn, "clock_synced_once", "2")
    assert get_state(conn, "clock_synced_once") == "2"


def test_large_reading_backlogs_split_into_acceptable_batches(conn: sqlite3.Connection) -> None:
    values = dict.fromkeys(Quantity, 0.1234567)  # as long as 1234.5678, in every quantity's bounds
    batch = [
        MeterReading(meter_id="m1", ts=T0 + timedelta(seconds=i), clock_synced=True, values=values)
        for i in range(1500)
    ]
    readings.add_batch(conn, batch, device_id="site-1", now=T0, clock_synced=True)
    rows = outbox.pending(conn, limit=100)
    assert len(rows) > 1
    total = 0
    for row in rows:
        assert len(row.payload) <= MAX_PAYLOAD_BYTES
        message = parse_message(MessageKind.TELEMETRY, row.payload)
        assert isinstance(message, TelemetryBatch)
        total += len(message.readings)
    assert total == 1500


def test_size_cap_never_thins_decisions_or_their_reports(conn: sqlite3.Connection) -> None:
    cap = 192 * 1024
    decisions = [
        AuthVerdict(status, status.value, CredentialKind.ID_TAG, f"{i:064x}")
        for i, status in enumerate(list(AuthorizationStatus) * 5)
    ]
    for i, decision in enumerate(decisions):
        with transaction(conn):
            record_decision(
                conn,
                decision,
                device_id="site-1",
                connector=1,
                now=T0 + timedelta(seconds=i),
                clock_synced=True,
            )
    thinned = 0
    for second in range(3600):  # an hour of 4 meters at 1 Hz: far over the cap
        batch = [_reading(1000 + second, second) for _ in range(4)]
        thinned += readings.add_batch(
            conn, batch, device_id="site-1", now=T0, clock_synced=True, max_bytes=cap
        ).batches
    assert thinned > 0
    assert used_bytes(conn) <= cap
    reports = [r for r in outbox.pending(conn, limit=100_000) if r.kind is MessageKind.AUTH]
    assert [r.seq for r in reports] == list(range(1, len(decisions) + 1))
    assert conn.execute("SELECT count(*) FROM decisions").fetchone()[0] == len(decisions)
    assert conn.execute(
        "SELECT count(*) FROM decisions d JOIN outbox o ON o.seq = d.outbox_seq"
    ).fetchone()[0] == len(decisions)


def test_a_decision_is_only_recorded_inside_a_transaction(conn: sqlite3.Connection) -> None:
    decision = AuthVerdict(AuthorizationStatus.UNKNOWN, "no", CredentialKind.ID_TAG, "0" * 64)
    with pytest.raises(StoreError, match="transaction"):
        record_decision(conn, decision, device_id="site-1", connector=1, now=T0, clock_synced=True)
    assert outbox.depth(conn) == 0
