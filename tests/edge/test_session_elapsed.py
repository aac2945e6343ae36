"""A session's time is measured by the monotonic clock, across restarts: the ``stopped``
event reports ``elapsed_s`` whatever the wall clock did (``[clock] offset_file`` steps it,
tests/edge/test_stepped_clock.py) — on the real machine and store."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from edge_agent.clock import SteppedWallClock
from edge_agent.sessions.machine import (
    Authorize,
    Connector,
    EmitSessionEvent,
    Stop,
    step,
)
from edge_agent.store.sessions import EventContext, open_sessions, record_event, update_meter
from protocols.enums import CredentialKind, StopReason
from protocols.ids import new_ulid
from protocols.messages import CredentialRef, SessionEvent

from .conftest import T0

CHARGER = "site-1"


def _record(
    conn: sqlite3.Connection, effects: tuple[object, ...], ctx: EventContext
) -> list[SessionEvent]:
    return [record_event(conn, e, ctx) for e in effects if isinstance(e, EmitSessionEvent)]


def test_a_wall_clock_stepped_back_mid_session_does_not_shorten_its_elapsed_time(
    conn: sqlite3.Connection, tmp_path: Path
) -> None:
    offset = tmp_path / "offset"
    wall = SteppedWallClock(offset)
    started = wall()
    ctx = EventContext(device_id=CHARGER, now=started, clock_synced=True, offline=False)
    credential = CredentialRef(kind=CredentialKind.ID_TAG, ref="tag-1")
    state, effects = step(
        Connector(1), Authorize(new_ulid(), credential, started, mono=100.0, meter_wh=1000)
    )
    _record(conn, effects, ctx)
    # 30 minutes later by the monotonic clock, NTP steps the wall clock back two hours.
    offset.write_text("-7200")
    stopped_wall = wall()
    assert stopped_wall < started
    state, effects = step(state, Stop(StopReason.REMOTE, stopped_wall, 1900.0, 2500))
    [event] = _record(conn, effects, replace(ctx, now=stopped_wall))
    assert event.stopped_at is not None
    assert event.stopped_at < event.started_at
    assert event.elapsed_s == 1800.0
    # The outbox carries it on the wire; an older cloud ignores the field.
    payload = conn.execute("SELECT payload FROM session_events WHERE event = 'stopped'").fetchone()[
        0
    ]
    assert json.loads(payload)["elapsed_s"] == 1800.0


def test_elapsed_time_survives_a_restart_from_the_store(conn: sqlite3.Connection) -> None:
    ctx = EventContext(device_id=CHARGER, now=T0, clock_synced=True, offline=False)
    credential = CredentialRef(kind=CredentialKind.ID_TAG, ref="tag-1")
    state, effects = step(
        Connector(1), Authorize(new_ulid(), credential, T0, mono=100.0, meter_wh=1000)
    )
    _record(conn, effects, ctx)
    assert state.session is not None
    # A reading batch 10 minutes in keeps its elapsed time current; then the agent dies.
    update_meter(conn, state.session, now=T0 + timedelta(minutes=10), mono=700.0)
    # After a reboot the monotonic clock starts again near zero; the wall clock jumped ahead.
    [resumed] = open_sessions(conn, started_mono=5.0)
    assert resumed.elapsed_before_s == 600.0
    later = T0 + timedelta(hours=5)
    _, effects = step(
        Connector(1, session=resumed, status=state.status),
        Stop(StopReason.LOCAL, later, 305.0, 1500),
    )
    [event] = _record(conn, effects, replace(ctx, now=later))
    assert event.elapsed_s == 900.0  # 10 minutes before the restart, 5 after
    assert conn.execute("SELECT elapsed_s FROM sessions").fetchone()[0] == 900.0
