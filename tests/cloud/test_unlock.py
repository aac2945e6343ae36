"""``POST /chargers/{id}/sessions`` and the session routes, against the real API, database,
Redis and broker — but no agent: what the API decides by itself (who, which booking, which
connector, online or not), what it sends (a signed, bound, short-lived token in an expiring
command) and how it answers when nobody answers."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.accounts.models import Role
from cloud.app import create_app
from cloud.billing.quote import Tariff, cost_so_far_paise
from cloud.chargers.models import PricingMode
from cloud.errors import BrokerUnacknowledged
from cloud.pg import PgConnection
from cloud.state import AppState
from edge_agent.testing import close_threaded
from protocols.enums import AuthorizationStatus
from protocols.ids import new_ulid
from protocols.messages import Command, StartSession, parse_message
from protocols.pins import PIN_DIGITS, pin_ref, verify_pin
from protocols.tokens import TokenVerifier, load_public_key
from protocols.topics import topic
from tests.support.bookings_fixtures import insert_booking
from tests.support.cloud_env import add_device, make_settings
from tests.support.market import Api, ApiUser, add_user
from tests.support.mosquitto import Broker

pytestmark = pytest.mark.integration

DEVICE = "cm-01unlocktestdevice0000000"
SECRET = secrets.token_bytes(32)


@pytest.fixture
async def api(db_url: str, broker: Broker, service_passwords: dict[str, str]) -> AsyncIterator[Api]:
    settings = make_settings(
        db_url,
        broker,
        service_passwords["cloud-api"],
        username="cloud-api",
        CHARGEMITRA_MARKETPLACE_UNLOCK_WAIT_S="0.6",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            for _ in range(100):
                if app.state.cloud.broker.connected:
                    break
                await asyncio.sleep(0.05)
            yield Api(app, client, settings)


class Site:
    """A listed, approved charger with one connector and a paired device row."""

    def __init__(self, pg: PgConnection, host: ApiUser) -> None:
        self.pg = pg
        self.host = host
        self.charger_id = new_ulid()
        self.connector_id = new_ulid()

    async def create(self, *, online: bool, approved: bool = True) -> Site:
        await self.pg.execute(
            "INSERT INTO devices (id, host_id, online, last_seen_at, pin_secret) "
            "VALUES ($1, $2, $3, now(), $4)",
            DEVICE,
            self.host.host_id,
            online,
            SECRET,
        )
        await self.pg.execute(
            "INSERT INTO chargers (id, host_id, device_id, name, address, city, state, pincode,"
            " latitude, longitude, price_per_kwh_paise, qr_code, moderation_status) VALUES "
            "($1, $2, $3, 'C', 'A', 'Pune', 'MH', '411001', 18.5, 73.8, 1500, $4, $5)",
            self.charger_id,
            self.host.host_id,
            DEVICE,
            self.charger_id[-10:],
            "approved" if approved else "pending",
        )
        await self.pg.execute(
            "INSERT INTO connectors (id, charger_id, number, type, max_power_w) "
            "VALUES ($1, $2, 1, 'Type2', 7400)",
            self.connector_id,
            self.charger_id,
        )
        return self

    async def book(
        self, user: ApiUser, start: datetime, end: datetime, status: str = "confirmed"
    ) -> str:
        return await insert_booking(
            self.pg,
            user,
            charger_id=self.charger_id,
            connector_id=self.connector_id,
            start=start,
            end=end,
            status=status,
        )


async def _unlock(api: Api, site: Site, user: ApiUser, **body: Any) -> httpx.Response:
    return await api.client.post(
        f"/chargers/{site.charger_id}/sessions",
        json={"connector": 1} | body,
        headers=user.headers,
    )


def _problem(answer: httpx.Response, status: int, slug: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body: dict[str, Any] = answer.json()
    assert body["type"].endswith("/" + slug), body
    return body


def _now() -> datetime:
    return datetime.now(UTC)


async def test_who_which_charger_and_which_connector(api: Api, pg: PgConnection) -> None:
    host = await add_user(pg, api.settings, Role.HOST)
    driver = await add_user(pg, api.settings, Role.DRIVER)
    site = await Site(pg, host).create(online=False, approved=False)
    _problem(await _unlock(api, site, driver), 404, "not-found")  # not approved: not public
    await pg.execute("UPDATE chargers SET moderation_status = 'approved'")
    _problem(await _unlock(api, site, host), 403, "forbidden")  # a host is not a driver
    missing = await api.client.post(
        "/chargers/NOPE/sessions", json={"connector": 1}, headers=driver.headers
    )
    _problem(missing, 404, "not-found")
    _problem(await _unlock(api, site, driver, connector=2), 404, "not-found")
    _problem(await _unlock(api, site, driver, extra=1), 422, "invalid-request")
    anonymous = await api.client.post(
        f"/chargers/{site.charger_id}/sessions", json={"connector": 1}
    )
    _problem(anonymous, 401, "unauthorized")


async def test_booking_window_and_pay_as_you_go_rules(api: Api, pg: PgConnection) -> None:
    host = await add_user(pg, api.settings, Role.HOST)
    driver = await add_user(pg, api.settings, Role.DRIVER)
    other = await add_user(pg, api.settings, Role.DRIVER)
    site = await Site(pg, host).create(online=False)
    now = _now()
    theirs = await site.book(other, now + timedelta(minutes=5), now + timedelta(hours=1))
    _problem(await _unlock(api, site, driver, booking_id=theirs), 404, "not-found")
    # Pay-as-you-go: someone else's booking starts within the clearance: the connector is held.
    _problem(await _unlock(api, site, driver), 409, "connector-held")
    await pg.execute("UPDATE bookings SET status = 'cancelled' WHERE id = $1", theirs)

    later = await site.book(driver, now + timedelta(hours=2), now + timedelta(hours=3))
    body = _problem(await _unlock(api, site, driver, booking_id=later), 409, "booking-not-active")
    assert "starts at" in body["detail"]
    past = await site.book(driver, now - timedelta(hours=3), now - timedelta(hours=2))
    body = _problem(await _unlock(api, site, driver, booking_id=past), 409, "booking-not-active")
    assert "ended at" in body["detail"]
    pending = await site.book(
        driver, now + timedelta(hours=4), now + timedelta(hours=5), status="pending"
    )
    body = _problem(await _unlock(api, site, driver, booking_id=pending), 409, "booking-not-active")
    assert "pending" in body["detail"]


async def _booked_offline_site(
    api: Api, pg: PgConnection, *, starts_in: timedelta
) -> tuple[Site, ApiUser, str]:
    """An offline charger and a driver's confirmed booking of it, until an hour from now."""
    host = await add_user(pg, api.settings, Role.HOST)
    driver = await add_user(pg, api.settings, Role.DRIVER)
    site = await Site(pg, host).create(online=False)
    now = _now()
    return site, driver, await site.book(driver, now + starts_in, now + timedelta(hours=1))


