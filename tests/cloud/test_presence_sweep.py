"""Devices that fell silent are marked offline (cloud/devices/silence.py): the sweep itself
against PostgreSQL, and the ingest worker's job end to end — a device gone without its Last
Will reaching the database, which before stayed flagged "online" for ever."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pytest

from cloud.accounts.models import Role
from cloud.devices.silence import mark_silent_offline
from cloud.ingest.decode import decode
from cloud.ingest.plan import plan_batch
from cloud.ingest.writer import write_batch
from cloud.pg import PgConnection, close, connect
from cloud.settings import DbSettings
from cloud.workers.ingest import open_ingest_worker
from edge_agent.testing import close_sockets
from protocols.enums import MessageKind
from protocols.messages import encode_message
from protocols.testing import status
from protocols.topics import topic
from tests.support.bookings_fixtures import ListedCharger, add_charger
from tests.support.cloud_env import add_device, make_settings
from tests.support.market import Api, add_user
from tests.support.mosquitto import Broker
from tests.support.sim_device import SimDevice

pytestmark = pytest.mark.integration

OFFLINE_AFTER_S = 180
GRACE_S = 300


async def _charger(pg: PgConnection, api: Api, *, online: bool, seen_s_ago: float) -> str:
    host = await add_user(pg, api.settings, Role.HOST)
    charger: ListedCharger = await add_charger(pg, host)
    assert charger.device_id is not None
    await pg.execute(
        "UPDATE devices SET online = $2, last_seen_at = now() - make_interval(secs => $3) "
        "WHERE id = $1",
        charger.device_id,
        online,
        seen_s_ago,
    )
    return charger.device_id


async def _flags(pg: PgConnection, device_id: str) -> tuple[bool, bool]:
    """(devices.online, chargers.device_online) of ``device_id``."""
    (row,) = await pg.fetch(
        "SELECT d.online, c.device_online FROM devices d JOIN chargers c ON c.device_id = d.id "
        "WHERE d.id = $1",
        device_id,
    )
    return row["online"], row["device_online"]


async def _offline_events(pg: PgConnection) -> list[dict[str, object]]:
    rows = await pg.fetch(
        "SELECT subject_id, facts, not_before FROM notification_events "
        "WHERE kind = 'charger_offline' ORDER BY id"
    )
    return [
        {"device": r["subject_id"], **json.loads(r["facts"]), "at": r["not_before"]} for r in rows
    ]


async def _sweep(pg: PgConnection) -> list[str]:
    return await mark_silent_offline(pg, offline_after_s=OFFLINE_AFTER_S, offline_grace_s=GRACE_S)


async def test_silent_devices_are_marked_offline_once_and_their_hosts_told(
    pg: PgConnection, market_api: Api
) -> None:
    silent = await _charger(pg, market_api, online=True, seen_s_ago=OFFLINE_AFTER_S + 20)
    heard = await _charger(pg, market_api, online=True, seen_s_ago=OFFLINE_AFTER_S - 20)
    gone = await _charger(pg, market_api, online=False, seen_s_ago=3600)  # its will applied
    seen = await pg.fetchval("SELECT last_seen_at FROM devices WHERE id = $1", silent)

    assert await _sweep(pg) == [silent]
    assert await _flags(pg, silent) == (False, False)  # the charger follows (migration 0022)
    assert await _flags(pg, heard) == (True, True)
    assert await _flags(pg, gone) == (False, False)
    events = await _offline_events(pg)
    assert [e["device"] for e in events] == [silent]
    # Offline since it was last heard; its host hears if it is still offline the grace after.
    assert datetime.fromisoformat(str(events[0]["offline_at"])) == seen
    assert events[0]["at"] == seen + timedelta(seconds=GRACE_S)

    assert await _sweep(pg) == []  # once: already offline
    assert len(await _offline_events(pg)) == 1

    # Its next status (newer than the last applied) brings it back.
    message = status(silent, 7, online=True)
    accepted = decode(topic(silent, MessageKind.STATUS), encode_message(message))
    await write_batch(pg, plan_batch([accepted]), dead_letter_payload_max=1024)
    assert await _flags(pg, silent) == (True, True)
    assert await _sweep(pg) == []


async def test_a_device_silent_past_the_grace_is_notified_from_now(
    pg: PgConnection, market_api: Api
) -> None:
    """A device silent for longer than the grace (the cloud was down, say): its host's
    notification is due at once, not in the past."""
    silent = await _charger(pg, market_api, online=True, seen_s_ago=OFFLINE_AFTER_S + GRACE_S)
    before = await pg.fetchval("SELECT now()")
    assert await _sweep(pg) == [silent]
    (event,) = await _offline_events(pg)
    assert isinstance(event["at"], datetime)
    assert before <= event["at"] <= datetime.now(UTC) + timedelta(seconds=5)


async def test_a_device_another_transaction_holds_is_skipped_not_waited_for(
    pg: PgConnection, market_api: Api, db_url: str
) -> None:
    """Sweeps never wait: on a status being applied (ingest holds the row) or on another
    worker's sweep. The held device is swept on a later round."""
    silent = await _charger(pg, market_api, online=True, seen_s_ago=OFFLINE_AFTER_S + 20)
    other = await connect(DbSettings(url=db_url))
    try:
        async with other.transaction():
            await other.execute("SELECT 1 FROM devices WHERE id = $1 FOR UPDATE", silent)
            async with asyncio.timeout(10):
                assert await _sweep(pg) == []
        assert await _sweep(pg) == [silent]
    finally:
        await close(other)


async def test_a_device_gone_without_its_will_reaching_the_cloud_is_swept_offline(
    pg: PgConnection,
    market_api: Api,
    db_url: str,
    broker: Broker,
    service_passwords: dict[str, str],
) -> None:
    """The device reports online, then its connection just ends and no will reaches the
    database (here it registered none; cloud/devices/silence.py says when a real one is
    lost). The running worker's sweep turns it offline, and queues its host's notification,
    once it has been silent ``device_offline_after_s`` — not before."""
    settings = make_settings(
        db_url,
        broker,
        service_passwords["cloud-ingest"],
        CHARGEMITRA_MARKETPLACE_DEVICE_OFFLINE_AFTER_S="10",
        CHARGEMITRA_INGEST_PRESENCE_SWEEP_S="1",
    )
    host = await add_user(pg, market_api.settings, Role.HOST)
    charger = await add_charger(pg, host)
    device_id = charger.device_id
    assert device_id is not None
    device = SimDevice(device_id, add_device(broker, device_id), broker.port)
    async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
        run = tg.create_task(worker.run(), name="ingest")
        await device.connect()
        device.queue([status(device_id, 1, online=True)])
        await device.drain(timeout_s=30)
        heard = asyncio.get_running_loop().time()
        # Gone: the connection closed under it, no DISCONNECT, no will.
        device.client.loop_stop()
        close_sockets(device.client)
        await asyncio.sleep(3.0)  # sweeps have run: silent for less than 10 s
        assert await _flags(pg, device_id) == (True, True)
        while await _flags(pg, device_id) != (False, False):
            assert asyncio.get_running_loop().time() - heard < 30, "never swept offline"
            await asyncio.sleep(0.1)
        run.cancel()
    assert [e["device"] for e in await _offline_events(pg)] == [device_id]
