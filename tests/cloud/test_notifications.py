"""Notifications end to end: the outbox row written with the change, the delivery job, real
SMTP (aiosmtpd on loopback), a fake Web Push service that checks RFC 8030/8291/8292, the SMS
outbox, the preference routes, and the crash and concurrency guarantees:

* a booking confirmation reaches the SMTP server with the right recipient, subject, amount
  and times in IST;
* with the SMTP server down the message waits (retried with backoff); the delivering
  process is killed; the server comes back, a new process starts, the mail arrives — once;
* two delivery loops side by side send every message exactly once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import http_ece
import httpx
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from py_vapid import Vapid
from redis.asyncio import Redis

from cloud.accounts.models import Role
from cloud.accounts.sms import SMS_MAX_SEPTETS, RedisSmsOutbox, gsm_septets
from cloud.app import create_app
from cloud.db import open_engine, session_factory
from cloud.ingest.decode import decode
from cloud.ingest.plan import plan_batch
from cloud.ingest.writer import write_batch
from cloud.notifications.channels import open_channels
from cloud.notifications.delivery import Notifier
from cloud.pg import PgConnection
from cloud.settings import Settings
from protocols.enums import MessageKind
from protocols.ids import new_ulid
from protocols.messages import Message, encode_message
from protocols.testing import session_events, status
from protocols.topics import topic
from tests.support.bookings_fixtures import add_charger, api_env, booking_body, next_slot
from tests.support.cloud_env import REDIS_KEY_PREFIX, REDIS_URL, make_settings
from tests.support.fake_http import Answer, Seen, serve
from tests.support.market import Api, ApiUser, add_user
from tests.support.mosquitto import Broker, free_port
from tests.support.smtp_server import LocalSmtp

pytestmark = pytest.mark.integration

IST = ZoneInfo("Asia/Kolkata")
#: Fast retries, so a test waits fractions of a second between tries, not minutes.
FAST = {
    "CHARGEMITRA_NOTIFICATIONS_DELIVER_INTERVAL_S": "0.1",
    "CHARGEMITRA_NOTIFICATIONS_BACKOFF_S": "0.1",
    "CHARGEMITRA_NOTIFICATIONS_BACKOFF_MAX_S": "0.5",
}


def smtp_env(port: int) -> dict[str, str]:
    return FAST | {
        "CHARGEMITRA_NOTIFICATIONS_SMTP_HOST": "127.0.0.1",
        "CHARGEMITRA_NOTIFICATIONS_SMTP_PORT": str(port),
        "CHARGEMITRA_NOTIFICATIONS_SMTP_SECURITY": "none",
        "CHARGEMITRA_NOTIFICATIONS_SMTP_FROM": "ChargeMitra <no-reply@chargemitra.test>",
    }


@pytest.fixture
def smtp() -> Iterator[LocalSmtp]:
    server = LocalSmtp(free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _settings(db_url: str, broker: Broker, passwords: dict[str, str], **extra: str) -> Settings:
    return make_settings(db_url, broker, passwords["cloud-api"], username="cloud-api", **extra)


@asynccontextmanager
async def running_api(settings: Settings) -> AsyncIterator[Api]:
    """The API in this process, its lifespan (and so its delivery job) running."""
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield Api(app, client, settings)


def _rupees(paise: int) -> str:
    # Below ₹1,00,000 Indian and Western grouping agree (the unit tests pin the lakh).
    assert paise < 100_000_00
    return f"₹{paise // 100:,}.{paise % 100:02d}"


def _ist(at: datetime) -> str:
    local = at.astimezone(IST)
    return (
        f"{local:%a} {local.day} {local:%b %Y}, {local:%-I:%M} {local:%p}".replace(
            "AM", "am"
        ).replace("PM", "pm")
        + " IST"
    )


async def _book(api: Api, driver: ApiUser, charger_id: Any, start: datetime) -> dict[str, Any]:
    answer = await api.client.post(
        "/bookings",
        json=booking_body(charger_id, start, start + timedelta(hours=1)),
        headers=driver.headers,
    )
    assert answer.status_code == 201, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def _deliveries(pg: PgConnection) -> list[dict[str, Any]]:
    columns = ("id", "channel", "address", "status", "attempts", "last_error")
    rows = await pg.fetch(f"SELECT {', '.join(columns)} FROM notification_deliveries ORDER BY id")
    return [{c: r[c] for c in columns} for r in rows]


# --- e-mail --------------------------------------------------------------------------------


async def test_a_booking_confirmation_reaches_the_smtp_server(
    db_url: str,
    broker: Broker,
    service_passwords: dict[str, str],
    pg: PgConnection,
    smtp: LocalSmtp,
) -> None:
    settings = _settings(db_url, broker, service_passwords, **smtp_env(smtp.port))
    async with running_api(settings) as api:
        host = await add_user(pg, settings, Role.HOST)
        driver = await add_user(pg, settings, Role.DRIVER)
        charger = await add_charger(pg, host)  # instant book: confirmed at once
        # 04:30 UTC is 10:00 in India (UTC+05:30): the mail must say 10:00 am IST.
        start = next_slot(datetime.now(UTC), days=2) + timedelta(hours=4, minutes=30)
        booking = await _book(api, driver, charger, start)
        assert booking["status"] == "confirmed"
        (mail,) = await smtp.wait_for(1)
        # The relay answers before the job commits: wait for the row it marks sent.
        await _wait_row(pg, "SELECT true FROM notification_deliveries WHERE status <> 'pending'")
    assert mail.rcpt_tos == (driver.email,)
    assert mail.message["To"] == driver.email
    assert mail.message["From"] == "ChargeMitra <no-reply@chargemitra.test>"
    starts = _ist(start)
    assert starts.endswith(", 10:00 am IST")
    assert mail.subject == f"Booking confirmed: Home charger, {starts}"
    text, html = mail.part("plain"), mail.part("html")
    amount = _rupees(booking["amount_paise"])
    ends = _ist(start + timedelta(hours=1))
    for body in (text, html):
        assert amount in body
        assert f"{starts} to {ends}" in body
        assert booking["id"] in body  # the link to the booking
    assert mail.message["Message-ID"].startswith("<notification-")
    rows = await _deliveries(pg)
    assert [(r["channel"], r["status"], r["attempts"]) for r in rows] == [("email", "sent", 1)]


async def _deliver_process(
    settings: Settings, smtp_port: int, log: Path
) -> asyncio.subprocess.Process:
    """``chargemitra-cloud notifications deliver`` on its own, with the fast retries."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEMITRA_")}
    env |= api_env(settings) | smtp_env(smtp_port)
    cli = Path(sys.executable).with_name("chargemitra-cloud")
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            str(cli), "notifications", "deliver", env=env, stdout=out, stderr=out
        )


