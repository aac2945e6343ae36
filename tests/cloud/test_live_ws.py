"""Live streams: the hub's fan-out (in memory and over real Redis) and the WebSocket routes'
authorization and frames, with ingest's publications stood in for by Redis publishes of the
same shape (cloud.ingest.live)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

import pytest
import uvicorn
import websockets
from redis.asyncio import Redis
from websockets.asyncio.client import ClientConnection

from cloud.accounts.models import Role
from cloud.app import create_app
from cloud.ingest.live import charger_channel, device_channel, session_channel
from cloud.pg import PgConnection
from cloud.sessions.fold import SessionRow
from cloud.sessions.live import QUEUE_MAX, MemoryLiveHub, RedisLiveHub
from cloud.sessions.models import SessionState
from cloud.settings import Settings
from protocols.enums import CredentialKind
from protocols.ids import new_ulid
from tests.support.cloud_env import REDIS_URL, make_settings
from tests.support.market import ApiUser, add_user
from tests.support.mosquitto import Broker, free_port

pytestmark = pytest.mark.integration


async def test_memory_hub_fans_out_per_channel_and_drops_the_oldest_when_behind() -> None:
    hub = MemoryLiveHub()
    async with hub.subscribe("a", "b") as both, hub.subscribe("b") as only_b:
        await hub.publish("a", "1")
        await hub.publish("b", "2")
        await hub.publish("c", "nobody")
        assert [await both.get(), await both.get()] == [("a", "1"), ("b", "2")]
        assert await only_b.get() == ("b", "2")
        for i in range(QUEUE_MAX + 5):
            await hub.publish("a", str(i))
        assert both.dropped == 5
        assert await both.get() == ("a", "5")
    await hub.publish("a", "after")  # no subscriber left: nothing to deliver, no error


async def test_redis_hub_shares_one_subscription_among_local_subscribers() -> None:
    redis = Redis.from_url(REDIS_URL)
    channel = f"cm:live:test:{new_ulid()}"
    try:
        async with RedisLiveHub(redis) as hub:
            async with hub.subscribe(channel) as one, hub.subscribe(channel) as two:
                assert await redis.pubsub_numsub(channel) == [(channel.encode(), 1)]
                await redis.publish(channel, "hello")
                async with asyncio.timeout(5):
                    assert await one.get() == (channel, "hello")
                    assert await two.get() == (channel, "hello")
            assert await redis.pubsub_numsub(channel) == [(channel.encode(), 0)]
    finally:
        await redis.aclose()


@pytest.fixture
async def api_url(
    db_url: str, broker: Broker, service_passwords: dict[str, str]
) -> AsyncIterator[tuple[str, Settings]]:
    settings = make_settings(db_url, broker, service_passwords["cloud-api"], username="cloud-api")
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    async with asyncio.TaskGroup() as tasks:
        tasks.create_task(server.serve(), name="api")
        try:
            for _ in range(200):
                if server.started:
                    break
                await asyncio.sleep(0.05)
            yield f"ws://127.0.0.1:{port}", settings
        finally:
            server.should_exit = True


async def _charger(pg: PgConnection, host: ApiUser, device_id: str) -> str:
    charger_id = new_ulid()
    await pg.execute(
        "INSERT INTO devices (id, host_id, online, last_seen_at) VALUES ($1, $2, true, now())",
        device_id,
        host.host_id,
    )
    await pg.execute(
        "INSERT INTO chargers (id, host_id, device_id, name, address, city, state, pincode, "
        "latitude, longitude, price_per_kwh_paise, session_fee_paise, qr_code, "
        "moderation_status) VALUES ($1, $2, $3, 'C', 'A', 'Pune', 'MH', '411001', 18.5, 73.8,"
        " 2000, 100, $4, 'approved')",
        charger_id,
        host.host_id,
        device_id,
        charger_id[-10:],
    )
    await pg.execute(
        "INSERT INTO connectors (id, charger_id, number, type, max_power_w) "
        "VALUES ($1, $2, 1, 'Type2', 7400)",
        new_ulid(),
        charger_id,
    )
    return charger_id


def _token(user: ApiUser) -> str:
    return user.headers["Authorization"].removeprefix("Bearer ")


async def _closed_with(url: str) -> int:
    async with websockets.connect(url) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def _publish_until(
    ws: ClientConnection,
    redis: Redis,
    publishes: list[tuple[str, str]],
    frames: list[dict[str, Any]],
    done: Callable[[], bool],
) -> None:
    """Publish ``publishes`` (as ingest would) and collect frames into ``frames`` until
    ``done()``; repeated, because the hub's subscription may not be in place at first."""
    async with asyncio.timeout(10):
        while not done():
            for channel, text in publishes:
                await redis.publish(channel, text)
            try:
                async with asyncio.timeout(0.3):
                    while True:
                        frames.append(json.loads(await ws.recv()))
            except TimeoutError:
                pass


def _row(device_id: str, session_id: str, energy_wh: int, power_w: float | None) -> SessionRow:
    now = datetime.now(UTC)
    return SessionRow(
        device_id=device_id,
        device_session_id=session_id,
        connector_number=1,
        booking_id=None,
        credential_kind=CredentialKind.TOKEN,
        credential_ref="jti",
        state=SessionState.ACTIVE,
        started_at=now,
        stopped_at=None,
        meter_start_wh=100,
        meter_stop_wh=100 + energy_wh,
        energy_wh=energy_wh,
        power_w=power_w,
        stop_reason=None,
        offline=False,
        meter_went_backwards=False,
        last_event_seq=2,
        events_received=2,
    )


