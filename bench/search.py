"""Charger search latency through the API over real HTTP, against the bare SQL of the same query.

``python -m bench.search`` seeds 100,000 approved, listed chargers (1 or 2 connectors, a weekly
schedule, an online device each) scattered around 20 Indian cities into the bench database,
starts the project's broker and ``chargemitra-cloud serve`` (uvicorn) on loopback, and sends
``GET /chargers`` requests one at a time over a keep-alive HTTP connection — a mix of
representative searches (plain radius, connector type + power, price cap, "available now",
a two-hour window, a 50 km radius), each around a jittered city centre. Figures (one JSON
line each, per BENCHMARKS.md):

* ``search_p95_ms``, ``search_p50_ms``: client-side latency of the HTTP request (goal:
  p95 ≤ 20 ms), against the same search statement (:func:`cloud.chargers.search.build_sql`,
  same parameters, same order) run directly over asyncpg in the same run. The API does one
  more query (the hits' connectors) and builds JSON; the ratio shows what that costs.

The database is ``CHARGEMITRA_BENCH_DATABASE_URL`` (default: the development database, migrated
to head), as for ``bench.ingest``: a database of its own would need ``earthdistance``, which
only a superuser can create, so the bootstrap would have to provision it. Only the bench
host's rows are written, and they are removed at the end unless ``--keep`` (a run that finds
exactly the bench host's N chargers reuses them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from cloud import migrate
from cloud.chargers import search
from cloud.chargers.models import PricingMode
from cloud.pg import PgConnection, close, connect
from cloud.settings import DbSettings, env_name
from protocols.enums import ConnectorType
from protocols.ids import new_ulid
from tests.support.certs import make_certs
from tests.support.cloud_env import token_public_key
from tests.support.mosquitto import cloud_broker, free_port

DEFAULT_DB = "postgresql://chargemitra:chargemitra@127.0.0.1:5432/chargemitra"
BENCH_HOST = "BENCHHOST0000000000000000"
BENCH_USER = "BENCHUSER0000000000000000"
#: (name, lat, lon, share of the chargers)
CITIES = (
    ("Delhi", 28.6139, 77.2090, 12),
    ("Mumbai", 19.0760, 72.8777, 12),
    ("Bengaluru", 12.9716, 77.5946, 12),
    ("Hyderabad", 17.3850, 78.4867, 8),
    ("Chennai", 13.0827, 80.2707, 8),
    ("Pune", 18.5204, 73.8567, 7),
    ("Kolkata", 22.5726, 88.3639, 7),
    ("Ahmedabad", 23.0225, 72.5714, 5),
    ("Jaipur", 26.9124, 75.7873, 4),
    ("Lucknow", 26.8467, 80.9462, 3),
    ("Chandigarh", 30.7333, 76.7794, 3),
    ("Kochi", 9.9312, 76.2673, 3),
    ("Indore", 22.7196, 75.8577, 3),
    ("Coimbatore", 11.0168, 76.9558, 2),
    ("Nagpur", 21.1458, 79.0882, 2),
    ("Surat", 21.1702, 72.8311, 2),
    ("Bhubaneswar", 20.2961, 85.8245, 2),
    ("Visakhapatnam", 17.6868, 83.2185, 2),
    ("Mysuru", 12.2958, 76.6394, 1),
    ("Guwahati", 26.1445, 91.7362, 1),
)
CONNECTOR_KINDS = (
    ("Type2", "ac", 7400),
    ("Type2", "ac", 22000),
    ("CCS2", "dc", 30000),
    ("CCS2", "dc", 60000),
    ("BharatAC001", "ac", 3300),
    ("Socket3Pin16A", "ac", 3300),
)


def _city_point(rng: random.Random, lat: float, lon: float) -> tuple[float, float]:
    """A point around a city centre: dense in the middle, thinning out to ~40 km."""
    distance_km = min(abs(rng.gauss(0, 12)), 45)
    bearing = rng.uniform(0, 2 * math.pi)
    dlat = distance_km / 111.0 * math.cos(bearing)
    dlon = distance_km / (111.0 * math.cos(math.radians(lat))) * math.sin(bearing)
    return lat + dlat, lon + dlon


async def _remove_seed(conn: PgConnection) -> None:
    for sql in (
        (
            "DELETE FROM availability_windows WHERE charger_id IN "
            "(SELECT id FROM chargers WHERE host_id = $1)"
        ),
        "DELETE FROM connectors WHERE charger_id IN (SELECT id FROM chargers WHERE host_id = $1)",
        "DELETE FROM chargers WHERE host_id = $1",
        "DELETE FROM devices WHERE host_id = $1",
        "DELETE FROM hosts WHERE id = $1",
    ):
        await conn.execute(sql, BENCH_HOST)
    await conn.execute("DELETE FROM users WHERE id = $1", BENCH_USER)


async def _seed(conn: PgConnection, count: int, seed: int) -> bool:
    """Seed ``count`` chargers unless exactly that many are there; True if it seeded."""
    have = await conn.fetchval("SELECT count(*) FROM chargers WHERE host_id = $1", BENCH_HOST)
    if have == count:
        return False
    print(f"bench.search: seeding {count} chargers", file=sys.stderr)
    async with conn.transaction():
        await _remove_seed(conn)
        await conn.execute(
            "INSERT INTO users (id, name) VALUES ($1, 'Bench host') ON CONFLICT DO NOTHING",
            BENCH_USER,
        )
        await conn.execute(
            "INSERT INTO hosts (id, user_id, display_name, kyc_status) "
            "VALUES ($1, $2, 'Bench host', 'verified') ON CONFLICT DO NOTHING",
            BENCH_HOST,
            BENCH_USER,
        )
        rng = random.Random(seed)
        weights = [c[3] for c in CITIES]
        now = datetime.now(UTC)
        chargers: list[tuple[Any, ...]] = []
        connectors: list[tuple[Any, ...]] = []
        windows: list[tuple[Any, ...]] = []
        devices: list[tuple[Any, ...]] = []
        codes: set[str] = set()
        for i in range(count):
            name, lat, lon, _ = rng.choices(CITIES, weights)[0]
            plat, plon = _city_point(rng, lat, lon)
            charger_id = new_ulid()
            device_id = f"cm-bench-{i:06d}"
            per_hour = rng.random() < 0.25
            code = f"B{i:07d}"
            codes.add(code)
            ratings = rng.randint(0, 40)
            devices.append((device_id, BENCH_HOST, rng.random() < 0.9, now))
            chargers.append(
                (
                    charger_id,
                    BENCH_HOST,
                    device_id,
                    f"{name} charger {i}",
                    f"{i} Bench Road",
                    name,
                    "State",
                    "400001",
                    plat,
                    plon,
                    "per_hour" if per_hour else "per_kwh",
                    0 if per_hour else rng.randrange(900, 2600, 50),
                    rng.randrange(6000, 20000, 500) if per_hour else 0,
                    sum(rng.randint(2, 5) for _ in range(ratings)),
                    ratings,
                    "approved",
                    True,
                    code,
                )
            )
            for number in range(1, rng.choice((1, 1, 2)) + 1):
                kind, current, power = rng.choice(CONNECTOR_KINDS)
                status = "Available" if rng.random() < 0.8 else rng.choice(("Charging", "Faulted"))
                connectors.append((new_ulid(), charger_id, number, kind, current, power, status))
            # Most open all day, some 06:00-22:00.
            opens, closes = (0, None) if rng.random() < 0.6 else (6, 22)
            hours = [(d, opens, closes) for d in range(7)]
            for weekday, opens, closes in hours:
                windows.append(
                    (
                        charger_id,
                        weekday,
                        datetime.min.replace(hour=opens).time(),
                        datetime.max.time()
                        if closes is None
                        else datetime.min.replace(hour=closes).time(),
                    )
                )
        await conn.copy_records_to_table(
            "devices", records=devices, columns=("id", "host_id", "online", "last_seen_at")
        )
        await conn.copy_records_to_table(
            "chargers",
            records=chargers,
            columns=(
                "id",
                "host_id",
                "device_id",
                "name",
                "address",
                "city",
                "state",
                "pincode",
                "latitude",
                "longitude",
                "pricing_mode",
                "price_per_kwh_paise",
                "price_per_hour_paise",
                "rating_sum",
                "rating_count",
                "moderation_status",
                "is_listed",
                "qr_code",
            ),
        )
        await conn.copy_records_to_table(
            "connectors",
            records=connectors,
            columns=("id", "charger_id", "number", "type", "current", "max_power_w", "status"),
        )
        await conn.copy_records_to_table(
            "availability_windows",
            records=windows,
            columns=("charger_id", "weekday", "opens_at", "closes_at"),
        )
    for table in ("chargers", "connectors", "availability_windows", "devices"):
        await conn.execute(f"ANALYZE {table}")
    return True


def _queries(rng: random.Random, n: int) -> list[tuple[str, dict[str, Any]]]:
    """``n`` (kind, query-string parameters) drawn from the representative mix."""
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    kinds: list[tuple[str, dict[str, Any]]] = [
        ("radius_5km", {"radius_km": 5}),
        ("type_and_power_10km", {"radius_km": 10, "connector_type": "CCS2", "min_kw": 30}),
        ("price_cap_10km", {"radius_km": 10, "max_price_paise": 1200, "pricing_mode": "per_kwh"}),
        ("available_now_5km", {"radius_km": 5, "available_now": "true"}),
        (
            "window_2h_10km",
            {
                "radius_km": 10,
                "from": (tomorrow + timedelta(hours=9)).isoformat(),
                "to": (tomorrow + timedelta(hours=11)).isoformat(),
            },
        ),
        ("radius_50km_rating", {"radius_km": 50, "min_rating": 4}),
    ]
    weights = [c[3] for c in CITIES]
    out = []
    for i in range(n):
        kind, extra = kinds[i % len(kinds)]
        _, lat, lon, _ = rng.choices(CITIES, weights)[0]
        plat, plon = _city_point(rng, lat, lon)
        out.append((kind, {"lat": round(plat, 5), "lon": round(plon, 5), "page_size": 20, **extra}))
    return out


def _search_query(params: dict[str, Any], offline_after_s: int) -> search.SearchQuery:
    """The same SearchQuery the router builds for ``params`` (for the bare-SQL baseline)."""
    now = datetime.now(UTC)
    availability = None
    if "from" in params:
        availability = search.Availability(
            datetime.fromisoformat(params["from"]), datetime.fromisoformat(params["to"]), live=False
        )
    elif params.get("available_now") == "true":
        availability = search.Availability(
            now,
            now + search.NOW_WINDOW,
            live=True,
            online_since=now - timedelta(seconds=offline_after_s),
        )
    return search.SearchQuery(
        lat=params["lat"],
        lon=params["lon"],
        radius_m=params["radius_km"] * 1000.0,
        connector_type=ConnectorType(params["connector_type"])
        if "connector_type" in params
        else None,
        min_power_w=math.ceil(params.get("min_kw", 0) * 1000),
        max_price_paise=params.get("max_price_paise"),
        pricing_mode=PricingMode(params["pricing_mode"]) if "pricing_mode" in params else None,
        min_rating_hundredths=math.ceil(params.get("min_rating", 0) * 100),
        availability=availability,
        page_size=params["page_size"],
    )


def to_asyncpg(sql: str, params: dict[str, Any]) -> tuple[str, list[Any]]:
    """``:name`` bind parameters (SQLAlchemy text) as asyncpg's ``$n``."""
    order: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in order:
            order.append(name)
        return f"${order.index(name) + 1}"

    converted = re.sub(r"(?<![:\w]):(\w+)", number, sql)
    return converted, [params[name] for name in order]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def _bare_sql(
    conn: PgConnection, queries: list[tuple[str, dict[str, Any]]], offline_after_s: int
) -> list[float]:
    timings = []
    for _kind, params in queries:
        sql, args = to_asyncpg(*search.build_sql(_search_query(params, offline_after_s)))
        started = time.perf_counter()
        # The same transaction shape as the API's: planner settings, then the statement.
        async with conn.transaction():
            for setting in search.PLANNER_SETTINGS:
                await conn.execute(setting)
            await conn.fetch(sql, *args)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


