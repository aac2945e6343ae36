"""Charger status: online from the device's status and silence, connector states, the last
reading; telemetry charts for the owner and admins over seeded readings."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from cloud.accounts.models import Role
from cloud.pg import PgConnection
from tests.cloud.test_listings import approve, assert_problem, create_listing
from tests.support.market import Api, ApiUser, add_user

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


async def listed_with_device(
    api: Api,
    pg: PgConnection,
    *,
    online: bool,
    seen: datetime | None,
    status: dict[str, Any] | None = None,
) -> tuple[ApiUser, str, str]:
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
    device_id = f"cm-{created['id'].lower()}"
    await pg.execute(
        "INSERT INTO devices (id, host_id, online, last_seen_at, last_status) "
        "VALUES ($1, $2, $3, $4, $5::jsonb)",
        device_id,
        host.host_id,
        online,
        seen,
        json.dumps(status) if status is not None else None,
    )
    await pg.execute("UPDATE chargers SET device_id = $1 WHERE id = $2", device_id, created["id"])
    await pg.execute(
        "UPDATE connectors SET status = CASE number WHEN 1 THEN 'Charging' ELSE 'Available' END, "
        "status_at = $2 WHERE charger_id = $1",
        created["id"],
        seen,
    )
    await approve(api, admin, created["id"])
    return host, created["id"], device_id


async def seed_readings(
    pg: PgConnection, device_id: str, meter_id: str, start: datetime, minutes: int
) -> list[tuple[datetime, float, float]]:
    """One reading a minute: power ramps, energy accumulates."""
    rows: list[tuple[str, str, datetime, str, float, int, bool]] = []
    readings = []
    energy = 1000.0
    for i in range(minutes):
        ts = start + timedelta(minutes=i)
        power = 1000.0 + 37.0 * (i % 50)
        energy += power / 60
        readings.append((ts, power, energy))
        rows.append((device_id, meter_id, ts, "power_w", power, i + 1, True))
        rows.append((device_id, meter_id, ts, "energy_import_wh", energy, i + 1, True))
    await pg.copy_records_to_table(
        "telemetry",
        records=rows,
        columns=("device_id", "meter_id", "ts", "quantity", "value", "seq", "clock_synced"),
    )
    return readings


async def test_online_device_shows_connectors_and_last_reading(
    market_api: Api, pg: PgConnection
) -> None:
    now = datetime.now(UTC)
    status = {"online": True, "meters": [{"meter_id": "m1", "model": "SDM630", "available": True}]}
    _host, cid, device_id = await listed_with_device(
        market_api, pg, online=True, seen=now, status=status
    )
    readings = await seed_readings(pg, device_id, "m1", now - timedelta(minutes=30), 30)
    # Another meter of the same device, newer, not named in the status: not reported.
    await seed_readings(pg, device_id, "m9", now - timedelta(minutes=5), 3)
    view = (await market_api.client.get(f"/chargers/{cid}")).json()
    live = view["status"]
    assert live["online"] is True
    assert [(c["number"], c["status"]) for c in live["connectors"]] == [
        (1, "Charging"),
        (2, "Available"),
    ]
    ts, power, energy = readings[-1]
    assert live["last_readings"] == [
        {
            "meter_id": "m1",
            "ts": ts.isoformat().replace("+00:00", "Z"),
            "power_w": power,
            "energy_import_wh": energy,
        }
    ]


async def test_offline_by_last_will_or_by_silence(market_api: Api, pg: PgConnection) -> None:
    now = datetime.now(UTC)
    _h, will_cid, _d = await listed_with_device(market_api, pg, online=False, seen=now)
    offline_after = market_api.settings.marketplace.device_offline_after_s
    _h, silent_cid, _d = await listed_with_device(
        market_api, pg, online=True, seen=now - timedelta(seconds=offline_after + 5)
    )
    for cid in (will_cid, silent_cid):
        live = (await market_api.client.get(f"/chargers/{cid}")).json()["status"]
        assert live["online"] is False
        # A silent agent's last "Available" is no promise: shown as Unavailable.
        assert {c["status"] for c in live["connectors"]} == {"Unavailable"}
    # No readings stored: the device is reported with empty values, not an error.
    live = (await market_api.client.get(f"/chargers/{will_cid}")).json()["status"]
    assert live["last_readings"] == [
        {"meter_id": None, "ts": None, "power_w": None, "energy_import_wh": None}
    ]


async def test_a_charger_without_a_device_is_offline(market_api: Api, pg: PgConnection) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    admin = await add_user(pg, market_api.settings, Role.ADMIN)
    created = await create_listing(market_api, host)
    await approve(market_api, admin, created["id"])
    live = (await market_api.client.get(f"/chargers/{created['id']}")).json()["status"]
    assert live == {
        "online": False,
        "last_seen_at": None,
        "connectors": [
            {
                "number": 1,
                "type": "Type2",
                "current": "ac",
                "max_power_w": 7400,
                "status": "Unavailable",
                "status_at": None,
            }
        ],
        "last_readings": [],
    }


async def test_telemetry_chart_buckets_the_seeded_readings(
    market_api: Api, pg: PgConnection
) -> None:
    host, cid, device_id = await listed_with_device(market_api, pg, online=True, seen=T0)
    readings = await seed_readings(pg, device_id, "m1", T0, 120)
    await seed_readings(pg, "cm-someone-else", "m1", T0, 120)
    params = {"from": T0.isoformat(), "to": (T0 + timedelta(hours=2)).isoformat(), "bucket": "15m"}
    response = await market_api.client.get(
        f"/chargers/{cid}/telemetry", params=params, headers=host.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["device_id"] == device_id
    assert body["quantity"] == "power_w"
    assert len(body["points"]) == 8
    for k, point in enumerate(body["points"]):
        chunk = [
            p
            for ts, p, _ in readings
            if T0 + timedelta(minutes=15 * k) <= ts < T0 + timedelta(minutes=15 * (k + 1))
        ]
        assert datetime.fromisoformat(point["start"]) == T0 + timedelta(minutes=15 * k)
        assert point["count"] == len(chunk) == 15
        assert point["min"] == min(chunk)
        assert point["max"] == max(chunk)
        assert abs(point["mean"] - sum(chunk) / len(chunk)) < 1e-9
    energy = await market_api.client.get(
        f"/chargers/{cid}/telemetry",
        params={**params, "bucket": "1h", "quantity": "energy_import_wh", "meter_id": "m1"},
        headers=host.headers,
    )
    points = energy.json()["points"]
    assert [p["max"] for p in points] == [readings[59][2], readings[119][2]]
    other_meter = await market_api.client.get(
        f"/chargers/{cid}/telemetry", params={**params, "meter_id": "m2"}, headers=host.headers
    )
    assert other_meter.json()["points"] == []
    admin = await add_user(pg, market_api.settings, Role.ADMIN)
    as_admin = await market_api.client.get(
        f"/chargers/{cid}/telemetry", params=params, headers=admin.headers
    )
    assert as_admin.json() == body


async def test_telemetry_is_for_the_owner_and_bounded(market_api: Api, pg: PgConnection) -> None:
    host, cid, _device = await listed_with_device(market_api, pg, online=True, seen=T0)
    client = market_api.client
    url = f"/chargers/{cid}/telemetry"
    hour = {"from": T0.isoformat(), "to": (T0 + timedelta(hours=1)).isoformat()}
    driver = await add_user(pg, market_api.settings, Role.DRIVER)
    other_host = await add_user(pg, market_api.settings, Role.HOST)
    assert_problem(await client.get(url, params=hour), 401)
    assert_problem(await client.get(url, params=hour, headers=driver.headers), 403)
    assert_problem(await client.get(url, params=hour, headers=other_host.headers), 404)
    bad: list[tuple[dict[str, str], str]] = [
        ({**hour, "bucket": "7m"}, "bucket"),
        ({**hour, "quantity": "price"}, "quantity"),
        ({"from": hour["from"]}, "to"),
        ({"from": hour["to"], "to": hour["from"]}, "to"),
        (
            {"from": T0.isoformat(), "to": (T0 + timedelta(days=32)).isoformat(), "bucket": "1d"},
            "to",
        ),
        (
            {"from": T0.isoformat(), "to": (T0 + timedelta(days=2)).isoformat(), "bucket": "1m"},
            "bucket",
        ),
        ({"from": "2026-03-02T06:00:00", "to": "2026-03-02T07:00:00"}, "from"),
    ]
    for params, field in bad:
        assert_problem(await client.get(url, params=params, headers=host.headers), 422, field)
