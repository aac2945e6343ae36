"""Status messages carry the agent's meters and connectors, end to end: the configured agent
(``chargemitra-agent run`` as a process) polls the simulated meter over RTU and publishes
over TLS to the project's broker; a real ingest worker stores each status in PostgreSQL; the
cloud's charger status (``GET /chargers/{id}``) shows the connector state the agent reported,
and the last reading of the meter the status names; the host's view (``GET
/host/chargers/{id}``) the meter's health. A session started at the charger turns
the cloud's connector to Charging at once (a status on change, not at the next interval)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from cloud.accounts.models import Role
from cloud.pg import PgConnection
from firmware_sim.site import MeterSpec
from tests.cli.rig import DEVICE, TAG, agent_process, mqtt_table, sim_site, write_config
from tests.cloud.test_listings import approve, create_listing
from tests.edge.agent_rig import control, seed_local_list, wait_until
from tests.support.certs import Certs
from tests.support.cloud_env import add_device
from tests.support.market import Api, ApiUser, add_user
from tests.support.mosquitto import Broker
from tests.support.sim_device import wait_for
from tests.support.workers import Workers

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def _listed(api: Api, pg: PgConnection) -> tuple[str, ApiUser]:
    """A listed charger with connectors 1 and 2, driven by the device ``DEVICE``; the cloud
    holds connector 1 as Charging, a state the agent has not reported."""
    host = await add_user(pg, api.settings, Role.HOST)
    admin = await add_user(pg, api.settings, Role.ADMIN)
    created = await create_listing(
        api,
        host,
        connectors=[
            {"number": 1, "type": "Type2", "current": "ac", "max_power_w": 7400},
            {"number": 2, "type": "CCS2", "current": "dc", "max_power_w": 30000},
        ],
    )
    await pg.execute("INSERT INTO devices (id, host_id) VALUES ($1, $2)", DEVICE, host.host_id)
    await pg.execute("UPDATE chargers SET device_id = $1 WHERE id = $2", DEVICE, created["id"])
    await pg.execute(
        "UPDATE connectors SET status = 'Charging' WHERE charger_id = $1 AND number = 1",
        created["id"],
    )
    await approve(api, admin, created["id"])
    charger_id: str = created["id"]
    return charger_id, host


async def _last_status(pg: PgConnection) -> dict[str, Any]:
    raw = await pg.fetchval("SELECT last_status FROM devices WHERE id = $1", DEVICE)
    if raw is None:
        return {}
    status: dict[str, Any] = json.loads(raw) if isinstance(raw, str) else raw
    return status


async def test_status_carries_meters_and_connectors_into_the_cloud_charger_status(
    tmp_path: Path,
    broker: Broker,
    certs: Certs,
    pg: PgConnection,
    workers: Workers,
    market_api: Api,
) -> None:
    assert broker.tls_port is not None
    charger_id, host = await _listed(market_api, pg)
    password = add_device(broker, DEVICE)
    workers.start(0)
    await wait_for(lambda: workers.joined(broker, 0), timeout_s=30)
    # Statuses on their interval only once an hour: any status after the first is one sent
    # because something changed.
    mqtt = mqtt_table(tmp_path, port=broker.tls_port, ca=certs.ca, password=password).replace(
        "status_interval_s = 5", "status_interval_s = 3600"
    )
    seed_local_list(tmp_path / "agent.db", (TAG,))

    async def live() -> dict[str, Any]:
        view = await market_api.client.get(f"/chargers/{charger_id}")
        assert view.status_code == 200, view.text
        status: dict[str, Any] = view.json()["status"]
        return status

    def connectors(view: dict[str, Any]) -> list[tuple[int, str]]:
        return [(c["number"], c["status"]) for c in view["connectors"]]

    async with sim_site(MeterSpec("sdm630", 1)) as sim:
        config = write_config(tmp_path, sim, mqtt=mqtt)
        async with agent_process(config, tmp_path):

            async def reported_meter() -> bool:
                return bool((await _last_status(pg)).get("meters"))

            await wait_until(reported_meter, timeout_s=30, every_s=0.2)
            status = await _last_status(pg)
            assert status["online"] is True
            [meter] = status["meters"]
            assert (meter["meter_id"], meter["model"], meter["available"]) == ("m1", "sdm630", True)
            # Polled every 0.5 s and answering: its last reading is recent, by the agent's
            # monotonic clock.
            assert 0.0 <= meter["last_reading_age_s"] < 30.0
            assert status["connectors"] == [
                {"connector": 1, "status": "Available", "session_id": None}
            ]

            # The host's view of the charger: the meter's health as ingest stored it.
            host_view = await market_api.client.get(
                f"/host/chargers/{charger_id}", headers=host.headers
            )
            assert host_view.status_code == 200, host_view.text
            [health] = host_view.json()["meters"]
            assert (health["meter_id"], health["model"], health["available"]) == (
                "m1",
                "sdm630",
                True,
            )
            assert (health["consecutive_errors"], health["unavailable_blocks"]) == (0, [])
            assert health["last_good_at"] is not None

            # The cloud's charger status: the connector as the agent reported it (connector
            # 2, which the agent does not drive, keeps its stored state: Unavailable).
            view = await live()
            assert view["online"] is True
            assert connectors(view) == [(1, "Available"), (2, "Unavailable")]

            # The last reading is the named meter's (readings arrive in their own messages).
            async def meter_reading() -> bool:
                readings = (await live())["last_readings"]
                return [r["meter_id"] for r in readings] == ["m1"] and all(
                    r["power_w"] is not None for r in readings
                )

            await wait_until(meter_reading, timeout_s=30, every_s=0.2)

            started = await control(tmp_path / "agent.sock", cmd="start", connector=1, id_tag=TAG)
            assert started["ok"], started
            session_id = started["session_id"]

            async def charging() -> bool:
                return connectors(await live()) == [(1, "Charging"), (2, "Unavailable")]

            await wait_until(charging, timeout_s=30, every_s=0.2)
            assert (await _last_status(pg))["connectors"] == [
                {"connector": 1, "status": "Charging", "session_id": session_id}
            ]

            stopped = await control(tmp_path / "agent.sock", cmd="stop", connector=1)
            assert stopped["ok"], stopped

            async def available() -> bool:
                return connectors(await live()) == [(1, "Available"), (2, "Unavailable")]

            await wait_until(available, timeout_s=30, every_s=0.2)
            assert (await _last_status(pg))["connectors"] == [
                {"connector": 1, "status": "Available", "session_id": None}
            ]