async def _api(
    client: httpx.AsyncClient, queries: list[tuple[str, dict[str, Any]]]
) -> tuple[list[float], dict[str, list[float]], list[int]]:
    timings: list[float] = []
    by_kind: dict[str, list[float]] = {}
    hits: list[int] = []
    for kind, params in queries:
        started = time.perf_counter()
        response = await client.get("/chargers", params=params)
        elapsed = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"search failed: {response.status_code} {response.text}")
        timings.append(elapsed)
        by_kind.setdefault(kind, []).append(elapsed)
        hits.append(len(response.json()["items"]))
    return timings, by_kind, hits


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    db_url = os.environ.get("CHARGEMITRA_BENCH_DATABASE_URL", DEFAULT_DB)
    await asyncio.to_thread(migrate.upgrade, db_url, "head")
    conn = await connect(DbSettings(url=db_url))
    offline_after_s = 180
    try:
        seeded = await _seed(conn, args.chargers, args.seed)
        rng = random.Random(args.seed + 1)
        warmup = _queries(rng, args.warmup)
        measured = _queries(rng, args.requests)
        with tempfile.TemporaryDirectory() as tmp:
            api_password = secrets.token_urlsafe(16)
            broker = cloud_broker(
                Path(tmp) / "broker", make_certs(Path(tmp)), {"cloud-api": api_password}
            )
            broker.start()
            port = free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEMITRA_")} | {
                env_name("app", "env"): "test",
                env_name("app", "secret_key"): secrets.token_urlsafe(32),
                env_name("app", "log_level"): "WARNING",
                env_name("db", "url"): db_url,
                env_name("mqtt", "port"): str(broker.port),
                env_name("mqtt", "username"): "cloud-api",
                env_name("mqtt", "password"): api_password,
                env_name("provisioning", "token_public_key_file"): str(token_public_key(Path(tmp))),
                env_name("marketplace", "device_offline_after_s"): str(offline_after_s),
            }
            cli = Path(sys.executable).with_name("chargemitra-cloud")
            server = await asyncio.create_subprocess_exec(
                str(cli),
                "serve",
                "--port",
                str(port),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                    async with asyncio.timeout(30):
                        while True:
                            try:
                                if (await client.get("/healthz")).status_code == 200:
                                    break
                            except httpx.TransportError:
                                pass
                            await asyncio.sleep(0.1)
                    await _api(client, warmup)
                    await _bare_sql(conn, warmup, offline_after_s)
                    api_ms, by_kind, hits = await _api(client, measured)
                    sql_ms = await _bare_sql(conn, measured, offline_after_s)
            finally:
                server.terminate()
                await server.wait()
                broker.stop()
    finally:
        if not args.keep:
            await _remove_seed(conn)
        await close(conn)
    params = {
        "chargers": args.chargers,
        "requests": args.requests,
        "page_size": 20,
        "transport": "HTTP/1.1 keep-alive over loopback to uvicorn (chargemitra-cloud serve)",
        "mean_hits_per_page": round(statistics.fmean(hits), 1),
        "p95_ms_by_query": {k: round(_percentile(v, 0.95), 2) for k, v in sorted(by_kind.items())},
        "p50_ms_by_query": {k: round(_percentile(v, 0.50), 2) for k, v in sorted(by_kind.items())},
        "seeded_this_run": seeded,
    }
    figures = []
    for q, figure in ((0.95, "search_p95_ms"), (0.50, "search_p50_ms")):
        value, baseline = _percentile(api_ms, q), _percentile(sql_ms, q)
        line: dict[str, Any] = {
            "bench": "search",
            "figure": figure,
            "value": round(value, 2),
            "unit": "ms",
            "baseline": "the same search SQL over asyncpg, no HTTP (same queries, same run)",
            "baseline_value": round(baseline, 2),
            "ratio": round(value / baseline, 2),
        }
        if q == 0.95:
            line |= {"goal": "<= 20 ms", "meets_goal": value <= 20}
        figures.append(line | {"params": params})
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--chargers", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1200)
    parser.add_argument("--warmup", type=int, default=120)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument(
        "--keep", action="store_true", help="leave the seeded chargers for the next run"
    )
    for line in asyncio.run(run(parser.parse_args())):
        print(json.dumps(line))


if __name__ == "__main__":
    main()
