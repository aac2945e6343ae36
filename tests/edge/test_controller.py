"""The connector controller with a fake relay, a scripted meter and a real store: the rules
reach the relay, every change lands in the outbox in order."""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import timedelta

import pytest

from edge_agent.auth.decision import AuthVerdict
from edge_agent.relay.failsafe import SafetyLimits
from edge_agent.sessions.controller import ConnectorController
from edge_agent.sessions.machine import Thresholds
from edge_agent.sessions.recovery import Resume, plan_recovery
from edge_agent.store import outbox
from edge_agent.store.sessions import open_sessions
from edge_agent.testing import FakeClock, FakeRelay
from protocols.enums import (
    AuthorizationStatus,
    ConnectorStatus,
    CredentialKind,
    MessageKind,
    SessionEventType,
    StopReason,
)
from protocols.ids import new_ulid
from protocols.messages import MeterReading, SessionEvent, parse_message
from protocols.meters import Quantity

from .conftest import T0

ACCEPTED = AuthVerdict(AuthorizationStatus.ACCEPTED, "ok", CredentialKind.ID_TAG, "a" * 64)


def _status(controller: ConnectorController) -> ConnectorStatus:
    # A function, so mypy does not narrow the status across the awaits that change it.
    return controller.state.status


def _commanded(relay: FakeRelay) -> bool:
    return relay.commanded


class Meter:
    """A scripted meter whose power flows when the fake relay's contacts are closed."""

    def __init__(self, relay: FakeRelay, energy_wh: float = 50_000.0) -> None:
        self.relay = relay
        self.energy_wh = energy_wh
        self.power_w = 7000.0
        self.current_a = 30.0

    def reading(self, dt_s: float) -> MeterReading:
        flowing = self.relay.contacts_closed
        power = self.power_w if flowing else 0.0
        self.energy_wh += power * dt_s / 3600
        return MeterReading(
            meter_id="m1",
            ts=T0,
            clock_synced=True,
            values={
                Quantity.ENERGY_IMPORT_WH: self.energy_wh,
                Quantity.POWER_W: power,
                Quantity.CURRENT_L1_A: self.current_a if flowing else 0.0,
            },
        )


@pytest.fixture
def rig(conn: sqlite3.Connection) -> tuple[ConnectorController, FakeRelay, Meter, FakeClock]:
    time = FakeClock(wall_at_start=T0)
    relay = FakeRelay()
    controller = ConnectorController(
        1,
        relay=relay,
        conn=conn,
        device_id="site-1",
        limits=SafetyLimits(rating_a=32.0),
        thresholds=Thresholds(),
        clocks=time.clocks(),
    )
    return controller, relay, Meter(relay), time


async def _run(rig: tuple[ConnectorController, FakeRelay, Meter, FakeClock], seconds: int) -> None:
    controller, _, meter, time = rig
    for _ in range(seconds):
        time.now += 1.0
        await controller.on_poll(meter.reading(1.0))


def _events(conn: sqlite3.Connection) -> list[SessionEvent]:
    rows = [r for r in outbox.pending(conn, limit=1000) if r.kind is MessageKind.SESSION]
    events = [parse_message(MessageKind.SESSION, r.payload) for r in rows]
    assert all(isinstance(e, SessionEvent) for e in events)
    return events  # type: ignore[return-value]


