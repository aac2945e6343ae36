"""Meter health through the real ingest path: statuses published over MQTT by a device, stored
by the ingest worker (``device_meters``, cloud/ingest/writer.py) and shown in the host's
charger view (``GET /host/chargers/{id}``) — model, availability, failed polls in a row, the
last error, refused register blocks and the time of the last good reading."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloud.accounts.models import Role
from cloud.pg import PgConnection
from cloud.settings import Settings
from cloud.workers.ingest import open_ingest_worker
from protocols.ids import new_ulid
from protocols.messages import MeterHealth, Status
from tests.cloud.test_listings import approve, create_listing
from tests.support.cloud_env import add_device
from tests.support.market import Api, add_user
from tests.support.mosquitto import Broker
from tests.support.sim_device import SimDevice

pytestmark = pytest.mark.integration

DEVICE = "cm-meter-health"
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
BLOCK = "input 342-351"


def _status(seq: int, meters: list[MeterHealth], *, synced: bool = True) -> Status:
    return Status(
        msg_id=new_ulid(),
        device_id=DEVICE,
        seq=seq,
        ts=T0 + timedelta(seconds=seq),
        clock_synced=synced,
        online=True,
        agent_version="1.0",
        meters=meters,
    )


async def test_ingest_stores_meter_health_and_the_host_charger_view_shows_it(
    settings: Settings, broker: Broker, pg: PgConnection, market_api: Api
) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    other = await add_user(pg, market_api.settings, Role.HOST)
    admin = await add_user(pg, market_api.settings, Role.ADMIN)
    charger_id = (await create_listing(market_api, host))["id"]
    await approve(market_api, admin, charger_id)
    await pg.execute("INSERT INTO devices (id, host_id) VALUES ($1, $2)", DEVICE, host.host_id)
    await pg.execute("UPDATE chargers SET device_id = $1 WHERE id = $2", DEVICE, charger_id)

    async def meters(user: Any = host) -> list[dict[str, Any]]:
        got = await market_api.client.get(f"/host/chargers/{charger_id}", headers=user.headers)
        assert got.status_code == 200, got.text
        found: list[dict[str, Any]] = got.json()["meters"]
        return found

    assert await meters() == []  # no status yet: nothing is claimed about the meters
    device = SimDevice(DEVICE, add_device(broker, DEVICE), broker.port)
    # m1 answers but refuses one block of its map; m2 has failed its last 5 polls.
    first = _status(
        1,
        [
            MeterHealth(
                meter_id="m1",
                model="sdm630",
                available=True,
                errors=1,
                last_reading_age_s=2.0,
                unavailable_blocks=[BLOCK],
            ),
            MeterHealth(
                meter_id="m2",
                model="em4m",
                available=False,
                errors=7,
                consecutive_errors=5,
                last_error="timeout after 0.3 s",
                last_reading_age_s=60.0,
            ),
        ],
    )
    # The agent restarted with m1 dead and m2 removed from its configuration: m1 has no
    # reading since the restart (no age); the cloud keeps when it last answered. Its clock is
    # not synced yet, so the cloud's own time stands in for the status's.
    restarted = _status(
        3,
        [
            MeterHealth(
                meter_id="m1",
                model="sdm630",
                available=False,
                errors=2,
                consecutive_errors=2,
                last_error="Modbus exception 4",
            ),
        ],
        synced=False,
    )
    # An older status redelivered late changes nothing.
    late = _status(2, [MeterHealth(meter_id="m9", model="x", available=True)])
    async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
        run = tg.create_task(worker.run(), name="ingest")
        await device.connect()
        device.queue([first])
        await device.drain(timeout_s=30)
        shown = await meters()
        device.queue([restarted])
        await device.drain(timeout_s=30)
        device.queue([late])
        await device.drain(timeout_s=30)
        run.cancel()
    device.disconnect()

    # After the first status: both meters, as reported, m1's last good reading 2 s before
    # the status's (synced) time, m2's 60 s before.
    assert [m["meter_id"] for m in shown] == ["m1", "m2"]
    m1, m2 = shown
    assert (m1["model"], m1["available"], m1["errors"], m1["consecutive_errors"]) == (
        "sdm630",
        True,
        1,
        0,
    )
    assert m1["unavailable_blocks"] == [BLOCK]
    assert m1["last_error"] is None
    assert datetime.fromisoformat(m1["last_good_at"]) == T0 + timedelta(seconds=1 - 2)
    assert (m2["available"], m2["errors"], m2["consecutive_errors"]) == (False, 7, 5)
    assert m2["last_error"] == "timeout after 0.3 s"
    assert datetime.fromisoformat(m2["last_good_at"]) == T0 + timedelta(seconds=1 - 60)
    assert m2["unavailable_blocks"] == []

    # After the restart (the late status ignored): m2 is gone, m1 unavailable with its last
    # good reading still the one from before the restart.
    [m1] = await meters()
    assert (m1["meter_id"], m1["available"], m1["consecutive_errors"]) == ("m1", False, 2)
    assert m1["last_error"] == "Modbus exception 4"
    assert m1["unavailable_blocks"] == []
    assert datetime.fromisoformat(m1["last_good_at"]) == T0 + timedelta(seconds=1 - 2)
    assert await pg.fetchval("SELECT status_seq FROM device_meters") == 3

    # Another host does not see this charger at all (BOLA matrix: tests/cloud/test_bola.py).
    got = await market_api.client.get(f"/host/chargers/{charger_id}", headers=other.headers)
    assert got.status_code == 404