async def test_offline_charger_gives_a_booked_driver_a_pin_the_agent_accepts(
    api: Api, pg: PgConnection
) -> None:
    site, driver, booking = await _booked_offline_site(api, pg, starts_in=timedelta(minutes=5))
    now = _now()
    answer = await _unlock(api, site, driver, booking_id=booking)  # 5 min early: allowed
    assert answer.status_code == 202, answer.text
    body = answer.json()
    assert body["outcome"] == "offline"
    check = verify_pin(SECRET, DEVICE, 1, body["pin"], now)
    assert check.status is AuthorizationStatus.ACCEPTED
    rows = await pg.fetch("SELECT outcome, token_jti, booking_id FROM unlock_requests")
    assert len(rows) == 1
    row = rows[0]
    assert (row["outcome"], row["booking_id"]) == ("offline", booking)
    # The reference the agent will report for a session started with that PIN.
    assert row["token_jti"] == pin_ref(body["pin"], DEVICE, 1)

    # Pay-as-you-go has no PIN to fall back on.
    await pg.execute("UPDATE bookings SET status = 'cancelled'")
    body = _problem(await _unlock(api, site, driver), 503, "charger-offline")
    assert body["charger_id"] == site.charger_id
    assert await pg.fetchval("SELECT count(*) FROM unlock_requests WHERE outcome = 'offline'") == 2


