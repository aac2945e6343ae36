"""Bookable chargers straight in SQL, the API as a real server process, and the booking race.

Listings are inserted as rows (approved, listed, with connectors and opening windows) so the
booking tests do not depend on the listing endpoints. The race (``race_plan``, ``fire``,
``overlapping_pairs``) is shared by ``tests/cloud/test_booking_race.py`` and
``bench/booking_race.py``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path

import httpx

from cloud.accounts.models import Role
from cloud.pg import PgConnection
from cloud.settings import Settings
from protocols.ids import new_ulid
from tests.support.market import ApiUser, add_user
from tests.support.mosquitto import free_port

#: Default opening hours when a test gives none: every day, all day (time.max is midnight).
ALL_WEEK = tuple((d, dtime(0, 0), dtime.max) for d in range(7))


@dataclass(frozen=True, slots=True)
class ListedCharger:
    id: str
    device_id: str | None
    #: connector number -> connector row id
    connectors: dict[int, str]
    pin_secret: bytes | None


async def add_charger(
    pg: PgConnection,
    host: ApiUser,
    *,
    connectors: Sequence[int] = (1,),
    max_power_w: int = 7400,
    instant_book: bool = True,
    pricing_mode: str = "per_hour",
    price_per_hour_paise: int = 6000,
    price_per_kwh_paise: int = 1800,
    session_fee_paise: int = 0,
    min_charge_paise: int = 0,
    free_cancel_before_min: int = 60,
    late_cancel_fee_paise: int = 5000,
    windows: Sequence[tuple[int, dtime, dtime]] | None = ALL_WEEK,
    with_device: bool = True,
    moderation_status: str = "approved",
    is_listed: bool = True,
    timezone: str = "Asia/Kolkata",
) -> ListedCharger:
    """An approved, listed charger of ``host`` (windows=None: no opening window, never open)."""
    assert host.host_id is not None
    charger_id = new_ulid()
    device_id: str | None = None
    pin_secret: bytes | None = None
    if with_device:
        device_id = f"cm-{new_ulid().lower()}"
        pin_secret = secrets.token_bytes(32)
        await pg.execute(
            "INSERT INTO devices (id, host_id, pin_secret) VALUES ($1, $2, $3)",
            device_id,
            host.host_id,
            pin_secret,
        )
    await pg.execute(
        "INSERT INTO chargers (id, host_id, device_id, name, address, city, state, pincode, "
        "latitude, longitude, pricing_mode, price_per_kwh_paise, price_per_hour_paise, "
        "session_fee_paise, min_charge_paise, instant_book, free_cancel_before_min, "
        "late_cancel_fee_paise, moderation_status, is_listed, qr_code, timezone) "
        "VALUES ($1, $2, $3, 'Home charger', 'MG Road', 'Pune', 'MH', '411001', 18.52, 73.85, "
        "$4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        charger_id,
        host.host_id,
        device_id,
        pricing_mode,
        price_per_kwh_paise,
        price_per_hour_paise,
        session_fee_paise,
        min_charge_paise,
        instant_book,
        free_cancel_before_min,
        late_cancel_fee_paise,
        moderation_status,
        is_listed,
        charger_id[-12:],
        timezone,
    )
    ids: dict[int, str] = {}
    for number in connectors:
        ids[number] = new_ulid()
        await pg.execute(
            "INSERT INTO connectors (id, charger_id, number, type, max_power_w, status) "
            "VALUES ($1, $2, $3, 'Type2', $4, 'Available')",
            ids[number],
            charger_id,
            number,
            max_power_w,
        )
    for weekday, opens, closes in windows or ():
        await pg.execute(
            "INSERT INTO availability_windows (charger_id, weekday, opens_at, closes_at) "
            "VALUES ($1, $2, $3, $4)",
            charger_id,
            weekday,
            opens,
            closes,
        )
    return ListedCharger(charger_id, device_id, ids, pin_secret)


async def insert_booking(
    pg: PgConnection,
    user: ApiUser,
    *,
    charger_id: str,
    connector_id: str,
    start: datetime,
    end: datetime,
    status: str = "confirmed",
) -> str:
    """A booking row straight in SQL (no rules checked); returns its id."""
    booking_id = new_ulid()
    await pg.execute(
        "INSERT INTO bookings (id, user_id, charger_id, connector_id, period, status) "
        "VALUES ($1, $2, $3, $4, tstzrange($5, $6, '[)'), $7)",
        booking_id,
        user.id,
        charger_id,
        connector_id,
        start,
        end,
        status,
    )
    return booking_id


async def block(pg: PgConnection, charger_id: str, start: datetime, end: datetime) -> None:
    await pg.execute(
        "INSERT INTO blocked_periods (charger_id, period, reason) "
        "VALUES ($1, tstzrange($2, $3, '[)'), 'maintenance')",
        charger_id,
        start,
        end,
    )


def next_slot(after: datetime, *, days: int = 1) -> datetime:
    """Midnight UTC ``days`` after ``after``'s date: a 15-minute boundary safely ahead."""
    day = after.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return day + timedelta(days=days)


