"""Host device routes over HTTP, with the real broker: a host issues a pairing code for its
charger, the agent claims it, the host revokes the device; other hosts see nothing."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest
from redis.asyncio import Redis

from cloud.accounts.models import Role
from cloud.pg import PgConnection
from protocols.ids import new_ulid
from tests.support.cloud_env import REDIS_KEY_PREFIX, REDIS_URL
from tests.support.market import Api, ApiUser, add_user
from tests.support.mosquitto import Broker
from tests.support.probe import Probe
from tests.support.sim_device import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
async def api(market_api: Api) -> Api:
    redis = Redis.from_url(REDIS_URL)
    keys = [key async for key in redis.scan_iter(match=REDIS_KEY_PREFIX + "rl:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()
    return market_api


async def add_charger(pg: PgConnection, host: ApiUser) -> str:
    charger_id = new_ulid()
    await pg.execute(
        "INSERT INTO chargers (id, host_id, name, address, city, state, pincode, latitude, "
        "longitude, price_per_kwh_paise, qr_code) "
        "VALUES ($1, $2, 'Gate 2', '12 MG Road', 'Pune', 'MH', '411001', 18.52, 73.85, 1800, $3)",
        charger_id,
        host.host_id,
        charger_id[-10:],
    )
    return charger_id


async def test_host_pairs_its_charger_and_revokes_the_device(
    api: Api, pg: PgConnection, broker: Broker
) -> None:
    host = await add_user(pg, api.settings, Role.HOST)
    charger_id = await add_charger(pg, host)
    issued = await api.client.post(f"/chargers/{charger_id}/pairing-code", headers=host.headers)
    assert issued.status_code == 201, issued.text
    assert set(issued.json()) == {"code", "expires_at"}
    claimed = await api.client.post("/devices/claim", json={"code": issued.json()["code"]})
    assert claimed.status_code == 200, claimed.text
    device_id = claimed.json()["device_id"]
    password = claimed.json()["broker"]["password"]
    assert await pg.fetchval("SELECT device_id FROM chargers WHERE id = $1", charger_id) == (
        device_id
    )
    connected = Probe(device_id, password, broker.port, device_id)
    assert not (await connected.connect()).is_failure

    revoked = await api.client.post(f"/devices/{device_id}/revoke", headers=host.headers)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked"
    await wait_for(connected.disconnected.is_set, timeout_s=10)
    connected.close()
    retry = Probe(device_id, password, broker.port, device_id + "-again")
    assert (await retry.connect()).is_failure
    retry.close()
    # Revoking again changes nothing and says so.
    again = await api.client.post(f"/devices/{device_id}/revoke", headers=host.headers)
    assert again.status_code == 200
    assert again.json()["revoked_at"] == revoked.json()["revoked_at"]


async def test_two_revocations_at_once_revoke_once(
    api: Api, pg: PgConnection, broker: Broker
) -> None:
    """Two revocations of one device at the same moment: the second waits for the first's row
    lock and finds the device revoked, so both answer the one revocation (the same
    ``revoked_at``, the stored one). It used to read the row unlocked and then lock it
    without re-reading: both revoked, the second overwriting ``revoked_at``."""
    host = await add_user(pg, api.settings, Role.HOST)
    charger_id = await add_charger(pg, host)
    issued = await api.client.post(f"/chargers/{charger_id}/pairing-code", headers=host.headers)
    claimed = await api.client.post("/devices/claim", json={"code": issued.json()["code"]})
    assert claimed.status_code == 200, claimed.text
    device_id = claimed.json()["device_id"]
    answers = await asyncio.gather(
        *(api.client.post(f"/devices/{device_id}/revoke", headers=host.headers) for _ in "ab")
    )
    assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
    stored = await pg.fetchval("SELECT revoked_at FROM devices WHERE id = $1", device_id)
    assert {datetime.fromisoformat(a.json()["revoked_at"]) for a in answers} == {stored}


async def test_other_hosts_and_drivers_get_nothing(
    api: Api, pg: PgConnection, broker: Broker
) -> None:
    owner = await add_user(pg, api.settings, Role.HOST)
    other_host = await add_user(pg, api.settings, Role.HOST)
    driver = await add_user(pg, api.settings, Role.DRIVER)
    charger_id = await add_charger(pg, owner)
    code = (
        await api.client.post(f"/chargers/{charger_id}/pairing-code", headers=owner.headers)
    ).json()["code"]
    device_id = (await api.client.post("/devices/claim", json={"code": code})).json()["device_id"]

    for path in (f"/chargers/{charger_id}/pairing-code", f"/devices/{device_id}/revoke"):
        # Another host: as if the charger or device did not exist.
        assert (await api.client.post(path, headers=other_host.headers)).status_code == 404
        # A driver: not a host at all.
        assert (await api.client.post(path, headers=driver.headers)).status_code == 403
        assert (await api.client.post(path)).status_code == 401
    for path in ("/chargers/NOPE/pairing-code", "/devices/cm-nope/revoke"):
        assert (await api.client.post(path, headers=owner.headers)).status_code == 404
    assert await pg.fetchval("SELECT status FROM devices WHERE id = $1", device_id) == "active"
    assert await pg.fetchval("SELECT count(*) FROM pairing_codes") == 1


async def test_an_admin_may_pair_and_revoke_for_any_host(
    api: Api, pg: PgConnection, broker: Broker
) -> None:
    owner = await add_user(pg, api.settings, Role.HOST)
    admin = await add_user(pg, api.settings, Role.ADMIN)
    charger_id = await add_charger(pg, owner)
    issued = await api.client.post(f"/chargers/{charger_id}/pairing-code", headers=admin.headers)
    assert issued.status_code == 201
    claimed = await api.client.post("/devices/claim", json={"code": issued.json()["code"]})
    device_id = claimed.json()["device_id"]
    # The code binds the device to the charger's host, not to the admin.
    assert await pg.fetchval("SELECT host_id FROM devices WHERE id = $1", device_id) == (
        owner.host_id
    )
    revoked = await api.client.post(f"/devices/{device_id}/revoke", headers=admin.headers)
    assert revoked.status_code == 200


async def test_issuing_codes_is_rate_limited(api: Api, pg: PgConnection, broker: Broker) -> None:
    host = await add_user(pg, api.settings, Role.HOST)
    charger_id = await add_charger(pg, host)
    limit = api.settings.provisioning.claim_attempts_per_window
    codes = [
        (
            await api.client.post(f"/chargers/{charger_id}/pairing-code", headers=host.headers)
        ).status_code
        for _ in range(limit + 1)
    ]
    assert codes == [201] * limit + [429]