async def test_streams_refuse_missing_bad_and_foreign_tokens(
    api_url: tuple[str, Settings], pg: PgConnection
) -> None:
    base, settings = api_url
    host = await add_user(pg, settings, Role.HOST)
    driver = await add_user(pg, settings, Role.DRIVER)
    charger_id = await _charger(pg, host, "cm-01wstestdevice00000000000")
    assert await _closed_with(f"{base}/ws/chargers/{charger_id}") == 4401
    assert await _closed_with(f"{base}/ws/chargers/{charger_id}?access_token=junk") == 4401
    # A charger stream is its host's (and admins'); a driver is refused, as is an unknown id.
    assert (
        await _closed_with(f"{base}/ws/chargers/{charger_id}?access_token={_token(driver)}") == 4403
    )
    assert await _closed_with(f"{base}/ws/chargers/NOPE?access_token={_token(host)}") == 4403
    assert await _closed_with(f"{base}/ws/sessions/NOPE?access_token={_token(driver)}") == 4403


async def test_charger_stream_shows_status_power_energy_and_cost_from_redis(
    api_url: tuple[str, Settings], pg: PgConnection
) -> None:
    base, settings = api_url
    host = await add_user(pg, settings, Role.HOST)
    device_id = "cm-01wstestdevice00000000001"
    charger_id = await _charger(pg, host, device_id)
    redis = Redis.from_url(REDIS_URL)
    frames: list[dict[str, Any]] = []
    try:
        async with websockets.connect(
            f"{base}/ws/chargers/{charger_id}?access_token={_token(host)}"
        ) as ws:
            frames.append(json.loads(await ws.recv()))
            session_id = new_ulid()
            # What ingest publishes after a commit (cloud.ingest.live.live_messages).
            reading = {
                "type": "reading",
                "device_id": device_id,
                "meter_id": "m1",
                "ts": datetime.now(UTC).isoformat(),
                "clock_synced": True,
                "values": {"power_w": 7350.0, "energy_import_wh": 1234.0},
            }
            row = json.dumps(
                {"type": "session", "charger_id": charger_id}
                | asdict(_row(device_id, session_id, 1500, 7300.0)),
                default=str,
            )
            publishes = [
                (device_channel(device_id), json.dumps(reading)),
                (charger_channel(charger_id), row),
                (session_channel(session_id), row),
            ]
            await _publish_until(ws, redis, publishes, frames, lambda: len(frames) >= 3)
    finally:
        await redis.aclose()
    assert frames[0] == {
        "type": "snapshot",
        "charger_id": charger_id,
        "device_id": device_id,
        "online": True,
        "connectors": [{"connector": 1, "status": "Unavailable"}],
    }
    reading_frame = next(f for f in frames if f["type"] == "reading")
    assert reading_frame["power_w"] == 7350.0
    session_frame = next(f for f in frames if f["type"] == "session")
    assert session_frame["energy_wh"] == 1500
    assert session_frame["power_w"] == 7300.0
    # fee + 1.5 kWh at 20 rupees, plus CGST 9 % and SGST 9 %
    assert session_frame["cost_paise"] == 100 + 3000 + 279 + 279
    assert session_frame["state"] == "active"


async def test_session_stream_ignores_a_same_id_session_of_another_device(
    api_url: tuple[str, Settings], pg: PgConnection
) -> None:
    """Session ids are unique per device only, and the live channel is keyed by the id: a
    session another device reports under the same id must not reach this driver's stream."""
    base, settings = api_url
    host = await add_user(pg, settings, Role.HOST)
    driver = await add_user(pg, settings, Role.DRIVER)
    device_id = "cm-01wstestdevice00000000002"
    charger_id = await _charger(pg, host, device_id)
    session_id, jti = new_ulid(), new_ulid()
    await pg.execute(
        "INSERT INTO unlock_requests (id, user_id, charger_id, connector_number, device_id, "
        "token_jti, outcome, device_session_id) VALUES ($1, $2, $3, 1, $4, $5, 'started', $6)",
        new_ulid(),
        driver.id,
        charger_id,
        device_id,
        jti,
        session_id,
    )
    foreign = json.dumps(
        {"type": "session", "charger_id": None}
        | asdict(_row("cm-someone-else", session_id, 999_999, 1.0)),
        default=str,
    )
    own = json.dumps(
        {"type": "session", "charger_id": charger_id}
        | asdict(_row(device_id, session_id, 1500, 7300.0)),
        default=str,
    )
    redis = Redis.from_url(REDIS_URL)
    frames: list[dict[str, Any]] = []
    try:
        async with websockets.connect(
            f"{base}/ws/sessions/{session_id}?access_token={_token(driver)}"
        ) as ws:
            frames.append(json.loads(await ws.recv()))
            # The foreign row first, each round: it must never come through.
            publishes = [(session_channel(session_id), foreign), (session_channel(session_id), own)]
            await _publish_until(
                ws,
                redis,
                publishes,
                frames,
                lambda: any(f["type"] == "session" and f["energy_wh"] == 1500 for f in frames),
            )
    finally:
        await redis.aclose()
    assert frames[0]["type"] == "snapshot"
    assert frames[0]["session"]["state"] == "starting"
    assert [f["energy_wh"] for f in frames[1:]] == [1500] * (len(frames) - 1)
