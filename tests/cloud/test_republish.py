"""A booking PIN's revocation that never reached the broker — the API died between the
commit and the publish, or its broker connection was down — is published by the republish
job (cloud/sessions/republish.py) to the device's command topic, and marked sent only once
the broker acknowledged it — real API state, PostgreSQL and Mosquitto, a real MQTT client
subscribed as the device."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.accounts.models import Role
from cloud.bookings import pins
from cloud.bookings.models import Booking, BookingStatus
from cloud.pg import PgConnection
from cloud.sessions.republish import GRACE_S, republish_round
from cloud.state import AppState
from edge_agent.testing import close_threaded
from protocols.messages import Command, RevokePins, parse_message
from protocols.topics import topic
from tests.cloud.test_unlock import DEVICE, Site, api  # noqa: F401 -- the fixture
from tests.support.cloud_env import add_device
from tests.support.market import Api, add_user
from tests.support.mosquitto import Broker
from tests.support.sim_device import wait_for

pytestmark = pytest.mark.integration

Received = list[tuple[bytes, Any]]


async def republish_until_one_is_sent(state: AppState, now: datetime) -> int:
    """Run the job's round until it publishes something; how many it published. The API's
    own republish job (every 5 s) holds the rows it looks at locked for a moment, and a round
    meanwhile skips them (SKIP LOCKED)."""
    async with asyncio.timeout(10):
        while True:
            published = await republish_round(state.sessions, state.broker, now=now)
            if published:
                return published
            await asyncio.sleep(0.05)


@contextmanager
def device_listening(broker: Broker) -> Iterator[tuple[paho.Client, Received, asyncio.Event]]:
    """A real MQTT client as DEVICE, subscribing to its command topic; the event is set once
    the broker granted the subscription."""
    received: Received = []
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=DEVICE, protocol=paho.MQTTv5)
    client.username_pw_set(DEVICE, add_device(broker, DEVICE))
    client.on_message = lambda _c, _u, m: received.append((bytes(m.payload), m.properties))
    subscribed = asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_subscribe(*_args: object) -> None:
        loop.call_soon_threadsafe(subscribed.set)

    client.on_subscribe = on_subscribe
    client.on_connect = lambda c, *_a: c.subscribe(topic(DEVICE, "cmd"), qos=1)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        yield client, received, subscribed
    finally:
        close_threaded(client)


async def test_a_revocation_recorded_but_never_published_is_published_by_the_job(
    api: Api,  # noqa: F811 -- the fixture imported above
    pg: PgConnection,
    broker: Broker,
) -> None:
    state = api.app.state.cloud
    assert isinstance(state, AppState)
    host = await add_user(pg, api.settings, Role.HOST)
    driver = await add_user(pg, api.settings, Role.DRIVER)
    site = await Site(pg, host).create(online=True)
    now = datetime.now(UTC)
    booking_id = await site.book(driver, now + timedelta(hours=1), now + timedelta(hours=2))
    # The booking had a PIN and is cancelled: the cancel's transaction records the
    # revocation, commits, and the process dies before publishing it.
    async with state.sessions() as db, db.begin():
        booking = await db.get(Booking, booking_id)
        assert booking is not None
        await pins.booking_pin(db, booking, device_id=DEVICE, connector=1, secret=b"s" * 32)
        booking.status = BookingStatus.CANCELLED
        await db.flush()
        prepared = await pins.revocation(db, booking, now=now)
    assert prepared is not None
    ref = booking.pin_ref
    unsent = await pg.fetchval(
        "SELECT sent_at IS NULL FROM device_commands WHERE cmd_id = $1", prepared.command.cmd_id
    )
    assert unsent

    with device_listening(broker) as (_client, received, subscribed):
        await asyncio.wait_for(subscribed.wait(), 10)
        # Within the grace the job leaves it to the request that recorded it.
        assert await republish_round(state.sessions, state.broker, now=now) == 0
        later = now + timedelta(seconds=GRACE_S + 1)
        assert await republish_until_one_is_sent(state, later) == 1
        for _ in range(200):
            if received:
                break
            await asyncio.sleep(0.05)
        # Published once: the next round finds nothing left to send.
        assert await republish_round(state.sessions, state.broker, now=later) == 0

    assert len(received) == 1
    payload, properties = received[0]
    command = parse_message("cmd", payload)
    assert isinstance(command, Command)
    assert command.cmd_id == prepared.command.cmd_id
    assert isinstance(command.action, RevokePins)
    assert [p.ref for p in command.action.pins] == [ref]
    assert command.seq > prepared.command.seq  # a fresh downlink seq
    assert 0 < properties.MessageExpiryInterval <= prepared.ttl_s
    sent = await pg.fetchval(
        "SELECT sent_at FROM device_commands WHERE cmd_id = $1", command.cmd_id
    )
    assert sent == later


async def test_a_revocation_made_while_the_broker_is_down_is_not_sent_until_it_is_back(
    api: Api,  # noqa: F811 -- the fixture imported above
    pg: PgConnection,
    broker: Broker,
) -> None:
    """The cancel's own publish finds no broker connection: the revocation stays unsent (it
    was once marked sent on the strength of paho's queue, so the job never sent it, and a
    restart of the API lost it), and the job delivers it once the broker is back."""
    state = api.app.state.cloud
    assert isinstance(state, AppState)
    host = await add_user(pg, api.settings, Role.HOST)
    driver = await add_user(pg, api.settings, Role.DRIVER)
    site = await Site(pg, host).create(online=True)
    now = datetime.now(UTC)
    booking_id = await site.book(driver, now + timedelta(hours=1), now + timedelta(hours=2))
    async with state.sessions() as db, db.begin():
        booking = await db.get(Booking, booking_id)
        assert booking is not None
        await pins.booking_pin(db, booking, device_id=DEVICE, connector=1, secret=b"s" * 32)
    await wait_for(lambda: state.broker.connected, timeout_s=10)

    broker.stop()
    await wait_for(lambda: not state.broker.connected, timeout_s=10)
    cancelled = await api.client.post(f"/bookings/{booking_id}/cancel", headers=driver.headers)
    assert cancelled.status_code == 200, cancelled.text
    (row,) = await pg.fetch(
        "SELECT cmd_id, sent_at FROM device_commands WHERE device_id = $1 AND name = $2",
        DEVICE,
        "revoke_pins",
    )
    assert row["sent_at"] is None
    # Nothing is taken while the link is down.
    later = datetime.now(UTC) + timedelta(seconds=GRACE_S + 1)
    assert await republish_round(state.sessions, state.broker, now=later) == 0

    broker.start()
    await wait_for(lambda: state.broker.connected, timeout_s=30)
    with device_listening(broker) as (_client, received, subscribed):
        await asyncio.wait_for(subscribed.wait(), 10)
        # The job's round (run here rather than waited for: GRACE_S is ten seconds).
        assert await republish_until_one_is_sent(state, later) == 1
        await wait_for(lambda: bool(received), timeout_s=10)
    commands = [parse_message("cmd", payload) for payload, _ in received]
    assert [c.cmd_id for c in commands if isinstance(c, Command)] == [row["cmd_id"]]
    sent = await pg.fetchval("SELECT sent_at FROM device_commands WHERE cmd_id = $1", row["cmd_id"])
    assert sent is not None


async def test_no_database_lock_is_held_while_the_broker_acknowledges(
    api: Api,  # noqa: F811 -- the fixture imported above
    pg: PgConnection,
    broker: Broker,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The round commits its seqs before publishing: while a PUBACK is awaited, the device's
    downlink_sequences row and the command's row can be locked by someone else (ingest, an
    unlock), and the acknowledged command is marked sent afterwards."""
    state = api.app.state.cloud
    assert isinstance(state, AppState)
    host = await add_user(pg, api.settings, Role.HOST)
    driver = await add_user(pg, api.settings, Role.DRIVER)
    site = await Site(pg, host).create(online=True)
    now = datetime.now(UTC)
    booking_id = await site.book(driver, now + timedelta(hours=1), now + timedelta(hours=2))
    async with state.sessions() as db, db.begin():
        booking = await db.get(Booking, booking_id)
        assert booking is not None
        await pins.booking_pin(db, booking, device_id=DEVICE, connector=1, secret=b"s" * 32)
        booking.status = BookingStatus.CANCELLED
        await db.flush()
        prepared = await pins.revocation(db, booking, now=now)
    assert prepared is not None
    cmd_id = prepared.command.cmd_id
    await wait_for(lambda: state.broker.connected, timeout_s=10)

    free_during_publish: list[bool] = []
    real_publish = state.broker.publish

    async def publish(*args: Any, **kwargs: Any) -> None:
        async with pg.transaction():
            await pg.execute("SET LOCAL lock_timeout = '2s'")
            seq_rows = await pg.fetch(
                "SELECT 1 FROM downlink_sequences WHERE device_id = $1 FOR UPDATE", DEVICE
            )
            cmd_rows = await pg.fetch(
                "SELECT 1 FROM device_commands WHERE cmd_id = $1 FOR UPDATE", cmd_id
            )
            free_during_publish.append(len(seq_rows) == 1 and len(cmd_rows) == 1)
        await real_publish(*args, **kwargs)

    monkeypatch.setattr(state.broker, "publish", publish)
    later = now + timedelta(seconds=GRACE_S + 1)
    assert await republish_until_one_is_sent(state, later) == 1
    assert free_during_publish == [True]
    sent = await pg.fetchval("SELECT sent_at FROM device_commands WHERE cmd_id = $1", cmd_id)
    assert sent == later