async def test_a_silent_charger_gets_a_signed_expiring_command_and_the_driver_a_504(
    api: Api, pg: PgConnection, broker: Broker
) -> None:
    host = await add_user(pg, api.settings, Role.HOST)
    driver = await add_user(pg, api.settings, Role.DRIVER)
    site = await Site(pg, host).create(online=True)
    booking = await site.book(driver, _now() - timedelta(minutes=1), _now() + timedelta(hours=1))

    # Listen as the device (its own ACL), but never answer.
    received: list[tuple[bytes, Any]] = []
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
        await asyncio.wait_for(subscribed.wait(), 10)
        answer = await _unlock(api, site, driver, booking_id=booking)
        body = _problem(answer, 504, "charger-no-answer")
        assert len(body["pin"]) == PIN_DIGITS  # the keypad fallback
        for _ in range(100):
            if received:
                break
            await asyncio.sleep(0.05)
    finally:
        close_threaded(client)

    payload, properties = received[0]
    command = parse_message("cmd", payload)
    assert isinstance(command, Command)
    assert isinstance(command.action, StartSession)
    ttl = api.settings.marketplace.start_command_ttl_s
    assert 0 < properties.MessageExpiryInterval <= ttl
    assert command.expires_at - command.ts == timedelta(seconds=ttl)
    key = load_public_key(api.settings.provisioning.token_public_key_file.read_bytes())
    check = TokenVerifier([key]).verify(
        command.action.token, charger_id=DEVICE, connector=1, now=_now()
    )
    assert check.accepted, check.reason
    assert check.claims is not None
    assert (check.claims.booking_id, check.claims.user_ref) == (booking, driver.id)
    assert check.claims.exp - check.claims.nbf == timedelta(seconds=ttl)
    rows = await pg.fetch(
        "SELECT outcome, token_jti, cmd_id FROM unlock_requests WHERE cmd_id IS NOT NULL"
    )
    assert len(rows) == 1
    row = rows[0]
    assert (row["outcome"], row["token_jti"], row["cmd_id"]) == (
        "timeout",
        check.claims.jti,
        command.cmd_id,
    )
    # The PIN offered as the fallback is recorded too: a session it starts is the driver's.
    fallback = await pg.fetch(
        "SELECT user_id, booking_id FROM unlock_requests WHERE token_jti = $1",
        pin_ref(body["pin"], DEVICE, 1),
    )
    assert [(r["user_id"], r["booking_id"]) for r in fallback] == [(driver.id, booking)]
    commands = await pg.fetch("SELECT payload::text, expires_at FROM device_commands")
    assert len(commands) == 1
    stored = commands[0]
    assert json.loads(stored[0])["token"] == "<redacted>"
    assert command.action.token not in stored[0]
    # The command's seq comes from the counter ingest uses for acks.
    assert (
        await pg.fetchval("SELECT last_seq FROM downlink_sequences WHERE device_id = $1", DEVICE)
        == command.seq
    )