def booking_body(
    charger: ListedCharger, start: datetime, end: datetime, connector: int = 1
) -> dict[str, object]:
    return {
        "charger_id": charger.id,
        "connector": connector,
        "start": start.isoformat(),
        "end": end.isoformat(),
    }


# --- the API as a process -----------------------------------------------------------------


def api_env(settings: Settings) -> dict[str, str]:
    """The environment that makes ``chargemitra-cloud serve`` load ``settings``' values."""
    s = settings
    values = {
        "CHARGEMITRA_APP_ENV": s.app.env.value,
        "CHARGEMITRA_APP_LOG_LEVEL": "WARNING",
        "CHARGEMITRA_APP_SECRET_KEY": s.app.secret_key.get_secret_value(),
        "CHARGEMITRA_DB_URL": s.db.url,
        "CHARGEMITRA_DB_POOL_SIZE": str(s.db.pool_size),
        "CHARGEMITRA_REDIS_URL": s.redis.url,
        "CHARGEMITRA_REDIS_KEY_PREFIX": s.redis.key_prefix,
        "CHARGEMITRA_MQTT_HOST": s.mqtt.host,
        "CHARGEMITRA_MQTT_PORT": str(s.mqtt.port),
        "CHARGEMITRA_MQTT_USERNAME": s.mqtt.username,
        "CHARGEMITRA_MQTT_PASSWORD": s.mqtt.password.get_secret_value(),
        "CHARGEMITRA_MQTT_KEEPALIVE_S": str(s.mqtt.keepalive_s),
        "CHARGEMITRA_PROVISIONING_TOKEN_PUBLIC_KEY_FILE": str(s.provisioning.token_public_key_file),
        "CHARGEMITRA_MARKETPLACE_PHOTO_DIR": str(s.marketplace.photo_dir),
        "CHARGEMITRA_KYC_DOCUMENT_DIR": str(s.kyc.document_dir),
    }
    if s.kyc.key_file is not None:
        values["CHARGEMITRA_KYC_KEY_FILE"] = str(s.kyc.key_file)
    if s.provisioning.token_private_key_file is not None:
        values["CHARGEMITRA_PROVISIONING_TOKEN_PRIVATE_KEY_FILE"] = str(
            s.provisioning.token_private_key_file
        )
    return values