async def _wait_row(pg: PgConnection, sql: str, *, timeout_s: float = 60) -> None:
    async with asyncio.timeout(timeout_s):
        while not await pg.fetchval(sql):  # noqa: ASYNC110 -- polling another process's rows
            await asyncio.sleep(0.05)


@pytest.mark.fault
async def test_a_dead_smtp_server_delays_the_mail_but_never_loses_it(
    db_url: str,
    broker: Broker,
    service_passwords: dict[str, str],
    pg: PgConnection,
    tmp_path: Path,
) -> None:
    """The relay is down: the delivering process retries; it is killed (SIGKILL) while the
    message still waits; the relay comes back and a new process delivers it, once."""
    port = free_port()  # nothing listens there yet: connections are refused
    # The API writes the outbox row with the booking; it runs no delivery job itself.
    settings = _settings(
        db_url,
        broker,
        service_passwords,
        CHARGEMITRA_NOTIFICATIONS_DELIVER_INTERVAL_S="0",
        **{k: v for k, v in smtp_env(port).items() if "INTERVAL" not in k},
    )
    async with running_api(settings) as api:
        host = await add_user(pg, settings, Role.HOST)
        driver = await add_user(pg, settings, Role.DRIVER)
        charger = await add_charger(pg, host)
        start = next_slot(datetime.now(UTC), days=2)
        await _book(api, driver, charger, start)
    first = await _deliver_process(settings, port, tmp_path / "deliver-1.log")
    try:
        # Tried and failed at least twice, and still pending: delayed, not lost.
        await _wait_row(
            pg,
            "SELECT true FROM notification_deliveries WHERE status = 'pending' "
            "AND attempts >= 2 AND last_error LIKE 'email: relay unreachable%'",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    assert first.returncode == -signal.SIGKILL
    smtp = LocalSmtp(port)
    smtp.start()
    second = await _deliver_process(settings, port, tmp_path / "deliver-2.log")
    try:
        (mail,) = await smtp.wait_for(1)
        await _wait_row(pg, "SELECT true FROM notification_deliveries WHERE status = 'sent'")
        # A few more rounds of the job: nothing is sent again.
        await asyncio.sleep(0.5)
    finally:
        second.terminate()
        await second.wait()
        smtp.stop()
    assert mail.rcpt_tos == (driver.email,)
    assert mail.subject.startswith("Booking confirmed: Home charger")
    assert len(smtp.messages()) == 1
    (row,) = await _deliveries(pg)
    assert row["status"] == "sent"
    assert row["attempts"] >= 3


@dataclass
class SlowSmtp(LocalSmtp):
    """Takes a moment over each message, so two loops are sending at the same time."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        await asyncio.sleep(0.02)
        return await super().handle_DATA(server, session, envelope)


async def test_two_delivery_loops_send_each_message_once(
    db_url: str, broker: Broker, service_passwords: dict[str, str], pg: PgConnection
) -> None:
    smtp = SlowSmtp(free_port())
    smtp.start()
    settings = _settings(db_url, broker, service_passwords, **smtp_env(smtp.port))
    users = [await add_user(pg, settings, Role.DRIVER) for _ in range(40)]
    facts = {
        "booking_id": "B1",
        "charger_id": "C1",
        "charger_name": "Home charger",
        "address": "MG Road, Pune",
        "start": "2026-12-06T04:30:00+00:00",
        "end": "2026-12-06T05:30:00+00:00",
        "amount_paise": 7080,
        "upper_bound": False,
    }
    for user in users:
        await pg.execute(
            "INSERT INTO notification_events (kind, subject_id, user_id, facts) "
            "VALUES ('booking_confirmed', 'B1', $1, $2::jsonb)",
            user.id,
            json.dumps(facts),
        )
    redis = Redis.from_url(REDIS_URL)
    try:
        async with (
            open_engine(settings.db) as engine_a,
            open_engine(settings.db) as engine_b,
            open_channels(settings, redis) as channels,
        ):
            loops = [
                Notifier(session_factory(engine_a), channels, settings),
                Notifier(session_factory(engine_b), channels, settings),
            ]

            asking = asyncio.Lock()  # one test connection, two loops asking

            async def left() -> int:
                async with asking:
                    count: int = await pg.fetchval(
                        "SELECT (SELECT count(*) FROM notification_events "
                        "WHERE expanded_at IS NULL) + (SELECT count(*) FROM "
                        "notification_deliveries WHERE status = 'pending')"
                    )
                    return count

            async def until_done(notifier: Notifier) -> None:
                while await left():
                    await notifier.round()

            async with asyncio.timeout(120):
                await asyncio.gather(until_done(loops[0]), until_done(loops[1]))
    finally:
        await redis.aclose()
        smtp.stop()
    mails = smtp.messages()
    ids = [m.message["Message-ID"] for m in mails]
    assert len(mails) == 40
    assert len(set(ids)) == 40, "a message was sent twice"
    assert sorted(r for m in mails for r in m.rcpt_tos) == sorted(u.email for u in users)
    assert all(n.handled > 0 for n in loops), [n.handled for n in loops]
    rows = await _deliveries(pg)
    assert {(r["status"], r["attempts"]) for r in rows} == {("sent", 1)}


# --- Web Push ------------------------------------------------------------------------------


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class Browser:
    """A user agent's push keys (RFC 8291 section 3.2)."""

    key: ec.EllipticCurvePrivateKey
    auth: bytes

    @classmethod
    def new(cls) -> Browser:
        return cls(ec.generate_private_key(ec.SECP256R1()), secrets.token_bytes(16))

    def subscription(self, endpoint: str) -> dict[str, Any]:
        public = self.key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return {
            "endpoint": endpoint,
            "keys": {"p256dh": _b64url(public), "auth": _b64url(self.auth)},
        }


class PushContractError(AssertionError):
    pass


def check_push_request(
    seen: Seen, *, origin: str, subject: str, browser: Browser
) -> dict[str, Any]:
    """What a push service checks (RFC 8030 section 5, RFC 8292 sections 2-3, RFC 8291
    section 4, RFC 8188 section 2); returns the decrypted message."""
    if seen.method != "POST":
        raise PushContractError(f"push messages are POSTed, not {seen.method}")
    if not seen.headers.get("ttl", "").isdigit():
        raise PushContractError("TTL header missing or not a number (RFC 8030 section 5.2)")
    scheme, _, params = seen.headers.get("authorization", "").partition(" ")
    if scheme != "vapid":
        raise PushContractError(f"Authorization scheme {scheme!r}, not vapid (RFC 8292 section 3)")
    fields = dict(part.strip().split("=", 1) for part in params.split(","))
    token, key = fields["t"], _unb64url(fields["k"])
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), key)
    head_b64, claims_b64, sig_b64 = token.split(".")
    header = json.loads(_unb64url(head_b64))
    if header.get("alg") != "ES256":
        raise PushContractError(f"JWT alg {header.get('alg')!r}, not ES256")
    signature = _unb64url(sig_b64)
    if len(signature) != 64:
        raise PushContractError("an ES256 JWS signature is r || s, 64 bytes (RFC 7518 3.4)")
    der = encode_dss_signature(int.from_bytes(signature[:32]), int.from_bytes(signature[32:]))
    try:
        public.verify(der, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature as exc:
        raise PushContractError("the VAPID JWT does not verify with k") from exc
    claims = json.loads(_unb64url(claims_b64))
    if claims.get("aud") != origin:
        raise PushContractError(f"aud {claims.get('aud')!r} is not the push resource's origin")
    if not time.time() < claims["exp"] <= time.time() + 24 * 3600:
        raise PushContractError("exp must be in the future and at most 24 hours away")
    if claims.get("sub") != subject:
        raise PushContractError(f"sub {claims.get('sub')!r}")
    if seen.headers.get("content-encoding") != "aes128gcm":
        raise PushContractError("Content-Encoding must be aes128gcm (RFC 8291 section 4)")
    body = seen.body
    idlen = body[20]
    if idlen != 65 or body[21] != 0x04:
        raise PushContractError("the keyid must be the sender's 65-byte P-256 public key")
    plain = http_ece.decrypt(body, private_key=browser.key, auth_secret=browser.auth)
    message: dict[str, Any] = json.loads(plain)
    return message


def _vapid_key(directory: Path) -> Path:
    path = directory / "vapid.pem"
    vapid = Vapid()
    vapid.generate_keys()
    vapid.save_key(str(path))
    return path


async def test_web_push_reaches_the_browser_and_a_gone_subscription_is_dropped(
    db_url: str,
    broker: Broker,
    service_passwords: dict[str, str],
    pg: PgConnection,
    tmp_path: Path,
) -> None:
    browser = Browser.new()
    checked: list[dict[str, Any]] = []

    def push_service(seen: Seen) -> Answer:
        message = check_push_request(
            seen, origin=fake.url, subject="mailto:ops@chargemitra.test", browser=browser
        )
        if seen.path.startswith("/gone/"):
            return Answer(410, {"reason": "subscription expired"})
        checked.append(message)
        return Answer(201, {})

    with serve(push_service) as fake:
        settings = _settings(
            db_url,
            broker,
            service_passwords,
            **FAST,
            CHARGEMITRA_NOTIFICATIONS_VAPID_PRIVATE_KEY_FILE=str(_vapid_key(tmp_path)),
            CHARGEMITRA_NOTIFICATIONS_VAPID_SUBJECT="mailto:ops@chargemitra.test",
            CHARGEMITRA_NOTIFICATIONS_PUSH_HOSTS="127.0.0.1",
        )
        async with running_api(settings) as api:
            host = await add_user(pg, settings, Role.HOST)
            driver = await add_user(pg, settings, Role.DRIVER)
            charger = await add_charger(pg, host)
            mine = await api.client.get("/me/notifications", headers=driver.headers)
            assert mine.status_code == 200, mine.text
            server_key = mine.json()["vapid_public_key"]
            ids = []
            for path in ("/push/ok", "/gone/old"):
                answer = await api.client.post(
                    "/me/push-subscriptions",
                    json=browser.subscription(fake.url + path),
                    headers=driver.headers,
                )
                assert answer.status_code == 201, answer.text
                ids.append(answer.json()["id"])
            start = next_slot(datetime.now(UTC), days=2)
            await _book(api, driver, charger, start)
            await _wait_row(
                pg, "SELECT count(*) = 2 FROM notification_deliveries WHERE status <> 'pending'"
            )
            listed = await api.client.get("/me/push-subscriptions", headers=driver.headers)
    assert [s["id"] for s in listed.json()["items"]] == [ids[0]]  # the 410 one is gone
    (message,) = checked
    assert message["kind"] == "booking_confirmed"
    assert message["title"] == f"Booking confirmed: Home charger, {_ist(start)}"
    assert message["url"].endswith(f"/bookings/{await _booking_id(pg)}")
    auth = fake.seen[0].headers["authorization"]
    assert auth.endswith(f"k={server_key}")  # signed with the key browsers subscribe with
    rows = {r["address"]: r for r in await _deliveries(pg)}
    assert rows[ids[0]]["status"] == "sent"
    assert rows[ids[1]]["status"] == "failed"
    assert "410" in rows[ids[1]]["last_error"]


async def _booking_id(pg: PgConnection) -> str:
    booking_id: str = await pg.fetchval("SELECT id FROM bookings")
    return booking_id


async def test_a_push_subscription_must_name_a_known_push_service(
    db_url: str, broker: Broker, service_passwords: dict[str, str], pg: PgConnection, tmp_path: Path
) -> None:
    settings = _settings(
        db_url,
        broker,
        service_passwords,
        CHARGEMITRA_NOTIFICATIONS_VAPID_PRIVATE_KEY_FILE=str(_vapid_key(tmp_path)),
    )
    async with running_api(settings) as api:
        driver = await add_user(pg, settings, Role.DRIVER)
        browser = Browser.new()
        inside = await api.client.post(
            "/me/push-subscriptions",
            json=browser.subscription("http://127.0.0.1:6379/anything"),
            headers=driver.headers,
        )
        known = await api.client.post(
            "/me/push-subscriptions",
            json=browser.subscription("https://fcm.googleapis.com/fcm/send/abc123"),
            headers=driver.headers,
        )
        bad_key = browser.subscription("https://fcm.googleapis.com/fcm/send/def")
        bad_key["keys"]["p256dh"] = _b64url(b"\x02" + b"\x00" * 64)
        refused_key = await api.client.post(
            "/me/push-subscriptions", json=bad_key, headers=driver.headers
        )
    assert inside.status_code == 422, inside.text  # not a push service: never POSTed to
    assert inside.json()["errors"][0]["field"] == "endpoint"
    assert known.status_code == 201, known.text
    assert refused_key.status_code == 422


# --- SMS and preferences ----------------------------------------------------------------------


async def test_a_booking_request_texts_the_host_and_preferences_choose_channels(
    db_url: str,
    broker: Broker,
    service_passwords: dict[str, str],
    pg: PgConnection,
    smtp: LocalSmtp,
) -> None:
    settings = _settings(db_url, broker, service_passwords, **smtp_env(smtp.port))
    phone = f"+9198{secrets.randbelow(10**8):08d}"
    redis = Redis.from_url(REDIS_URL)
    await redis.delete(RedisSmsOutbox(redis, REDIS_KEY_PREFIX).key(phone))
    try:
        async with running_api(settings) as api:
            host = await add_user(pg, settings, Role.HOST, phone=phone)
            await pg.execute("UPDATE users SET phone_verified_at = now() WHERE id = $1", host.id)
            driver = await add_user(pg, settings, Role.DRIVER)
            charger = await add_charger(pg, host, instant_book=False)
            # The driver wants no e-mail about declined requests.
            defaults = await api.client.get("/me/notifications", headers=driver.headers)
            declined = next(
                p for p in defaults.json()["preferences"] if p["kind"] == "booking_declined"
            )
            assert declined == {
                "kind": "booking_declined",
                "email": True,
                "sms": True,
                "push": True,
                "default": True,
            }
            changed = await api.client.put(
                "/me/notifications",
                json={"booking_declined": {"email": False, "sms": False, "push": True}},
                headers=driver.headers,
            )
            assert changed.status_code == 200, changed.text
            empty = await api.client.put("/me/notifications", json={}, headers=driver.headers)
            assert empty.status_code == 422
            start = next_slot(datetime.now(UTC), days=3) + timedelta(hours=4, minutes=30)
            booking = await _book(api, driver, charger, start)
            assert booking["status"] == "pending"
            (request,) = await smtp.wait_for(1)
            await _wait_row(
                pg,
                "SELECT true FROM notification_deliveries WHERE channel = 'sms' "
                "AND status = 'sent'",
            )
            texts = await RedisSmsOutbox(redis, REDIS_KEY_PREFIX).messages(phone)
            decline = await api.client.post(
                f"/bookings/{booking['id']}/decline", headers=host.headers
            )
            assert decline.status_code == 200, decline.text
            await _wait_row(
                pg,
                "SELECT true FROM notification_events WHERE kind = 'booking_declined' "
                "AND expanded_at IS NOT NULL",
            )
            after = await api.client.get("/me/notifications", headers=driver.headers)
    finally:
        await redis.aclose()
    assert request.rcpt_tos == (host.email,)
    assert request.subject == (f"Booking request to approve: Home charger, {_ist(start)}")
    (sms,) = texts
    assert sms.text.startswith("ChargeMitra: booking request for Home charger")
    assert gsm_septets(sms.text) <= SMS_MAX_SEPTETS
    # Declined: the driver chose push only and has no browser subscribed: nothing is sent.
    assert len(smtp.messages()) == 1
    kinds = await pg.fetch(
        "SELECT e.kind, d.channel FROM notification_deliveries d "
        "JOIN notification_events e ON e.id = d.event_id ORDER BY d.id"
    )
    assert [(k["kind"], k["channel"]) for k in kinds] == [
        ("booking_pending", "email"),
        ("booking_pending", "sms"),
    ]
    chosen = next(p for p in after.json()["preferences"] if p["kind"] == "booking_declined")
    assert chosen == {
        "kind": "booking_declined",
        "email": False,
        "sms": False,
        "push": True,
        "default": False,
    }


# --- ingest: sessions and chargers going offline ---------------------------------------------


async def _ingest(pg: PgConnection, *messages: Message) -> None:
    accepted = [decode(topic(m.device_id, _kind(m)), encode_message(m)) for m in messages]
    await write_batch(pg, plan_batch(accepted), dead_letter_payload_max=1024, offline_grace_s=0)


def _kind(message: Message) -> MessageKind:
    return MessageKind.STATUS if type(message).__name__ == "Status" else MessageKind.SESSION


async def test_a_last_will_sharing_a_batch_with_the_status_before_it_takes_the_device_offline(
    pg: PgConnection, market_api: Api
) -> None:
    """A batch holding a device's status and then its Last Will (ingest behind, or the
    device gone right after connecting) leaves it offline and tells its host, as the two
    in separate batches do; a Will then a status leaves it online."""
    host = await add_user(pg, market_api.settings, Role.HOST)
    charger = await add_charger(pg, host)
    device = charger.device_id
    assert device is not None
    will = status(device, 0, online=False)

    async def state() -> tuple[bool, int]:
        online = await pg.fetchval("SELECT online FROM devices WHERE id = $1", device)
        events = await pg.fetchval(
            "SELECT count(*) FROM notification_events WHERE kind = 'charger_offline'"
        )
        return online, events

    await _ingest(pg, status(device, 1, online=True), will)  # connected, then gone
    assert await state() == (False, 1)
    await _ingest(pg, will, status(device, 2, online=True))  # an old Will, then back
    assert await state() == (True, 1)
    await _ingest(pg, status(device, 3, online=True), will)
    assert await state() == (False, 2)


async def test_ingest_queues_session_and_offline_events_once(
    pg: PgConnection, market_api: Api
) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    charger = await add_charger(pg, host)
    device = charger.device_id
    assert device is not None
    started, *updates, stopped = session_events(device, new_ulid(), 1, updates=2)
    await _ingest(pg, started)
    await _ingest(pg, started, updates[0])  # redelivered: no second "started"
    await _ingest(pg, *updates, stopped)
    await _ingest(pg, stopped)  # redelivered: no second "stopped"
    await _ingest(pg, status(device, 10, online=True))
    await _ingest(pg, status(device, 0, online=False))  # the Last Will: it went away
    await _ingest(pg, status(device, 0, online=False))  # a second will: it was offline
    await _ingest(pg, status(device, 11, online=True), status(device, 12, online=False))
    rows = await pg.fetch(
        "SELECT kind, subject_id, user_id, facts FROM notification_events ORDER BY id"
    )
    kinds = [r["kind"] for r in rows]
    assert kinds == ["session_started", "session_stopped", "charger_offline"]
    session_pk = await pg.fetchval("SELECT id FROM sessions")
    assert [r["subject_id"] for r in rows[:2]] == [str(session_pk)] * 2
    stop_facts = json.loads(rows[1]["facts"])
    assert stop_facts["energy_wh"] == 300
    assert rows[2]["user_id"] == host.id
    assert json.loads(rows[2]["facts"])["charger_id"] == charger.id