async def test_charging_scenario_bills_the_register_delta(
    conn: sqlite3.Connection, rig: tuple[ConnectorController, FakeRelay, Meter, FakeClock]
) -> None:
    controller, relay, meter, _ = rig
    await _run(rig, 1)
    start_wh = round(meter.energy_wh)
    result = await controller.start(ACCEPTED)
    assert result.session_id is not None
    assert relay.history == [True]
    await _run(rig, 60)
    assert _status(controller) is ConnectorStatus.CHARGING
    await controller.emit_progress()
    assert await controller.stop(StopReason.LOCAL) is None
    assert relay.history == [True, False]
    stop_wh = round(meter.energy_wh)
    assert _status(controller) is ConnectorStatus.FINISHING
    await _run(rig, 3)  # no power after opening: the relay is confirmed open
    assert _status(controller) is ConnectorStatus.AVAILABLE
    row = conn.execute(
        "SELECT meter_start_wh, meter_stop_wh, energy_wh, stop_reason FROM sessions"
    ).fetchone()
    assert row == (start_wh, stop_wh, stop_wh - start_wh, "Local")
    assert stop_wh - start_wh > 100
    events = _events(conn)
    assert [e.event for e in events] == [
        SessionEventType.STARTED,
        SessionEventType.UPDATED,
        SessionEventType.STOPPED,
    ]
    assert [e.event_seq for e in events] == [1, 2, 3]
    seqs = [e.seq for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    assert events[-1].energy_wh == stop_wh - start_wh


async def test_no_start_without_a_recent_meter_value(
    rig: tuple[ConnectorController, FakeRelay, Meter, FakeClock],
) -> None:
    controller, relay, _, time = rig
    result = await controller.start(ACCEPTED)
    assert result.session_id is None
    await _run(rig, 1)
    time.now += 5
    result = await controller.start(ACCEPTED)
    assert result.session_id is None
    assert "meter" in result.detail
    assert relay.history == []


async def test_silent_meter_opens_the_relay_within_three_seconds(
    conn: sqlite3.Connection, rig: tuple[ConnectorController, FakeRelay, Meter, FakeClock]
) -> None:
    controller, relay, _, time = rig
    await _run(rig, 1)
    await controller.start(ACCEPTED)
    await _run(rig, 10)
    silent_from = time.now
    while _commanded(relay):
        time.now += 0.5
        await controller.on_poll(None)
    assert time.now - silent_from <= 3.5
    assert _events(conn)[-1].stop_reason is StopReason.METER_FAILURE


async def test_overcurrent_stops_after_the_hold_time(
    conn: sqlite3.Connection, rig: tuple[ConnectorController, FakeRelay, Meter, FakeClock]
) -> None:
    controller, relay, meter, _ = rig
    await _run(rig, 1)
    await controller.start(ACCEPTED)
    await _run(rig, 5)
    meter.current_a = 36.0  # > 110 % of 32 A
    await _run(rig, 4)
    assert _commanded(relay)
    await _run(rig, 2)
    assert not _commanded(relay)
    assert _events(conn)[-1].stop_reason is StopReason.OVER_CURRENT


async def test_energy_limit_of_the_credential_stops_the_session(
    conn: sqlite3.Connection, rig: tuple[ConnectorController, FakeRelay, Meter, FakeClock]
) -> None:
    controller, relay, _, _ = rig
    await _run(rig, 1)
    limited = AuthVerdict(
        AuthorizationStatus.ACCEPTED, "ok", CredentialKind.TOKEN, "jti-1", max_wh=50
    )
    await controller.start(limited)
    await _run(rig, 60)  # 7 kW for a minute is ~117 Wh
    assert not _commanded(relay)
    last = _events(conn)[-1]
    assert last.stop_reason is StopReason.ENERGY_LIMIT_REACHED
    assert 50 <= last.energy_wh <= 50 + 2 * 7000 / 3600


async def test_welded_relay_is_detected_and_faults_the_connector(
    conn: sqlite3.Connection, rig: tuple[ConnectorController, FakeRelay, Meter, FakeClock]
) -> None:
    controller, relay, _, _ = rig
    await _run(rig, 1)
    await controller.start(ACCEPTED)
    await _run(rig, 5)
    relay.welded = True
    await controller.stop(StopReason.LOCAL)
    await _run(rig, 1)
    assert _status(controller) is ConnectorStatus.FINISHING
    await _run(rig, 2)
    assert _status(controller) is ConnectorStatus.FAULTED
    assert controller.state.fault is StopReason.STUCK_RELAY
    # The stop was already reported once; the fault does not add a second stop.
    assert [e.event for e in _events(conn)] == [SessionEventType.STARTED, SessionEventType.STOPPED]
    assert (await controller.start(ACCEPTED)).session_id is None
    relay.welded = False
    assert await controller.clear_fault() is None
    assert _status(controller) is ConnectorStatus.AVAILABLE


async def test_relay_that_will_not_close_faults_and_stops(
    conn: sqlite3.Connection, rig: tuple[ConnectorController, FakeRelay, Meter, FakeClock]
) -> None:
    controller, relay, _, _ = rig
    await _run(rig, 1)
    relay.fail = True
    result = await controller.start(ACCEPTED)
    assert _status(controller) is ConnectorStatus.FAULTED
    assert result.session_id is None
    assert [e.event for e in _events(conn)] == [SessionEventType.STARTED, SessionEventType.STOPPED]
    assert conn.execute("SELECT count(*) FROM sessions WHERE stopped_at IS NULL").fetchone()[0] == 0


async def test_site_time_limit_applies_when_the_credential_has_none(
    conn: sqlite3.Connection,
) -> None:
    time = FakeClock(wall_at_start=T0)
    relay = FakeRelay()
    controller = ConnectorController(
        1,
        relay=relay,
        conn=conn,
        device_id="site-1",
        limits=SafetyLimits(rating_a=32.0),
        thresholds=Thresholds(),
        clocks=time.clocks(),
        session_max_s=30,
        session_max_wh=10**6,
    )
    rig = (controller, relay, Meter(relay), time)
    await _run(rig, 1)
    result = await controller.start(ACCEPTED)
    assert result.session_id is not None
    assert controller.session is not None
    assert (controller.session.max_s, controller.session.max_wh) == (30, 10**6)
    await _run(rig, 29)
    assert _commanded(relay)
    await _run(rig, 2)
    assert not _commanded(relay)
    assert _events(conn)[-1].stop_reason is StopReason.TIME_LIMIT_REACHED


async def test_a_session_takes_the_id_its_decision_reserved_and_reported(
    conn: sqlite3.Connection, rig: tuple[ConnectorController, FakeRelay, Meter, FakeClock]
) -> None:
    controller, _, _, _ = rig
    await _run(rig, 1)
    reserved = new_ulid()
    result = await controller.start(replace(ACCEPTED, session_id=reserved))
    assert result.session_id == reserved
    assert [e.session_id for e in _events(conn)] == [reserved]


async def test_a_start_the_wire_contract_refuses_leaves_the_connector_available(
    conn: sqlite3.Connection, rig: tuple[ConnectorController, FakeRelay, Meter, FakeClock]
) -> None:
    """A start whose event cannot be encoded (a booking id longer than the wire allows, from
    a token whose claims are not bounded) is refused like one the store refuses: the relay
    stays open and the connector takes the next driver, instead of hanging in Preparing."""
    controller, relay, _, _ = rig
    await _run(rig, 1)
    token = AuthVerdict(
        AuthorizationStatus.ACCEPTED,
        "ok",
        CredentialKind.TOKEN,
        "j" * 200,
        booking_id="b" * 100,
    )
    result = await controller.start(token)
    assert result.session_id is None
    assert "booking_id" in result.detail
    assert relay.history == []
    assert _status(controller) is ConnectorStatus.AVAILABLE
    assert conn.execute("SELECT count(*) FROM sessions").fetchone()[0] == 0
    # The next driver starts normally; a long jti travels hashed, as its decision did.
    long_jti = replace(token, booking_id="01JBOOKING")
    result = await controller.start(long_jti)
    assert result.session_id is not None
    [event] = _events(conn)
    assert event.credential.ref.startswith("jti-")


async def test_an_extended_booking_keeps_its_session_authorized_longer_never_shorter(
    conn: sqlite3.Connection, rig: tuple[ConnectorController, FakeRelay, Meter, FakeClock]
) -> None:
    """The cloud's ``extend_session``: the open session's authorization (stored with it,
    what recovery after a restart checks) runs to the new end; an earlier end or another
    session changes nothing."""
    controller, _, _, _ = rig
    await _run(rig, 1)
    booked_until = T0 + timedelta(minutes=10)
    decision = replace(ACCEPTED, expires_at=booked_until)
    started = await controller.start(decision)
    assert started.session_id is not None
    session_id = started.session_id
    later = T0 + timedelta(hours=1)

    assert not await controller.extend(new_ulid(), later)  # not this connector's session
    assert await controller.extend(session_id, later)
    assert controller.session is not None
    assert controller.session.auth_expires_at == later
    [stored] = open_sessions(conn)
    assert stored.auth_expires_at == later
    # A late or repeated command with an earlier end does not shorten it.
    assert await controller.extend(session_id, booked_until)
    assert open_sessions(conn)[0].auth_expires_at == later
    # After a restart past the old end, the session is resumed, not closed.
    plan = plan_recovery(
        stored,
        mode="resume",
        live_meter_wh=stored.meter_wh,
        now=T0 + timedelta(minutes=30),
        clock_synced=True,
    )
    assert isinstance(plan, Resume)

    assert await controller.stop(StopReason.LOCAL) is None
    assert not await controller.extend(session_id, later + timedelta(hours=1))  # stopped