async def test_a_start_handed_to_the_broker_without_a_puback_is_waited_for_not_a_502(
    api: Api, pg: PgConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The PUBLISH was written but no PUBACK came (a timeout, the connection dropped): the
    broker may have delivered it and the charger may start, so the unlock waits for the
    device's answer as for a sent command (here none: the 504 with the keypad fallback, and
    the unlock recorded as a timeout), never a 502 that tells the driver nothing started."""
    state = api.app.state.cloud
    assert isinstance(state, AppState)
    host = await add_user(pg, api.settings, Role.HOST)
    driver = await add_user(pg, api.settings, Role.DRIVER)
    site = await Site(pg, host).create(online=True)
    booking = await site.book(driver, _now() - timedelta(minutes=1), _now() + timedelta(hours=1))
    real_publish = state.broker.publish

    async def publish(*args: Any, **kwargs: Any) -> None:
        await real_publish(*args, **kwargs)  # on the wire, and acknowledged...
        raise BrokerUnacknowledged("no PUBACK (simulated)")  # ...but we never learn it

    monkeypatch.setattr(state.broker, "publish", publish)
    answer = await _unlock(api, site, driver, booking_id=booking)
    body = _problem(answer, 504, "charger-no-answer")
    assert len(body["pin"]) == PIN_DIGITS
    outcomes = await pg.fetch("SELECT outcome FROM unlock_requests WHERE cmd_id IS NOT NULL")
    assert [r["outcome"] for r in outcomes] == ["timeout"]


async def test_sessions_are_visible_to_their_driver_host_and_admins_only(
    api: Api, pg: PgConnection
) -> None:
    host = await add_user(pg, api.settings, Role.HOST)
    driver = await add_user(pg, api.settings, Role.DRIVER)
    stranger = await add_user(pg, api.settings, Role.DRIVER)
    admin = await add_user(pg, api.settings, Role.ADMIN)
    site = await Site(pg, host).create(online=False)
    jti, sid = new_ulid(), new_ulid()
    await pg.execute(
        "INSERT INTO unlock_requests (id, user_id, charger_id, connector_number, device_id, "
        "token_jti, outcome, device_session_id) VALUES ($1, $2, $3, 1, $4, $5, 'started', $6)",
        new_ulid(),
        driver.id,
        site.charger_id,
        DEVICE,
        jti,
        sid,
    )
    path = f"/sessions/{sid}"
    # Before ingest stores an event, the unlock speaks for the session.
    starting = await api.client.get(path, headers=driver.headers)
    assert starting.status_code == 200, starting.text
    assert starting.json()["state"] == "starting"
    await pg.execute(
        "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
        "credential_kind, credential_ref, state, started_at, stopped_at, meter_start_wh, "
        "meter_stop_wh, energy_wh, stop_reason, last_event_seq, events_received) VALUES "
        "($1, $2, 1, $3, 'Token', $4, 'stopped', now() - interval '1 hour', now(), 1000, "
        "3000, 2000, 'Local', 2, 2)",
        DEVICE,
        sid,
        site.charger_id,
        jti,
    )
    for user in (driver, host, admin):
        seen = await api.client.get(path, headers=user.headers)
        assert seen.status_code == 200, seen.text
        assert seen.json()["user_id"] == driver.id  # tied through the token's jti
        assert seen.json()["cost_paise"] == 3000 + 270 + 270  # 2 kWh at 15 rupees, GST 18 %
    assert (await api.client.get(path, headers=stranger.headers)).status_code == 404
    assert (await api.client.post(f"{path}/stop", headers=stranger.headers)).status_code == 404
    _problem(await api.client.post(f"{path}/stop", headers=driver.headers), 409, "conflict")
    mine = await api.client.get("/sessions", headers=driver.headers)
    assert [s["id"] for s in mine.json()["items"]] == [sid]
    assert (await api.client.get("/sessions", headers=stranger.headers)).json()["items"] == []


async def _pin_session(pg: PgConnection, site: Site, pin: str) -> str:
    """A session row as ingest stores it for a start with ``pin`` at the keypad."""
    sid = new_ulid()
    await pg.execute(
        "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
        "credential_kind, credential_ref, state, started_at, meter_start_wh, meter_stop_wh, "
        "energy_wh, offline, last_event_seq, events_received) VALUES "
        "($1, $2, 1, $3, 'Pin', $4, 'active', now(), 0, 0, 0, true, 1, 1)",
        DEVICE,
        sid,
        site.charger_id,
        pin_ref(pin, DEVICE, 1),
    )
    return sid


async def test_asking_for_the_pin_twice_at_once_gives_one_unlock(
    api: Api, pg: PgConnection
) -> None:
    site, driver, booking = await _booked_offline_site(api, pg, starts_in=timedelta(0))
    answers = await asyncio.gather(
        *(_unlock(api, site, driver, booking_id=booking) for _ in range(4))
    )
    assert [a.status_code for a in answers] == [202] * 4, [a.text for a in answers]
    assert len({a.json()["unlock_id"] for a in answers}) == 1
    assert await pg.fetchval("SELECT count(*) FROM unlock_requests") == 1


async def test_a_rebooked_slot_gets_another_pin_which_belongs_to_the_new_driver(
    api: Api, pg: PgConnection
) -> None:
    """The same slot booked again after a cancellation gets another PIN (a PIN is bound to
    its booking: protocols.pins' nonce): its unlock and the sessions it starts are the new
    driver's, and the earlier driver's PIN starts nothing of theirs."""
    host = await add_user(pg, api.settings, Role.HOST)
    first = await add_user(pg, api.settings, Role.DRIVER)
    second = await add_user(pg, api.settings, Role.DRIVER)
    site = await Site(pg, host).create(online=False)
    now = _now()
    start, end = now, now + timedelta(hours=1)
    cancelled = await site.book(first, start, end)
    earlier = await _unlock(api, site, first, booking_id=cancelled)
    assert earlier.status_code == 202, earlier.text
    await pg.execute("UPDATE bookings SET status = 'cancelled' WHERE id = $1", cancelled)
    rebooked = await site.book(second, start, end)
    answer = await _unlock(api, site, second, booking_id=rebooked)
    assert answer.status_code == 202, answer.text
    pin = answer.json()["pin"]
    assert pin != earlier.json()["pin"]
    assert verify_pin(SECRET, DEVICE, 1, pin, _now()).accepted
    rows = await pg.fetch(
        "SELECT user_id, booking_id FROM unlock_requests WHERE id = $1", answer.json()["unlock_id"]
    )
    assert [(r["user_id"], r["booking_id"]) for r in rows] == [(second.id, rebooked)]
    sid = await _pin_session(pg, site, pin)
    assert (await api.client.get(f"/sessions/{sid}", headers=second.headers)).status_code == 200
    assert (await api.client.get(f"/sessions/{sid}", headers=first.headers)).status_code == 404
    mine = await api.client.get("/sessions", headers=second.headers)
    assert [s["id"] for s in mine.json()["items"]] == [sid]
    assert (await api.client.get("/sessions", headers=first.headers)).json()["items"] == []


@pytest.mark.parametrize(
    ("tariff", "energy_wh", "minutes", "expected"),
    [
        # GST included: CGST 9 % + SGST 9 %, each rounded to the nearest paisa.
        (Tariff(PricingMode.PER_KWH, 1800, 0, 500, 0), 0, 0, 500 + 45 + 45),
        # 1.8 paise rounds up; 9 % of 502 is 45.18, 45.
        (Tariff(PricingMode.PER_KWH, 1800, 0, 500, 0), 1, 0, 502 + 45 + 45),
        (Tariff(PricingMode.PER_KWH, 1800, 0, 0, 0), 7400, 60, 13320 + 1199 + 1199),
        # the minimum charge
        (Tariff(PricingMode.PER_KWH, 1800, 0, 0, 5000), 100, 1, 5000 + 450 + 450),
        (Tariff(PricingMode.PER_HOUR, 0, 6000, 0, 0), 9999, 30, 3000 + 270 + 270),
        (Tariff(PricingMode.PER_HOUR, 0, 6000, 100, 0), 0, 90, 9100 + 819 + 819),
    ],
)
def test_cost_so_far_is_integer_paise_from_the_charger_pricing(
    tariff: Tariff, energy_wh: int, minutes: int, expected: int
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    cost = cost_so_far_paise(
        tariff, energy_wh=energy_wh, started_at=start, until=start + timedelta(minutes=minutes)
    )
    assert cost == expected


async def test_my_sessions_merge_named_and_unlock_found_rows_newest_first(
    api: Api, pg: PgConnection
) -> None:
    """``GET /sessions`` pages through both kinds of the driver's sessions in one order:
    rows naming the driver, and rows found through the driver's unlocks."""
    host = await add_user(pg, api.settings, Role.HOST)
    driver = await add_user(pg, api.settings, Role.DRIVER)
    other = await add_user(pg, api.settings, Role.DRIVER)
    site = await Site(pg, host).create(online=False)
    expected: list[str] = []
    rows = (
        (1, driver, False),
        (2, driver, True),
        (3, other, False),
        (4, driver, False),
        (5, other, True),
        (6, driver, True),
    )
    for hours_ago, owner, named in rows:
        jti, sid = new_ulid(), new_ulid()
        await pg.execute(
            "INSERT INTO unlock_requests (id, user_id, charger_id, connector_number, device_id, "
            "token_jti, outcome, device_session_id) VALUES ($1, $2, $3, 1, $4, $5, 'started', $6)",
            new_ulid(),
            owner.id,
            site.charger_id,
            DEVICE,
            jti,
            sid,
        )
        await pg.execute(
            "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
            "user_id, credential_kind, credential_ref, state, started_at, meter_start_wh, "
            "meter_stop_wh, energy_wh, last_event_seq, events_received) VALUES ($1, $2, 1, $3, "
            "$4, 'Token', $5, 'active', now() - make_interval(hours => $6), 0, 0, 0, 1, 1)",
            DEVICE,
            sid,
            site.charger_id,
            owner.id if named else None,
            jti,
            hours_ago,
        )
        if owner is driver:
            expected.append(sid)
    pages = []
    for offset in (0, 2, 4):
        answer = await api.client.get(
            "/sessions", params={"limit": 2, "offset": offset}, headers=driver.headers
        )
        assert answer.status_code == 200, answer.text
        items = answer.json()["items"]
        assert all(s["user_id"] == driver.id for s in items)
        pages.append([s["id"] for s in items])
    assert pages == [expected[:2], expected[2:4], []]
