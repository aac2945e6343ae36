"""The OCPP uplink's pure parts and its durable queue on a real store file: OCPP-J framing,
the configuration keys, and the transaction-message queue (order, transaction ids, CallError
attempts and retry interval, giving up) with a scripted CSMS call and a fake clock."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from edge_agent.auth.decision import AuthVerdict
from edge_agent.config import OcppSettings, build, parse_config
from edge_agent.errors import ConfigError, OcppCallFailed, OcppFrameError
from edge_agent.ocpp import frames
from edge_agent.ocpp.keys import Change, KeyStore, core_keys
from edge_agent.ocpp.transactions import TransactionQueue
from edge_agent.relay.failsafe import SafetyLimits
from edge_agent.sessions.controller import ConnectorController
from edge_agent.sessions.machine import EmitSessionEvent, Session, Thresholds
from edge_agent.store import ocpp as queue
from edge_agent.store.db import connect
from edge_agent.store.sessions import EventContext, record_event
from edge_agent.testing import FakeClock, FakeRelay
from protocols.enums import (
    AuthorizationStatus,
    ConnectorStatus,
    CredentialKind,
    SessionEventType,
    StopReason,
)
from protocols.ids import new_ulid
from protocols.idtags import hash_id_tag
from protocols.messages import CredentialRef, MeterReading
from protocols.meters import Quantity

from .conftest import T0

TAG = "04A2B3C4D5"


def _settings(**over: Any) -> OcppSettings:
    return build(OcppSettings, {"url": "ws://127.0.0.1:9/ocpp", "security_profile": 0, **over})


def _keys(conn: sqlite3.Connection, **over: Any) -> KeyStore:
    return KeyStore(conn, core_keys(_settings(**over), connectors=1), initial_key=None)


class Csms:
    """A scripted CSMS: answers or refuses each call, and keeps what it was sent."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.refuse: dict[str, int] = {}
        self.next_id = 7
        #: The idTagInfo status StartTransaction is answered with.
        self.start_status = "Accepted"

    async def __call__(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        self.calls.append((action, payload))
        if self.refuse.get(action, 0) > 0:
            self.refuse[action] -= 1
            raise OcppCallFailed(action, "InternalError", "scripted")
        if action == "StartTransaction":
            self.next_id += 1
            return {"transactionId": self.next_id, "idTagInfo": {"status": self.start_status}}
        return {} if action == "MeterValues" else {"idTagInfo": {"status": "Accepted"}}


def _ctx() -> EventContext:
    return EventContext(device_id="site-test", now=T0, clock_synced=True, offline=True)


def _charge(conn: sqlite3.Connection, *, samples: int = 1, start_wh: int = 1000) -> Session:
    """Record one whole session (started, ``samples`` updates, stopped) in the store."""
    session = Session(
        session_id=new_ulid(),
        connector=1,
        credential=CredentialRef(kind=CredentialKind.ID_TAG, ref=hash_id_tag(TAG)),
        started_at=T0,
        started_mono=0.0,
        meter_start_wh=start_wh,
        meter_wh=start_wh,
        max_meter_wh=start_wh,
    )
    record_event(conn, EmitSessionEvent(SessionEventType.STARTED, session), _ctx())
    for i in range(1, samples + 1):
        session = replace(session.with_meter(start_wh + 100 * i, 7200.0), event_seq=i + 1)
        record_event(conn, EmitSessionEvent(SessionEventType.UPDATED, session), _ctx())
    session = replace(
        session,
        event_seq=session.event_seq + 1,
        stopped_at=T0 + timedelta(minutes=5),
        stop_reason=StopReason.REMOTE,
    )
    record_event(conn, EmitSessionEvent(SessionEventType.STOPPED, session), _ctx())
    return session


def _queue(conn: sqlite3.Connection, clock: FakeClock, **over: Any) -> TransactionQueue:
    async def deauthorize(session_id: str) -> None:
        raise AssertionError("not expected")

    return TransactionQueue(
        conn, _keys(conn, **over), foreign_id_tag="ChargeMitra", deauthorize=deauthorize, mono=clock
    )


async def _drain(q: TransactionQueue, csms: Csms, clock: FakeClock) -> None:
    for _ in range(100):
        q.fill()
        if not await q.send_head(csms):
            if q.depth() == 0:
                return
            clock.now += 1.0
    raise AssertionError("the queue did not drain")


# --- framing ---------------------------------------------------------------------------------


def test_frames_round_trip_and_a_bad_call_keeps_its_id() -> None:
    for frame in (
        frames.Call("a1", "Heartbeat", {}),
        frames.CallResult("a2", {"currentTime": "2026-03-01T10:00:00Z"}),
        frames.CallError("a3", "NotSupported", "no", {"k": 1}),
    ):
        assert frames.decode(frames.encode(frame)) == frame
    with pytest.raises(OcppFrameError) as caught:
        frames.decode('[2, "id-9", "Reset"]')
    assert caught.value.unique_id == "id-9"
    for bad in ("not json", "{}", '[5, "x", {}]', '[3, "", {}]', '[3, "' + "x" * 37 + '", {}]'):
        with pytest.raises(OcppFrameError):
            frames.decode(bad)


# --- configuration keys ----------------------------------------------------------------------


def test_keys_are_checked_kept_in_the_store_and_the_authorization_key_is_write_only(
    db_path: Path,
) -> None:
    conn = connect(db_path)
    keys = _keys(conn)
    assert keys.change("HeartbeatInterval", "45") == (Change.ACCEPTED, False)
    assert keys.change("HeartbeatInterval", "-1")[0] is Change.REJECTED
    assert (
        keys.change("MeterValuesSampledData", "Energy.Active.Import.Register")[0] is Change.ACCEPTED
    )
    assert keys.change("MeterValuesSampledData", "Voltage")[0] is Change.REJECTED
    assert keys.change("NumberOfConnectors", "2")[0] is Change.REJECTED
    assert keys.change("Nope", "1")[0] is Change.NOT_SUPPORTED
    assert keys.change("AuthorizationKey", "short")[0] is Change.REJECTED
    assert keys.change("AuthorizationKey", "a-new-key-of-20chars") == (Change.ACCEPTED, True)
    assert keys.value("AuthorizationKey") is None
    conn.close()
    again = _keys(connect(db_path))
    assert again.value("HeartbeatInterval") == "45"
    assert again.value("MeterValuesSampledData") == "Energy.Active.Import.Register"
    assert again.authorization_key == "a-new-key-of-20chars"


# --- the transaction queue -------------------------------------------------------------------


async def test_a_session_goes_in_order_and_its_stop_carries_the_csms_transaction_id(
    conn: sqlite3.Connection,
) -> None:
    queue.cursor(conn)  # the uplink enabled before the session
    queue.remember_id_tag(conn, TAG)
    session = _charge(conn, samples=2)
    clock, csms = FakeClock(100.0), Csms()
    q = _queue(conn, clock, meter_value_sample_interval_s=0)
    assert q.fill() == 4
    assert q.fill() == 0  # nothing is queued twice
    assert [r[0] for r in conn.execute("SELECT action FROM ocpp_queue ORDER BY id")] == [
        "StartTransaction",
        "StopTransaction",
    ]  # MeterValueSampleInterval 0: no samples
    await _drain(q, csms, clock)
    (start_action, start), (stop_action, stop) = csms.calls
    assert (start_action, stop_action) == ("StartTransaction", "StopTransaction")
    assert start["idTag"] == stop["idTag"] == TAG
    assert stop["transactionId"] == 8
    assert stop["meterStop"] - start["meterStart"] == session.energy_wh == 200
    assert stop["reason"] == "Remote"
    assert queue.transaction_of(conn, session.session_id) == 8
    # The tag in clear is no longer needed once the stop is delivered.
    assert queue.session_id_tag(conn, session.session_id) is None


class Killed(BaseException):
    """The process dying (kill -9) at this point: nothing after it runs."""


async def test_a_refusal_survives_a_kill_before_the_stop_and_is_acted_on_at_the_next_start(
    conn: sqlite3.Connection,
) -> None:
    queue.cursor(conn)
    queue.remember_id_tag(conn, TAG)
    session = Session(
        session_id=new_ulid(),
        connector=1,
        credential=CredentialRef(kind=CredentialKind.ID_TAG, ref=hash_id_tag(TAG)),
        started_at=T0,
        started_mono=0.0,
        meter_start_wh=1000,
        meter_wh=1000,
        max_meter_wh=1000,
    )
    record_event(conn, EmitSessionEvent(SessionEventType.STARTED, session), _ctx())
    clock, csms = FakeClock(100.0), Csms()
    csms.start_status = "Invalid"

    async def killed(session_id: str) -> None:
        raise Killed  # the CSMS's answer is committed; the agent dies before the stop

    first = TransactionQueue(
        conn, _keys(conn), foreign_id_tag="ChargeMitra", deauthorize=killed, mono=clock
    )
    assert first.fill() == 1
    with pytest.raises(Killed):
        await first.send_head(csms)
    assert first.depth() == 0  # delivered: the StartTransaction is not sent again
    # The next start: the refusal is in the store and the open session is stopped.
    stopped: list[str] = []

    async def deauthorize(session_id: str) -> None:
        stopped.append(session_id)

    again = TransactionQueue(
        conn, _keys(conn), foreign_id_tag="ChargeMitra", deauthorize=deauthorize, mono=clock
    )
    assert await again.stop_refused() == 1
    assert stopped == [session.session_id]
    # Acted on once: later starts leave it alone.
    assert await again.stop_refused() == 0
    assert stopped == [session.session_id]
    assert conn.execute(
        "SELECT refused FROM ocpp_transactions WHERE session_id = ?", (session.session_id,)
    ).fetchone() == ("Invalid",)


async def test_callerrors_are_retried_by_the_configured_interval_then_given_up(
    conn: sqlite3.Connection,
) -> None:
    queue.cursor(conn)
    _charge(conn, samples=1)
    clock, csms = FakeClock(100.0), Csms()
    q = _queue(conn, clock, transaction_message_attempts=3, transaction_message_retry_interval_s=10)
    q.fill()
    assert await q.send_head(csms)  # StartTransaction
    csms.refuse["MeterValues"] = 5
    assert await q.send_head(csms)  # refused: attempt 1
    assert q.wait_s() == 10
    assert not await q.send_head(csms)  # waits: not sent again
    clock.now += 9.5
    assert not await q.send_head(csms)
    clock.now += 0.5
    assert await q.send_head(csms)  # attempt 2, then 2 x the interval
    assert q.wait_s() == 20
    clock.now += 20
    assert await q.send_head(csms)  # attempt 3: given up
    assert [a for a, _ in csms.calls] == ["StartTransaction"] + ["MeterValues"] * 3
    assert q.given_up == 1
    assert await q.send_head(csms)  # the stop goes on
    assert csms.calls[-1][0] == "StopTransaction"
    assert q.depth() == 0


async def test_a_start_given_up_takes_its_session_with_it_and_no_stop_names_an_unknown_id(
    conn: sqlite3.Connection,
) -> None:
    queue.cursor(conn)
    _charge(conn, samples=1)
    second = _charge(conn, samples=0, start_wh=5000)
    clock, csms = FakeClock(100.0), Csms()
    csms.refuse["StartTransaction"] = 2
    q = _queue(conn, clock, transaction_message_attempts=2, transaction_message_retry_interval_s=0)
    await _drain(q, csms, clock)
    actions = [a for a, _ in csms.calls]
    assert actions == ["StartTransaction"] * 3 + ["StopTransaction"]
    assert csms.calls[-1][1]["transactionId"] == 8
    assert queue.transaction_of(conn, second.session_id) == 8


async def test_no_answer_is_not_an_attempt_and_the_message_stays(conn: sqlite3.Connection) -> None:
    queue.cursor(conn)
    _charge(conn, samples=0)
    clock = FakeClock(100.0)
    q = _queue(conn, clock, transaction_message_attempts=1)

    async def silent(action: str, payload: dict[str, Any]) -> dict[str, Any]:
        raise OcppCallFailed(action, None)

    q.fill()
    for _ in range(3):
        with pytest.raises(OcppCallFailed):
            await q.send_head(silent)
    assert q.depth() == 2
    assert [r[0] for r in conn.execute("SELECT attempts FROM ocpp_queue")] == [0, 0]


def test_the_cursor_starts_at_the_newest_event_when_the_uplink_is_first_enabled(
    conn: sqlite3.Connection,
) -> None:
    _charge(conn, samples=1)  # history, before the uplink
    q = _queue(conn, FakeClock(100.0))
    assert q.fill() == 0
    assert q.depth() == 0
    _charge(conn, samples=0)
    assert q.fill() == 2
    # A session started by a credential without a tag in clear reports the foreign tag.
    (payload,) = [
        r[0]
        for r in conn.execute("SELECT payload FROM ocpp_queue WHERE action = 'StartTransaction'")
    ]
    assert '"idTag": "ChargeMitra"' in payload


# --- the [ocpp] table ------------------------------------------------------------------------


async def test_a_backlog_longer_than_a_page_is_queued_to_its_end_without_a_new_event(
    conn: sqlite3.Connection,
) -> None:
    q = _queue(conn, FakeClock(100.0))
    assert q.fill() == 0  # the uplink enabled: its cursor starts here
    _charge(conn, samples=queue.EVENTS_PAGE + 50)  # recorded while the uplink was off
    assert q.fill() == queue.EVENTS_PAGE  # one page per transaction
    assert await q.fill_all() == 52  # the rest: start + 250 updates + stop = 252 in all
    assert q.fill() == 0
    assert await q.fill_all() == 0


@pytest.mark.parametrize(
    ("table", "field"),
    [
        (
            {
                "url": "ws://csms.example/ocpp",
                "security_profile": 2,
                "authorization_key_file": "/k",
            },
            "url",
        ),
        (
            {
                "url": "wss://csms.example/ocpp",
                "security_profile": 1,
                "authorization_key_file": "/k",
            },
            "security_profile",
        ),
        ({"url": "wss://csms.example/ocpp"}, "authorization_key_file"),
        ({"url": "ws://csms.example/ocpp", "security_profile": 0}, "security_profile"),
        ({"url": "http://csms.example/ocpp", "security_profile": 0}, "url"),
        # urlsplit (what the client connects to) reads csms.example as the host here.
        ({"url": "ws://127.0.0.1:1@csms.example/ocpp", "security_profile": 0}, "url"),
        ({"url": "ws://localhost@csms.example/ocpp", "security_profile": 0}, "url"),
        ({"url": "ws://[::1]:1@csms.example/ocpp", "security_profile": 0}, "url"),
        ({"url": "wss://cp:secret@csms.example/ocpp", "authorization_key_file": "/k"}, "url"),
    ],
)
def test_an_ocpp_table_that_breaks_a_security_rule_is_refused_naming_the_field(
    tmp_path: Path, table: dict[str, Any], field: str
) -> None:
    document = {
        "device_id": "site-1",
        "meters": [{"id": "m1", "model": "sdm630", "link": {"transport": "tcp", "host": "h"}}],
        "connectors": [{"id": 1, "meter": "m1", "max_current_a": 32, "relay": {"driver": "none"}}],
        "ocpp": table,
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(document, source="test")
    assert any(p.field == f"ocpp.{field}" for p in caught.value.problems), caught.value.problems
    assert "secret" not in str(caught.value), "a password in the URL is never echoed"
    profile1 = {
        "url": "ws://csms.example/ocpp",
        "security_profile": 1,
        "authorization_key_file": "/k",
    }
    assert parse_config({**document, "ocpp": profile1}, source="test").ocpp is not None


def test_samples_follow_meter_value_sample_interval_with_progress_jitter(
    conn: sqlite3.Connection,
) -> None:
    queue.cursor(conn)
    session = Session(
        session_id=new_ulid(),
        connector=1,
        credential=CredentialRef(kind=CredentialKind.ID_TAG, ref=hash_id_tag(TAG)),
        started_at=T0,
        started_mono=0.0,
        meter_start_wh=1000,
        meter_wh=1000,
        max_meter_wh=1000,
    )
    record_event(conn, EmitSessionEvent(SessionEventType.STARTED, session), _ctx())
    for i, after_s in enumerate((59.5, 119.0, 150.0, 181.0), start=2):
        session = replace(session.with_meter(1000 + i, 7000.0), event_seq=i)
        ctx = EventContext(
            device_id="site-test",
            now=T0 + timedelta(seconds=after_s),
            clock_synced=True,
            offline=True,
        )
        record_event(conn, EmitSessionEvent(SessionEventType.UPDATED, session), ctx)
    q = _queue(conn, FakeClock(100.0), meter_value_sample_interval_s=60)
    q.fill()
    samples = [
        json.loads(p)["meterValue"][0]["sampledValue"][0]["value"]
        for (p,) in conn.execute("SELECT payload FROM ocpp_queue WHERE action = 'MeterValues'")
    ]
    # 59.5 s and 119 s apart (a little early: still a sample), 150 s too soon, 181 s again.
    assert samples == ["1002", "1003", "1005"]


# --- what wakes the uplink ---------------------------------------------------------------------


async def test_a_connector_tells_its_subscribers_each_status_change_and_each_recorded_event(
    conn: sqlite3.Connection,
) -> None:
    """The uplink sleeps until told (no 1 Hz diff of the connectors, no polling of the store):
    the status callback comes once per change of status, the events callback once per
    session event in the store."""
    clock = FakeClock()
    relay = FakeRelay()
    controller = ConnectorController(
        1,
        relay=relay,
        conn=conn,
        device_id="site-test",
        limits=SafetyLimits(rating_a=32.0),
        thresholds=Thresholds(),
        clocks=clock.clocks(),
    )
    statuses: list[ConnectorStatus] = []
    recorded = [0]

    def on_event() -> None:
        recorded[0] += 1

    controller.subscribe(status=lambda: statuses.append(controller.state.status), events=on_event)
    energy_wh = 50_000.0

    async def poll(seconds: int) -> None:
        nonlocal energy_wh
        for _ in range(seconds):
            clock.advance(1.0)
            power_w = 7000.0 if relay.contacts_closed else 0.0
            energy_wh += power_w / 3600
            values = {
                Quantity.ENERGY_IMPORT_WH: energy_wh,
                Quantity.POWER_W: power_w,
                Quantity.CURRENT_L1_A: 30.0 if power_w else 0.0,
            }
            reading = MeterReading(meter_id="m1", ts=T0, clock_synced=True, values=values)
            await controller.on_poll(reading)

    await poll(3)
    assert (statuses, recorded[0]) == ([], 0)  # readings alone change nothing
    verdict = AuthVerdict(AuthorizationStatus.ACCEPTED, "ok", CredentialKind.ID_TAG, "a" * 64)
    assert (await controller.start(verdict)).session_id is not None
    await poll(3)
    await controller.emit_progress()
    assert await controller.stop(StopReason.REMOTE) is None
    await poll(5)
    assert statuses == [
        ConnectorStatus.PREPARING,
        ConnectorStatus.CHARGING,
        ConnectorStatus.FINISHING,
        ConnectorStatus.AVAILABLE,
    ]
    (events,) = conn.execute("SELECT count(*) FROM session_events").fetchone()
    assert recorded[0] == events == 3  # started, updated, stopped


async def test_a_failing_subscriber_does_not_stop_the_relay_closing(
    conn: sqlite3.Connection,
) -> None:
    """Subscribers are observers: the step's relay effect runs after the assignment that tells
    them, so one that raises is logged and the session still starts."""
    clock = FakeClock()
    relay = FakeRelay()
    controller = ConnectorController(
        1,
        relay=relay,
        conn=conn,
        device_id="site-test",
        limits=SafetyLimits(rating_a=32.0),
        thresholds=Thresholds(),
        clocks=clock.clocks(),
    )

    def broken() -> None:
        raise RuntimeError("observer bug")

    controller.subscribe(status=broken, events=broken)
    clock.advance(1.0)
    values = {Quantity.ENERGY_IMPORT_WH: 50_000.0, Quantity.POWER_W: 0.0}
    await controller.on_poll(MeterReading(meter_id="m1", ts=T0, clock_synced=True, values=values))
    verdict = AuthVerdict(AuthorizationStatus.ACCEPTED, "ok", CredentialKind.ID_TAG, "a" * 64)
    assert (await controller.start(verdict)).session_id is not None
    assert relay.contacts_closed
