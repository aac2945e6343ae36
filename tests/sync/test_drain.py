"""The outbox reaches the cloud through a real Mosquitto (the project's config, TLS, ACL):
in priority order, through outages and broker crashes, deleted only on application acks."""

from __future__ import annotations

import asyncio
import sqlite3

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.sync.service import SyncService
from edge_agent.testing import Acker, RecordingHandler, close_threaded
from protocols.enums import AuthorizationStatus, MessageKind
from protocols.messages import AuthDecision, SessionEvent, Status, TelemetryBatch
from protocols.pacing import INITIAL_WINDOW
from protocols.topics import topic
from tests.support.certs import Certs
from tests.support.mosquitto import Broker
from tests.sync.rig import (
    DEVICE,
    INGEST_PASSWORD,
    outbox_empty,
    outbox_seqs,
    queue_decision,
    queue_readings,
    queue_session,
    running,
    sync_settings,
    wait_until,
    wall_clock,
)

pytestmark = pytest.mark.integration


def service(
    store: sqlite3.Connection, broker: Broker, certs: Certs, **uplink: float
) -> SyncService:
    assert broker.tls_port is not None
    return SyncService(
        store,
        sync_settings(broker.tls_port, certs.ca, **uplink),
        handler=RecordingHandler(),
        clock=wall_clock(),
    )


def no_gaps(seqs: set[int]) -> bool:
    """1..max all present (seq 0, the broker-sent Last Will, is not part of the sequence)."""
    seqs = seqs - {0}
    return seqs == set(range(1, max(seqs) + 1))


async def test_session_events_and_decisions_jump_the_backlog_and_rows_go_only_on_acks(
    store: sqlite3.Connection, broker: Broker, certs: Certs, acker: Acker
) -> None:
    queue_readings(store, 300)
    sessions = [queue_session(store), queue_session(store)]
    decisions = [queue_decision(store, status) for status in AuthorizationStatus]
    queued = outbox_seqs(store)
    acker.drop_acks = True  # the broker has everything, the cloud commits nothing
    # Not paced: a cloud that acks nothing would get only a window of the backlog (the next
    # test); here every row must reach the broker unacked.
    sync = service(store, broker, certs, ack_timeout_s=3.0, backlog_target_rtt_s=0)
    async with running(sync):
        await wait_until(lambda: queued <= acker.seqs(DEVICE), 20, "every row delivered")
        await asyncio.sleep(0.3)
        assert queued <= outbox_seqs(store), "a PUBACK alone deleted outbox rows"
        acker.drop_acks = False  # unacked rows time out, are resent, and are acked this time
        await wait_until(lambda: outbox_empty(store), 20, "the outbox to empty on acks")
    got = acker.received[DEVICE]
    urgent = sorted(s for s, m in got.by_seq.items() if isinstance(m, SessionEvent | AuthDecision))
    assert len(urgent) == 3 * len(sessions) + len(decisions)
    assert {s for s, m in got.by_seq.items() if isinstance(m, AuthDecision)} == set(decisions)
    assert got.order[: len(urgent)] == urgent  # published before the backlog
    assert no_gaps(set(got.by_seq))


async def test_a_cloud_that_acks_nothing_gets_only_a_window_of_the_backlog(
    store: sqlite3.Connection, broker: Broker, certs: Certs, acker: Acker
) -> None:
    """Pacing (protocols/pacing.py): while no ack comes, at most the pacer's first window of
    backlog awaits one (resends included: timeouts halve it), urgent rows all go; once the
    cloud acks again the window grows back and the whole backlog drains."""
    queue_readings(store, 300)
    sessions = [queue_session(store) for _ in range(3)]
    urgent = 3 * len(sessions)
    queued = outbox_seqs(store)

    def received(kind: type) -> list[int]:
        got = acker.received.get(DEVICE)
        by_seq = {} if got is None else got.by_seq
        return [s for s, m in by_seq.items() if isinstance(m, kind)]

    def readings() -> list[int]:
        return received(TelemetryBatch)

    def events() -> list[int]:
        return received(SessionEvent)

    acker.drop_acks = True
    sync = service(store, broker, certs, ack_timeout_s=3.0)
    async with running(sync):
        await wait_until(lambda: len(events()) == urgent, 20, "the session events")
        await asyncio.sleep(4.0)  # past the ack timeout: resent, not more of the backlog
        assert len(readings()) <= INITIAL_WINDOW
        acker.drop_acks = False
        await wait_until(lambda: outbox_empty(store), 30, "the outbox to empty on acks")
    assert queued <= acker.seqs(DEVICE)


@pytest.mark.slow
async def test_outage_backlog_of_50k_readings_arrives_complete(
    store: sqlite3.Connection, broker: Broker, certs: Certs, acker: Acker
) -> None:
    sync = service(store, broker, certs, backlog_msgs_per_s=5000, backlog_burst=500)
    async with running(sync):
        await wait_until(lambda: sync.stats.connected, 10, "the link to come up")
        broker.stop()  # the site's 4G goes down
        await wait_until(lambda: not sync.stats.connected, 10, "the link to drop")
        queue_session(store, events=4)
        queue_readings(store, 1250, per_batch=20)  # 25,000 readings
        queue_session(store, events=5)
        queue_readings(store, 1250, per_batch=20)  # 50,000 readings in all
        sync.notify()
        queued = outbox_seqs(store)
        broker.start()  # same port, same persistence directory
        await wait_until(lambda: outbox_empty(store), 120, "the backlog to drain")
    got = acker.received[DEVICE]
    assert queued <= set(got.by_seq)
    assert no_gaps(set(got.by_seq))
    readings = sum(len(m.readings) for m in got.by_seq.values() if hasattr(m, "readings"))
    assert readings == 50_000
    # Duplicates only where acks were lost: with every ack delivered, at most a window's worth
    # of rows in flight when a link event happened is sent twice.
    assert got.deliveries - len(got.by_seq) <= sync.settings.uplink.max_unacked