@asynccontextmanager
async def serve_api(settings: Settings, log_file: Path, **extra_env: str) -> AsyncIterator[str]:
    """``chargemitra-cloud serve`` (uvicorn, its own process and connection pool) on a free
    loopback port, with ``settings``' values and any ``extra_env`` (``CHARGEMITRA_*``
    variables it does not carry: trusted proxies, the log level); its stdout and stderr go
    to ``log_file``. Yields its base URL once ``/healthz`` answers, stops it on exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEMITRA_")}
    env |= api_env(settings) | extra_env
    cli = Path(sys.executable).with_name("chargemitra-cloud")
    base_url = f"http://127.0.0.1:{port}"
    with log_file.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            str(cli),
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        async with httpx.AsyncClient(base_url=base_url) as probe, asyncio.timeout(30):
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"the API exited with {proc.returncode}: see {log_file}")
                try:
                    if (await probe.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        yield base_url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


# --- the race -----------------------------------------------------------------------------

#: Lanes of adjacent one-hour slots: (charger index, connector number, slots, offset minutes).
#: Connector 1 of charger 0 holds 20 back-to-back slots (the hottest part of the GiST index);
#: the other lanes are shifted by 15 or 30 minutes, so slots on different connectors overlap
#: in time and must not conflict. 20 + 10 + 4 x 5 = 50 slots.
RACE_LANES: tuple[tuple[int, int, int, int], ...] = (
    (0, 1, 20, 0),
    (0, 2, 10, 30),
    (1, 1, 5, 0),
    (1, 2, 5, 15),
    (1, 3, 5, 30),
    (1, 4, 5, 45),
)
#: The requests for one slot ``[s, s+60)``, in minutes: all four share ``[s+15, s+45)``, so
#: exactly one can win, and none reaches into the neighbouring slots.
SLOT_VARIANTS: tuple[tuple[int, int], ...] = ((0, 60), (0, 45), (15, 60), (15, 45))


@dataclass(frozen=True, slots=True)
class RaceRequest:
    driver: ApiUser
    slot: int
    body: dict[str, object]


@dataclass(frozen=True, slots=True)
class RacePlan:
    host: ApiUser
    chargers: list[ListedCharger]
    drivers: list[ApiUser]


async def race_setup(pg: PgConnection, settings: Settings, drivers: int = 200) -> RacePlan:
    """One host with two instant-book chargers (2 and 4 connectors, open around the clock)
    and ``drivers`` drivers."""
    host = await add_user(pg, settings, Role.HOST)
    chargers = [
        await add_charger(pg, host, connectors=(1, 2)),
        await add_charger(pg, host, connectors=(1, 2, 3, 4)),
    ]
    users = [await add_user(pg, settings, Role.DRIVER) for _ in range(drivers)]
    return RacePlan(host, chargers, users)


def race_requests(plan: RacePlan, t0: datetime | None = None) -> list[RaceRequest]:
    """One request per driver: each slot of :data:`RACE_LANES` gets the four
    :data:`SLOT_VARIANTS`, so 200 drivers contend for 50 slots (from ``t0``, by default
    midnight UTC two days ahead)."""
    t0 = t0 or next_slot(datetime.now(UTC), days=2)
    requests: list[RaceRequest] = []
    slot = 0
    for charger_index, connector, count, offset_min in RACE_LANES:
        charger = plan.chargers[charger_index]
        for g in range(count):
            slot_start = t0 + timedelta(minutes=offset_min + 60 * g)
            for lo, hi in SLOT_VARIANTS:
                driver = plan.drivers[len(requests) % len(plan.drivers)]
                body = booking_body(
                    charger,
                    slot_start + timedelta(minutes=lo),
                    slot_start + timedelta(minutes=hi),
                    connector,
                )
                requests.append(RaceRequest(driver, slot, body))
            slot += 1
    return requests


@dataclass(frozen=True, slots=True)
class Outcome:
    request: RaceRequest
    status: int
    latency_s: float
    problem_type: str | None


async def fire(base_url: str, requests: Sequence[RaceRequest]) -> tuple[list[Outcome], float]:
    """Send every request at once, each on its own connection (one client per driver, as
    200 phones would); returns the outcomes and the wall time from release to last answer."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=0)
    release = asyncio.Event()
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=120) as client:

        async def one(request: RaceRequest) -> Outcome:
            await release.wait()
            started = time.perf_counter()
            response = await client.post(
                "/bookings", json=request.body, headers=request.driver.headers
            )
            latency = time.perf_counter() - started
            problem = None
            if response.headers.get("content-type", "").startswith("application/problem+json"):
                problem = str(response.json().get("type", ""))
            return Outcome(request, response.status_code, latency, problem)

        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(r)) for r in requests]
            await asyncio.sleep(0)  # every task is now parked on the release
            started = time.perf_counter()
            release.set()
        return [t.result() for t in tasks], time.perf_counter() - started


@dataclass(frozen=True, slots=True)
class RaceRound:
    outcomes: list[Outcome]
    elapsed_s: float
    statuses: Counter[int]
    #: Overlapping active bookings of the plan's chargers afterwards (must be 0).
    overlaps: int


async def race_round(
    base_url: str, pg: PgConnection, plan: RacePlan, requests: Sequence[RaceRequest]
) -> RaceRound:
    """:func:`fire` ``requests`` at the API, then count the answers and the overlaps."""
    outcomes, elapsed = await fire(base_url, requests)
    overlaps = await overlapping_pairs(pg, [c.id for c in plan.chargers])
    return RaceRound(outcomes, elapsed, Counter(o.status for o in outcomes), overlaps)


async def overlapping_pairs(pg: PgConnection, charger_ids: Sequence[str]) -> int:
    """Pairs of active bookings of one connector whose periods overlap (must be 0)."""
    count: int = await pg.fetchval(
        "SELECT count(*) FROM bookings a JOIN bookings b ON a.connector_id = b.connector_id "
        "AND a.id < b.id AND a.period && b.period "
        "WHERE a.status IN ('pending', 'confirmed') AND b.status IN ('pending', 'confirmed') "
        "AND a.charger_id = ANY($1::text[])",
        list(charger_ids),
    )
    return count
