"""Device provisioning: pairing codes claimed once, credentials and ACL on a real broker."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from redis.asyncio import Redis

from cloud.app import create_app
from cloud.devices.broker_auth import hash_password
from cloud.devices.codes import new_pairing_code, normalize_code
from cloud.devices.service import issue_pairing_code, revoke_device
from cloud.pg import PgConnection
from cloud.state import AppState
from protocols.enums import MessageKind
from protocols.topics import topic
from tests.support.cloud_env import REDIS_KEY_PREFIX, REDIS_URL, make_settings
from tests.support.mosquitto import Broker
from tests.support.probe import Probe
from tests.support.sim_device import wait_for

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)


@pytest.fixture
async def api(
    db_url: str, broker: Broker, service_passwords: dict[str, str], pg: PgConnection
) -> AsyncIterator[tuple[AppState, httpx.AsyncClient]]:
    redis = Redis.from_url(REDIS_URL)
    await redis.delete(REDIS_KEY_PREFIX + "rl:claim:127.0.0.1")
    await redis.aclose()
    await pg.execute("INSERT INTO users (id, name) VALUES ('U1', 'Asha')")
    await pg.execute("INSERT INTO hosts (id, user_id, display_name) VALUES ('H1', 'U1', 'A')")
    settings = make_settings(db_url, broker, service_passwords["cloud-api"], username="cloud-api")
    app: FastAPI = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield app.state.cloud, client


async def _issue(state: AppState, *, now: datetime = NOW) -> str:
    async with state.sessions() as db, db.begin():
        issued = await issue_pairing_code(
            db, state.settings, host_id="H1", charger_id=None, now=now
        )
    return issued.code


def test_password_hash_is_what_the_dynamic_security_plugin_stores() -> None:
    # Written by Mosquitto 2.0.11's dynamic-security plugin for `createClient dev-a -p pa`.
    salt = "JbYDzIDpCCTpvo4P"
    reference = (
        "5IgzK4erWS7wHYhlbuufc8EJjx7I+6a6ErRbj6up/Bbgm5+OBlP+vBZHXytYje6Rh/Zx/ViV6n6msbhckKsOEg=="
    )
    assert hash_password("pa", salt=base64.b64decode(salt)) == (reference, salt)
    assert hash_password("pA", salt=base64.b64decode(salt)) != (reference, salt)


def test_pairing_codes_normalize_what_people_type() -> None:
    code = new_pairing_code()
    assert normalize_code(code.lower().replace("-", " ")) == code.replace("-", "")
    assert normalize_code("ABCDE-FGHIO") == "ABCDEFGH10"
    assert normalize_code("too-short") is None


async def test_a_code_claims_once_and_the_device_works_on_the_broker(
    api: tuple[AppState, httpx.AsyncClient],
    broker: Broker,
    pg: PgConnection,
    service_passwords: dict[str, str],
) -> None:
    state, client = api
    code = await _issue(state)
    first = await client.post("/devices/claim", json={"code": code, "agent_version": "0.1.0"})
    assert first.status_code == 200, first.text
    body = first.json()
    device_id = body["device_id"]
    assert body["broker"]["username"] == device_id
    assert body["token_key_id"] == state.token_key.key_id
    assert await pg.fetchval("SELECT status FROM devices WHERE id = $1", device_id) == "active"
    again = await client.post("/devices/claim", json={"code": code})
    assert again.status_code == 400
    assert again.json()["type"].endswith("/pairing-code-invalid")

    device = Probe(device_id, body["broker"]["password"], broker.port, device_id)
    assert not (await device.connect()).is_failure
    observer = Probe("cloud-ingest", service_passwords["cloud-ingest"], broker.port, "observer")
    await observer.connect()
    await observer.subscribe("cm/v1/d/+/telemetry")
    await observer.subscribe("cm/v1/d/+/auth")
    assert not (await device.publish(topic(device_id, MessageKind.TELEMETRY), b"{}")).is_failure
    await wait_for(lambda: len(observer.messages) == 1, timeout_s=10)
    device.close()
    observer.close()


async def test_expired_and_guessed_codes_fail_and_attempts_are_rate_limited(
    api: tuple[AppState, httpx.AsyncClient],
) -> None:
    state, client = api
    expired = await _issue(state, now=NOW - timedelta(hours=2))
    assert (await client.post("/devices/claim", json={"code": expired})).status_code == 400
    answers = [
        (await client.post("/devices/claim", json={"code": new_pairing_code()})).status_code
        for _ in range(state.settings.provisioning.claim_attempts_per_window + 2)
    ]
    assert answers.count(400) == state.settings.provisioning.claim_attempts_per_window - 1
    assert answers[-1] == 429
    # Even a valid code is refused while the limit holds.
    valid = await _issue(state)
    limited = await client.post("/devices/claim", json={"code": valid})
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) > 0


async def test_device_a_cannot_touch_device_b_topics(
    broker: Broker, service_passwords: dict[str, str]
) -> None:
    broker.add_device("dev-a", "pass-a")
    broker.add_device("dev-b", "pass-b")
    a = Probe("dev-a", "pass-a", broker.port, "dev-a")
    # A device's client id is bound to it: dev-a may not connect as anything else.
    a_as_b = Probe("dev-a", "pass-a", broker.port, "dev-b")
    observer = Probe("cloud-ingest", service_passwords["cloud-ingest"], broker.port, "observer")
    api_client = Probe("cloud-api", service_passwords["cloud-api"], broker.port, "api")
    for probe in (a, observer, api_client):
        assert not (await probe.connect()).is_failure
    assert (await a_as_b.connect()).is_failure
    await observer.subscribe("cm/v1/d/+/telemetry")
    await observer.subscribe("cm/v1/d/+/auth")

    # The dynamic-security plugin refuses these SUBSCRIBEs outright (and nothing of B's
    # reaches A, checked below).
    assert (await a.subscribe(topic("dev-b", MessageKind.CMD))).is_failure
    assert (await a.subscribe("cm/v1/d/dev-b/#")).is_failure
    assert (await a.subscribe("cm/v1/d/+/cmd")).is_failure
    assert not (await a.subscribe(topic("dev-a", MessageKind.CMD))).is_failure
    await a.publish(topic("dev-b", MessageKind.TELEMETRY), b"forged")
    await a.publish(topic("dev-b", MessageKind.AUTH), b"forged decision")
    await a.publish(topic("dev-a", MessageKind.TELEMETRY), b"own")
    await a.publish(topic("dev-a", MessageKind.AUTH), b"own decision")
    await api_client.publish(topic("dev-b", MessageKind.CMD), b"for-b")
    await api_client.publish(topic("dev-a", MessageKind.CMD), b"for-a")
    # Per-connection ordering: once the later, allowed message arrives, a forged one would
    # have arrived before it.
    await wait_for(lambda: len(observer.messages) >= 2, timeout_s=10)
    await wait_for(lambda: len(a.messages) >= 1, timeout_s=10)
    assert observer.messages == [
        (topic("dev-a", MessageKind.TELEMETRY), b"own"),
        (topic("dev-a", MessageKind.AUTH), b"own decision"),
    ]
    assert a.messages == [(topic("dev-a", MessageKind.CMD), b"for-a")]
    for probe in (a, a_as_b, observer, api_client):
        probe.close()


async def test_revoked_device_is_cut_off_and_refused_on_reconnect(
    api: tuple[AppState, httpx.AsyncClient], broker: Broker
) -> None:
    state, client = api
    body = (await client.post("/devices/claim", json={"code": await _issue(state)})).json()
    device_id, password = body["device_id"], body["broker"]["password"]
    connected = Probe(device_id, password, broker.port, device_id)
    assert not (await connected.connect()).is_failure
    async with state.sessions() as db, db.begin():
        await revoke_device(db, state.credentials, device_id=device_id, now=NOW)
    # Deleting its dynamic-security client disconnects the revoked device at once.
    await wait_for(connected.disconnected.is_set, timeout_s=10)
    connected.close()
    retry = Probe(device_id, password, broker.port, device_id + "-again")
    assert (await retry.connect()).is_failure
    retry.close()