@pytest.mark.slow
@pytest.mark.fault
async def test_broker_killed_five_times_mid_drain_loses_nothing(
    store: sqlite3.Connection, broker: Broker, certs: Certs, acker: Acker
) -> None:
    queue_readings(store, 3000, per_batch=8)
    queue_session(store)
    queued = outbox_seqs(store)
    # A SIGKILLed broker loses its sessions (and what it held for the receiver): those rows
    # come back through the ack timeout, kept short here.
    sync = service(
        store, broker, certs, backlog_msgs_per_s=400, backlog_burst=50, ack_timeout_s=3.0
    )
    async with running(sync):
        for _ in range(5):
            await wait_until(lambda: sync.stats.connected, 15, "the link to come up")
            await asyncio.sleep(0.6)  # mid-drain
            still_queued = queued & outbox_seqs(store)
            assert broker.proc is not None
            broker.proc.kill()  # SIGKILL: no clean shutdown, no persistence flush
            broker.proc.wait()
            broker.proc = None
            # Every row deleted so far was received (and acked) by the cloud side.
            assert queued - still_queued <= acker.seqs(DEVICE)
            assert still_queued, "drained before the kill: slow the drain down"
            broker.start()
        await wait_until(lambda: outbox_empty(store), 120, "the backlog to drain")
    assert queued <= acker.seqs(DEVICE)
    assert no_gaps(acker.seqs(DEVICE))


async def test_lost_acks_are_resent_after_the_ack_timeout(
    store: sqlite3.Connection, broker: Broker, certs: Certs, acker: Acker
) -> None:
    queue_readings(store, 20)
    acker.drop_acks = True
    sync = service(store, broker, certs, ack_timeout_s=1.0)
    async with running(sync):
        await wait_until(lambda: len(acker.seqs(DEVICE)) >= 20, 10, "first delivery")
        acker.drop_acks = False
        await wait_until(lambda: outbox_empty(store), 10, "resend and ack")
    assert sync.stats.resent >= 20
    assert acker.received[DEVICE].deliveries >= 40


async def test_uplink_the_broker_dropped_for_want_of_a_subscriber_is_resent_before_the_timeout(
    store: sqlite3.Connection, broker: Broker, certs: Certs
) -> None:
    """After a broker restart, ingest's subscription is gone until it resubscribes: the
    broker PUBACKs uplink with 0x10 "No matching subscribers" and drops it. The agent resends
    those rows with a short backoff, so once a subscriber is back they arrive and are acked
    long before the ack timeout (300 s here: only the 0x10 path can deliver them in time)."""
    queue_readings(store, 20)
    queue_session(store)
    queued = outbox_seqs(store)
    sync = service(store, broker, certs, ack_timeout_s=300.0)
    async with running(sync):
        # No subscriber on the uplink topics: every row is dropped, at least once each.
        await wait_until(
            lambda: sync.stats.dropped_no_subscribers >= len(queued), 20, "the 0x10 PUBACKs"
        )
        assert queued <= outbox_seqs(store), "a dropped row left the outbox"
        acker = Acker(broker.port, username="cloud-ingest", password=INGEST_PASSWORD)
        try:
            # Far below the ack timeout; not a performance bound.
            await wait_until(lambda: queued.isdisjoint(outbox_seqs(store)), 60, "the resends")
            got = acker.received[DEVICE]
        finally:
            acker.close()
    assert queued <= set(got.by_seq)  # the same rows (same seqs) sent again
    # Every row of the first flight was dropped and resent; the pacer held the rest back
    # until then (drops are not congestion: it neither shrank nor grew).
    assert sync.stats.resent >= min(len(queued), INITIAL_WINDOW)


async def test_status_reports_the_backlog_and_is_retained(
    store: sqlite3.Connection, broker: Broker, certs: Certs, acker: Acker
) -> None:
    queue_readings(store, 5)
    acker.drop_acks = True
    sync = service(store, broker, certs)
    async with running(sync):
        await wait_until(lambda: bool(acker.statuses), 10, "a status message")
        # A subscriber arriving later still gets it: the broker kept it (retained).
        late: list[paho.MQTTMessage] = []
        client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        client.username_pw_set("cloud-ingest", INGEST_PASSWORD)
        client.on_message = lambda _c, _u, message: late.append(message)
        client.connect("127.0.0.1", broker.port)
        client.subscribe(topic(DEVICE, MessageKind.STATUS), qos=1)
        client.loop_start()
        try:
            await wait_until(lambda: bool(late), 10, "the retained status")
        finally:
            close_threaded(client)
    assert late[0].retain
    first = acker.statuses[0]
    assert isinstance(first, Status)
    assert first.online is True
    assert first.backlog is not None
    assert first.backlog.rows == 5
    # The Last Will (online false, seq 0) is seen in tests/sync/test_agent_kill.py.
