"""Search: the API's answer equals a brute-force haversine over the seeded chargers.

Chargers are seeded straight into the database (hundreds of them through the API would only
slow the test down); a few go through the API where moderation matters. The sphere is
earthdistance's own (``earth()`` = 6,378,168 m), so the boundary cases are exact to well
under the 0.5 m margins used.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import text

from cloud.accounts.models import Role
from cloud.chargers import search
from cloud.chargers.availability import (
    ALWAYS_OPEN,
    END_OF_DAY,
    Blocked,
    Schedule,
    WeeklyWindow,
    is_open,
)
from cloud.pg import PgConnection
from protocols.ids import new_ulid
from tests.cloud.test_listings import assert_problem, create_listing
from tests.support.market import Api, add_user

EARTH_RADIUS_M = 6_378_168.0
CENTRE = (12.9716, 77.5946)  # Bengaluru
IST = ZoneInfo("Asia/Kolkata")


def haversine_m(a: tuple[float, float], b: tuple[float, float]) -> float:
    lat1, lon1, lat2, lon2 = map(math.radians, (*a, *b))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(h))


def destination(
    origin: tuple[float, float], bearing_deg: float, distance_m: float
) -> tuple[float, float]:
    lat1, lon1 = map(math.radians, origin)
    theta = math.radians(bearing_deg)
    delta = distance_m / EARTH_RADIUS_M
    lat2 = math.asin(
        math.sin(lat1) * math.cos(delta) + math.cos(lat1) * math.sin(delta) * math.cos(theta)
    )
    lon2 = lon1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(lat1),
        math.cos(delta) - math.sin(lat1) * math.sin(lat2),
    )
    return math.degrees(lat2), math.degrees(lon2)


@dataclass
class Seeded:
    id: str
    at: tuple[float, float]
    connectors: list[tuple[str, int]]
    price_per_kwh_paise: int = 1800
    mode: str = "per_kwh"
    price_per_hour_paise: int = 0
    rating: tuple[int, int] = (0, 0)
    status: str = "approved"
    listed: bool = True
    windows: tuple[WeeklyWindow, ...] = ALWAYS_OPEN
    blocked: list[Blocked] = field(default_factory=list)
    connector_ids: list[str] = field(default_factory=list)


async def seed(pg: PgConnection, host_id: str, charger: Seeded) -> Seeded:
    await pg.execute(
        "INSERT INTO chargers (id, host_id, name, address, city, state, pincode, latitude, "
        "longitude, pricing_mode, price_per_kwh_paise, price_per_hour_paise, rating_sum, "
        "rating_count, moderation_status, is_listed, qr_code) VALUES ($1, $2, $3, 'addr', "
        "'Bengaluru', 'Karnataka', '560001', $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        charger.id,
        host_id,
        f"Charger {charger.id[-4:]}",
        charger.at[0],
        charger.at[1],
        charger.mode,
        charger.price_per_kwh_paise,
        charger.price_per_hour_paise,
        charger.rating[0],
        charger.rating[1],
        charger.status,
        charger.listed,
        charger.id[-8:],
    )
    for number, (kind, power_w) in enumerate(charger.connectors, start=1):
        connector_id = new_ulid()
        charger.connector_ids.append(connector_id)
        await pg.execute(
            "INSERT INTO connectors (id, charger_id, number, type, max_power_w, status) "
            "VALUES ($1, $2, $3, $4, $5, 'Available')",
            connector_id,
            charger.id,
            number,
            kind,
            power_w,
        )
    for w in charger.windows:
        await pg.execute(
            "INSERT INTO availability_windows (charger_id, weekday, opens_at, closes_at) "
            "VALUES ($1, $2, $3, $4)",
            charger.id,
            w.weekday,
            w.opens_at,
            w.closes_at,
        )
    for b in charger.blocked:
        await pg.execute(
            "INSERT INTO blocked_periods (charger_id, period) VALUES ($1, tstzrange($2, $3))",
            charger.id,
            b.start,
            b.end,
        )
    return charger


async def all_pages(
    client: httpx.AsyncClient, params: dict[str, Any], page_size: int = 100
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    page = 1
    while True:
        response = await client.get(
            "/chargers", params={**params, "page": page, "page_size": page_size}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        items.extend(body["items"])
        if not body["has_more"]:
            return items
        page += 1


def expected(chargers: list[Seeded], radius_m: float, keep: Any = lambda c: True) -> list[str]:
    hits = [
        (haversine_m(CENTRE, c.at), c.id)
        for c in chargers
        if c.status == "approved" and c.listed and keep(c) and haversine_m(CENTRE, c.at) <= radius_m
    ]
    return [i for _, i in sorted(hits)]


async def test_results_match_brute_force_in_order_and_across_pages(
    market_api: Api, pg: PgConnection
) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    assert host.host_id is not None
    rng = random.Random(7)
    chargers: list[Seeded] = []
    for _ in range(120):
        at = destination(CENTRE, rng.uniform(0, 360), rng.uniform(0, 14_000))
        chargers.append(await seed(pg, host.host_id, Seeded(new_ulid(), at, [("Type2", 7400)])))
    # Two at exactly the same spot: the id decides their order, on every page.
    twin = destination(CENTRE, 45, 3000)
    for _ in range(2):
        chargers.append(await seed(pg, host.host_id, Seeded(new_ulid(), twin, [("CCS2", 30000)])))
    # Hidden ones: pending, rejected, unlisted.
    for status, listed in (("pending", True), ("rejected", True), ("approved", False)):
        chargers.append(
            await seed(
                pg,
                host.host_id,
                Seeded(
                    new_ulid(),
                    destination(CENTRE, 0, 100),
                    [("Type2", 7400)],
                    status=status,
                    listed=listed,
                ),
            )
        )
    params = {"lat": CENTRE[0], "lon": CENTRE[1], "radius_km": 10}
    for page_size in (7, 100):
        got = await all_pages(market_api.client, params, page_size)
        assert [g["id"] for g in got] == expected(chargers, 10_000)
        distances = [g["distance_m"] for g in got]
        assert distances == sorted(distances)
        for g in got:
            seeded = next(c for c in chargers if c.id == g["id"])
            assert abs(g["distance_m"] - haversine_m(CENTRE, seeded.at)) < 0.1
    # The page after the last is empty, not an error.
    response = await market_api.client.get(
        "/chargers", params={**params, "page": 100, "page_size": 100}
    )
    assert response.json() == {"items": [], "page": 100, "page_size": 100, "has_more": False}


async def test_radius_boundary_is_inclusive_to_the_metre(market_api: Api, pg: PgConnection) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    assert host.host_id is not None
    inside, outside = [], []
    for bearing in (0, 90, 180, 270, 33):
        inside.append(
            await seed(
                pg,
                host.host_id,
                Seeded(new_ulid(), destination(CENTRE, bearing, 4999.5), [("Type2", 7400)]),
            )
        )
        outside.append(
            await seed(
                pg,
                host.host_id,
                Seeded(new_ulid(), destination(CENTRE, bearing, 5000.5), [("Type2", 7400)]),
            )
        )
    got = await all_pages(market_api.client, {"lat": CENTRE[0], "lon": CENTRE[1], "radius_km": 5})
    assert {g["id"] for g in got} == {c.id for c in inside}


async def test_a_search_is_one_statement_on_connections_that_carry_the_planner_settings(
    market_api: Api, pg: PgConnection
) -> None:
    """The search pool's connections are named and set up at connect; a search's statement
    is the last its backend ran (no COMMIT after it), and when the server has ended the
    pooled connection the search is run once more on a new one, not answered 500."""
    host = await add_user(pg, market_api.settings, Role.HOST)
    assert host.host_id is not None
    near = await seed(
        pg, host.host_id, Seeded(new_ulid(), destination(CENTRE, 45, 900), [("Type2", 7400)])
    )
    where = {"lat": CENTRE[0], "lon": CENTRE[1], "radius_km": 5}
    ours = (
        "SELECT pid, query FROM pg_stat_activity"
        " WHERE application_name = $1 AND datname = current_database()"
    )

    async def search_ids() -> list[str]:
        response = await market_api.client.get("/chargers", params=where)
        assert response.status_code == 200, response.text
        return [hit["id"] for hit in response.json()["items"]]

    assert await search_ids() == [near.id]
    backends = await pg.fetch(ours, search.SEARCH_APP)
    assert len(backends) == 1
    assert backends[0]["query"].startswith("SELECT page.*")  # the search, not a COMMIT
    reader = market_api.app.state.cloud.search_reader
    async with reader.connect() as conn:
        for name, value in search.PLANNER.items():
            assert (await conn.execute(text(f"SHOW {name}"))).scalar_one() == value

    assert await pg.fetchval("SELECT pg_terminate_backend($1)", backends[0]["pid"])
    assert await search_ids() == [near.id]
    after = await pg.fetch(ours, search.SEARCH_APP)
    assert backends[0]["pid"] not in {r["pid"] for r in after}


async def test_filters_match_brute_force(market_api: Api, pg: PgConnection) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    assert host.host_id is not None
    rng = random.Random(11)
    kinds = [
        ("Type2", 7400),
        ("Type2", 22000),
        ("CCS2", 60000),
        ("BharatAC001", 3300),
        ("Socket3Pin16A", 3300),
    ]
    chargers: list[Seeded] = []
    for _ in range(80):
        per_hour = rng.random() < 0.3
        ratings = rng.randint(0, 5)
        chargers.append(
            await seed(
                pg,
                host.host_id,
                Seeded(
                    new_ulid(),
                    destination(CENTRE, rng.uniform(0, 360), rng.uniform(0, 9000)),
                    rng.sample(kinds, rng.randint(1, 2)),
                    mode="per_hour" if per_hour else "per_kwh",
                    price_per_kwh_paise=0 if per_hour else rng.randrange(800, 3000, 100),
                    price_per_hour_paise=rng.randrange(5000, 20000, 500) if per_hour else 0,
                    rating=(sum(rng.randint(1, 5) for _ in range(ratings)), ratings),
                ),
            )
        )
    base = {"lat": CENTRE[0], "lon": CENTRE[1], "radius_km": 10}

    def headline(c: Seeded) -> int:
        return c.price_per_hour_paise if c.mode == "per_hour" else c.price_per_kwh_paise

    cases: list[tuple[dict[str, Any], Any]] = [
        ({"connector_type": "CCS2"}, lambda c: any(k == "CCS2" for k, _ in c.connectors)),
        ({"min_kw": 22}, lambda c: any(p >= 22000 for _, p in c.connectors)),
        (
            {"connector_type": "Type2", "min_kw": 11},
            lambda c: any(k == "Type2" and p >= 11000 for k, p in c.connectors),
        ),
        ({"max_price_paise": 1500}, lambda c: headline(c) <= 1500),
        (
            {"max_price_paise": 1500, "pricing_mode": "per_kwh"},
            lambda c: c.mode == "per_kwh" and headline(c) <= 1500,
        ),
        ({"min_rating": 4}, lambda c: c.rating[1] > 0 and c.rating[0] >= 4 * c.rating[1]),
        ({"min_rating": 3.5}, lambda c: c.rating[1] > 0 and c.rating[0] * 2 >= 7 * c.rating[1]),
    ]
    for extra, keep in cases:
        got = await all_pages(market_api.client, {**base, **extra}, page_size=25)
        assert [g["id"] for g in got] == expected(chargers, 10_000, keep), extra
    hit = (await market_api.client.get("/chargers", params={**base, "page_size": 1})).json()[
        "items"
    ][0]
    seeded = next(c for c in chargers if c.id == hit["id"])
    assert [(k["type"], k["max_power_w"]) for k in hit["connectors"]] == seeded.connectors
    if seeded.rating[1]:
        assert hit["rating"]["average"] == round(seeded.rating[0] / seeded.rating[1], 2)


def _next_monday(now: datetime) -> datetime:
    local = now.astimezone(IST)
    days = (7 - local.weekday()) % 7 or 7
    return datetime.combine(local.date() + timedelta(days=days), time(0), IST)


async def test_availability_window_blocked_period_and_bookings(
    market_api: Api, pg: PgConnection
) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    driver = await add_user(pg, market_api.settings, Role.DRIVER)
    assert host.host_id is not None
    monday = _next_monday(datetime.now(UTC))
    day = [WeeklyWindow(d, time(8), time(20)) for d in range(7)]
    # Evening and early morning windows that touch at midnight.
    night = [WeeklyWindow(d, time(20), END_OF_DAY) for d in range(7)] + [
        WeeklyWindow(d, time(0), time(6)) for d in range(7)
    ]

    def near(bearing: float) -> tuple[float, float]:
        return destination(CENTRE, bearing, 1000)

    daytime = await seed(
        pg, host.host_id, Seeded(new_ulid(), near(0), [("Type2", 7400)], windows=tuple(day))
    )
    overnight = await seed(
        pg, host.host_id, Seeded(new_ulid(), near(90), [("Type2", 7400)], windows=tuple(night))
    )
    blocked = await seed(
        pg,
        host.host_id,
        Seeded(
            new_ulid(),
            near(180),
            [("Type2", 7400)],
            blocked=[
                Blocked(
                    monday + timedelta(hours=9, minutes=30), monday + timedelta(hours=9, minutes=45)
                )
            ],
        ),
    )
    one_booked = await seed(pg, host.host_id, Seeded(new_ulid(), near(270), [("Type2", 7400)]))
    two_one_booked = await seed(
        pg, host.host_id, Seeded(new_ulid(), near(300), [("Type2", 7400), ("CCS2", 30000)])
    )
    cancelled_only = await seed(pg, host.host_id, Seeded(new_ulid(), near(330), [("Type2", 7400)]))
    bookings = [
        (one_booked.connector_ids[0], "confirmed"),
        (two_one_booked.connector_ids[0], "pending"),
        (cancelled_only.connector_ids[0], "cancelled"),
    ]
    for connector_id, status in bookings:
        charger_id = await pg.fetchval(
            "SELECT charger_id FROM connectors WHERE id = $1", connector_id
        )
        await pg.execute(
            "INSERT INTO bookings (id, user_id, charger_id, connector_id, period, status) "
            "VALUES ($1, $2, $3, $4, tstzrange($5, $6), $7)",
            new_ulid(),
            driver.id,
            charger_id,
            connector_id,
            monday + timedelta(hours=9),
            monday + timedelta(hours=10),
            status,
        )

    async def found(start: datetime, end: datetime, **extra: Any) -> set[str]:
        params = {
            "lat": CENTRE[0],
            "lon": CENTRE[1],
            "radius_km": 5,
            "from": start.isoformat(),
            "to": end.isoformat(),
        }
        return {g["id"] for g in await all_pages(market_api.client, {**params, **extra})}

    everyone = {
        daytime.id,
        overnight.id,
        blocked.id,
        one_booked.id,
        two_one_booked.id,
        cancelled_only.id,
    }
    nine = monday + timedelta(hours=9)
    assert await found(nine, nine + timedelta(hours=1)) == everyone - {
        overnight.id,
        blocked.id,
        one_booked.id,
    }
    # The booking on connector 1 is Type2; the free connector of that charger is CCS2.
    assert two_one_booked.id not in await found(
        nine, nine + timedelta(hours=1), connector_type="Type2"
    )
    # [) ranges: a window starting as the booking ends is free.
    ten = monday + timedelta(hours=10)
    assert await found(ten, ten + timedelta(hours=1)) == everyone - {overnight.id}
    # Across midnight: the touching 20:00-24:00 and 00:00-06:00 windows join up.
    late = monday + timedelta(hours=22)
    assert await found(late, late + timedelta(hours=4)) == everyone - {daytime.id}
    # Past the end of the day window.
    evening = monday + timedelta(hours=19, minutes=30)
    assert daytime.id not in await found(evening, evening + timedelta(hours=1))
    # Any offset works: the same instants written in UTC.
    assert await found(
        nine.astimezone(UTC), (nine + timedelta(hours=1)).astimezone(UTC)
    ) == await found(nine, nine + timedelta(hours=1))


async def test_window_search_agrees_with_the_pure_availability_function(
    market_api: Api, pg: PgConnection
) -> None:
    """The SQL schedule test and cloud.chargers.availability agree on random schedules."""
    host = await add_user(pg, market_api.settings, Role.HOST)
    assert host.host_id is not None
    rng = random.Random(3)
    monday = _next_monday(datetime.now(UTC))
    chargers: list[Seeded] = []
    for i in range(40):
        windows: list[WeeklyWindow] = []
        for weekday in range(7):
            cursor = 0
            while cursor < 24 * 4 and rng.random() < 0.7:
                opens = rng.randint(cursor, 24 * 4 - 1)
                closes = rng.randint(opens + 1, 24 * 4)
                windows.append(
                    WeeklyWindow(
                        weekday,
                        time(opens // 4, opens % 4 * 15),
                        END_OF_DAY if closes == 96 else time(closes // 4, closes % 4 * 15),
                    )
                )
                cursor = closes
        blocked = []
        if rng.random() < 0.3:
            start = monday + timedelta(minutes=15 * rng.randint(0, 7 * 96))
            blocked.append(Blocked(start, start + timedelta(minutes=15 * rng.randint(1, 40))))
        chargers.append(
            await seed(
                pg,
                host.host_id,
                Seeded(
                    new_ulid(),
                    destination(CENTRE, i * 9, 500 + i),
                    [("Type2", 7400)],
                    windows=tuple(windows),
                    blocked=blocked,
                ),
            )
        )
    partial = 0
    for _ in range(25):
        start = monday + timedelta(minutes=15 * rng.randint(0, 7 * 96))
        end = start + timedelta(minutes=15 * rng.randint(1, 48))
        got = {
            g["id"]
            for g in await all_pages(
                market_api.client,
                {
                    "lat": CENTRE[0],
                    "lon": CENTRE[1],
                    "radius_km": 2,
                    "from": start.isoformat(),
                    "to": end.isoformat(),
                },
            )
        }
        want = {
            c.id
            for c in chargers
            if is_open(Schedule(IST, c.windows, tuple(c.blocked)), start, end)
        }
        assert got == want, (start, end)
        partial += 0 < len(want) < len(chargers)
    # The draw exercised the interesting case: some open, some closed.
    assert partial >= 10


async def test_available_now_needs_an_online_device_and_a_free_connector(
    market_api: Api, pg: PgConnection
) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    assert host.host_id is not None
    now = datetime.now(UTC)
    cases = {
        "ready": (True, now, "Available"),
        "offline": (False, now, "Available"),
        "silent": (True, now - timedelta(minutes=10), "Available"),
        "charging": (True, now, "Charging"),
        "faulted": (True, now, "Faulted"),
    }
    ids: dict[str, str] = {}
    for i, (name, (online, seen, status)) in enumerate(cases.items()):
        charger = await seed(
            pg,
            host.host_id,
            Seeded(new_ulid(), destination(CENTRE, i * 60, 800), [("Type2", 7400)]),
        )
        device_id = f"cm-{name}"
        await pg.execute(
            "INSERT INTO devices (id, host_id, online, last_seen_at) VALUES ($1, $2, $3, $4)",
            device_id,
            host.host_id,
            online,
            seen,
        )
        await pg.execute("UPDATE chargers SET device_id = $1 WHERE id = $2", device_id, charger.id)
        await pg.execute(
            "UPDATE connectors SET status = $1 WHERE charger_id = $2", status, charger.id
        )
        ids[name] = charger.id
    no_device = await seed(
        pg, host.host_id, Seeded(new_ulid(), destination(CENTRE, 10, 900), [("Type2", 7400)])
    )
    params = {"lat": CENTRE[0], "lon": CENTRE[1], "radius_km": 3}
    got = {g["id"] for g in await all_pages(market_api.client, {**params, "available_now": "true"})}
    assert got == {ids["ready"]}
    # Without the filter every one of them is listed.
    everything = {g["id"] for g in await all_pages(market_api.client, params)}
    assert everything == {*ids.values(), no_device.id}


async def test_listings_made_through_the_api_are_searchable_once_approved(
    market_api: Api, pg: PgConnection
) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    admin = await add_user(pg, market_api.settings, Role.ADMIN)
    created = await create_listing(market_api, host)
    params: dict[str, Any] = {"lat": 18.52, "lon": 73.85, "radius_km": 2, "connector_type": "Type2"}
    assert (await market_api.client.get("/chargers", params=params)).json()["items"] == []
    await market_api.client.post(f"/admin/chargers/{created['id']}/approve", headers=admin.headers)
    items = (await market_api.client.get("/chargers", params=params)).json()["items"]
    assert [i["id"] for i in items] == [created["id"]]
    assert items[0]["pricing"]["price_per_kwh_paise"] == 1800
    assert items[0]["amenities"] == ["parking", "washroom"]


async def test_invalid_search_parameters_are_refused(market_api: Api, pg: PgConnection) -> None:
    client = market_api.client
    ok = {"lat": 12.97, "lon": 77.59}
    soon = datetime.now(UTC) + timedelta(days=1)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"lon": 77.59}, "lat"),
        ({**ok, "lat": 91}, "lat"),
        ({**ok, "lon": -181}, "lon"),
        ({**ok, "lat": "nan"}, "lat"),
        ({**ok, "radius_km": 51}, "radius_km"),
        ({**ok, "radius_km": 0}, "radius_km"),
        ({**ok, "page_size": 101}, "page_size"),
        ({**ok, "page": 0}, "page"),
        ({**ok, "connector_type": "Tesla"}, "connector_type"),
        ({**ok, "min_rating": 6}, "min_rating"),
        ({**ok, "max_price_paise": -1}, "max_price_paise"),
        ({**ok, "from": soon.isoformat()}, "to"),
        ({**ok, "from": soon.isoformat(), "to": soon.isoformat()}, "to"),
        ({**ok, "from": soon.isoformat(), "to": (soon - timedelta(hours=1)).isoformat()}, "to"),
        ({**ok, "from": soon.isoformat(), "to": (soon + timedelta(days=8)).isoformat()}, "to"),
        ({**ok, "from": "2030-01-01T10:00:00", "to": "2030-01-01T11:00:00"}, "from"),
        (
            {
                **ok,
                "available_now": "true",
                "from": soon.isoformat(),
                "to": (soon + timedelta(hours=1)).isoformat(),
            },
            "available_now",
        ),
    ]
    for params, field_name in cases:
        assert_problem(await client.get("/chargers", params=params), 422, field_name)


@dataclass(frozen=True)
class NowCase:
    """One way a charger can be (or not be) available for the next half hour."""

    #: (type, state): "free", "booked" (a confirmed booking over now), "pending" (a pending
    #: one), "soon" (booked from +20 min), "later" (booked from +40 min), "cancelled" (a
    #: cancelled booking over now), or a live status other than Available.
    connectors: tuple[tuple[str, str], ...] = (("Type2", "free"),)
    windows: tuple[WeeklyWindow, ...] = ALWAYS_OPEN
    #: Blocked periods relative to now, in minutes.
    blocked: tuple[tuple[int, int], ...] = ()
    device: str = "online"  # "online", "offline", "silent", "revoked" or "none"
    status: str = "approved"


def _open_until(local_end: datetime) -> tuple[WeeklyWindow, ...]:
    """Open every day, except that the day of ``local_end`` closes at it (the day before
    runs to midnight, so a close just after midnight joins it)."""
    windows = [WeeklyWindow(d, time(0), END_OF_DAY) for d in range(7) if d != local_end.weekday()]
    if local_end.time() > time(0):
        windows.append(WeeklyWindow(local_end.weekday(), time(0), local_end.time()))
    return tuple(windows)


#: A connector state's booking: (from, to) in minutes from now, and its status.
_BOOKED = {
    "booked": (-30, 30, "confirmed"),
    "pending": (-5, 60, "pending"),
    "soon": (20, 80, "confirmed"),
    "later": (40, 100, "confirmed"),
    "cancelled": (-30, 30, "cancelled"),
}


async def test_available_now_and_a_window_match_brute_force_in_order_and_when_nothing_does(
    market_api: Api, pg: PgConnection
) -> None:
    """The "available now" and window searches over every reason a charger is not free —
    booked (pending or confirmed, now or within the half hour), blocked, closed by its hours
    (now or within the half hour), offline, silent, revoked, no device, a connector not
    Available — answer exactly the brute-force set, in (distance, id) order on every page
    size; with nothing free the answer is one empty page."""
    host = await add_user(pg, market_api.settings, Role.HOST)
    driver = await add_user(pg, market_api.settings, Role.DRIVER)
    assert host.host_id is not None
    now = datetime.now(UTC)
    local = now.astimezone(IST)
    half_hour = timedelta(minutes=30)
    closes_soon = _open_until((local + timedelta(minutes=10)).replace(second=0, microsecond=0))
    closed_now = (WeeklyWindow((local.weekday() + 3) % 7, time(0), END_OF_DAY),)
    # The construction says what it means (the pure rule is the SQL's twin).
    assert is_open(Schedule(IST, closes_soon), now, now + timedelta(minutes=5))
    assert not is_open(Schedule(IST, closes_soon), now, now + half_hour)
    assert not is_open(Schedule(IST, closed_now), now, now + half_hour)
    cases = {
        "ready": NowCase(),
        "second_free": NowCase(connectors=(("Type2", "booked"), ("CCS2", "free"))),
        "booked": NowCase(connectors=(("Type2", "booked"),)),
        "pending": NowCase(connectors=(("Type2", "pending"),)),
        "booked_soon": NowCase(connectors=(("Type2", "soon"),)),
        "booked_later": NowCase(connectors=(("CCS2", "later"),)),
        "cancelled": NowCase(connectors=(("Type2", "cancelled"),)),
        "charging": NowCase(connectors=(("Type2", "Charging"),)),
        "faulted": NowCase(connectors=(("Type2", "Faulted"),)),
        "unavailable": NowCase(connectors=(("Type2", "Unavailable"),)),
        "blocked": NowCase(blocked=((-60, 60),)),
        "blocked_soon": NowCase(blocked=((20, 120),)),
        "blocked_before": NowCase(blocked=((-120, -1),)),
        "closes_soon": NowCase(windows=closes_soon),
        "closed": NowCase(windows=closed_now),
        "no_hours": NowCase(windows=()),
        "offline": NowCase(device="offline"),
        "silent": NowCase(device="silent"),
        "revoked": NowCase(device="revoked"),
        "no_device": NowCase(device="none"),
        "pending_listing": NowCase(status="pending"),
    }
    # Free now: no booking, blocked period or closing over [now, now + 30 min), the device
    # online, and a connector Available. A window search ignores the live state but Faulted.
    free_now = {"ready", "second_free", "booked_later", "cancelled", "blocked_before"}
    free_in_window = free_now | {"charging", "unavailable", "offline", "silent", "revoked"}
    free_in_window |= {"no_device"}
    rng = random.Random(5)
    chargers: list[tuple[Seeded, str]] = []
    twin = destination(CENTRE, 200, 2500)
    for name, case in cases.items():
        for i in range(3):
            # The ready ones twice at one spot (the id orders them), one beyond the radius.
            at = (
                twin
                if name == "ready" and i < 2
                else destination(CENTRE, rng.uniform(0, 360), rng.uniform(0, 4900))
            )
            if name == "ready" and i == 2:
                at = destination(CENTRE, 90, 5100)
            connectors = [(kind, 7400) for kind, _ in case.connectors]
            charger = await seed(
                pg,
                host.host_id,
                Seeded(
                    new_ulid(),
                    at,
                    connectors,
                    status=case.status,
                    windows=case.windows,
                    blocked=[
                        Blocked(now + timedelta(minutes=a), now + timedelta(minutes=b))
                        for a, b in case.blocked
                    ],
                ),
            )
            for connector_id, (_, state) in zip(
                charger.connector_ids, case.connectors, strict=True
            ):
                if state in _BOOKED:
                    from_min, to_min, status = _BOOKED[state]
                    await pg.execute(
                        "INSERT INTO bookings (id, user_id, charger_id, connector_id, period, "
                        "status) VALUES ($1, $2, $3, $4, tstzrange($5, $6), $7)",
                        new_ulid(),
                        driver.id,
                        charger.id,
                        connector_id,
                        now + timedelta(minutes=from_min),
                        now + timedelta(minutes=to_min),
                        status,
                    )
                elif state != "free":
                    await pg.execute(
                        "UPDATE connectors SET status = $1 WHERE id = $2", state, connector_id
                    )
            if case.device != "none":
                device_id = f"cm-now-{charger.id.lower()}"
                await pg.execute(
                    "INSERT INTO devices (id, host_id, status, online, last_seen_at) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    device_id,
                    host.host_id,
                    "revoked" if case.device == "revoked" else "active",
                    case.device != "offline",
                    now - timedelta(minutes=10) if case.device == "silent" else now,
                )
                await pg.execute(
                    "UPDATE chargers SET device_id = $1 WHERE id = $2", device_id, charger.id
                )
            chargers.append((charger, name))

    def brute_force(names: set[str], kind: str | None = None) -> list[str]:
        def keep(c: Seeded) -> bool:
            name = next(n for s, n in chargers if s is c)
            if name == "second_free" and kind == "Type2":
                return False  # its free connector is CCS2
            return name in names and (kind is None or any(k == kind for k, _ in c.connectors))

        return expected([c for c, _ in chargers], 5000, keep)

    base: dict[str, Any] = {"lat": CENTRE[0], "lon": CENTRE[1], "radius_km": 5}
    window = {
        "from": (now + timedelta(minutes=1)).isoformat(),
        "to": (now + timedelta(minutes=31)).isoformat(),
    }
    for extra, names in (({"available_now": "true"}, free_now), (window, free_in_window)):
        for kind in (None, "Type2", "CCS2"):
            params = {**base, **extra} | ({"connector_type": kind} if kind else {})
            for page_size in (4, 100):
                got = await all_pages(market_api.client, params, page_size)
                assert [g["id"] for g in got] == brute_force(names, kind), (extra, kind)
    # Nothing free: every device offline, or a connector type no charger has.
    await pg.execute("UPDATE devices SET online = false WHERE host_id = $1", host.host_id)
    nothing: tuple[dict[str, Any], ...] = (
        {**base, "available_now": "true"},
        {**base, "available_now": "true", "radius_km": 50, "page_size": 1},
        {**base, **window, "connector_type": "BharatAC001"},
    )
    for params in nothing:
        response = await market_api.client.get("/chargers", params=params)
        body = response.json()
        assert (body["items"], body["has_more"]) == ([], False), params
