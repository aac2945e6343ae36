"""Booking creation under contention: 200 drivers racing for 50 slots through the real API.

``python -m bench.booking_race`` starts the project's cloud broker on a free port and the API
as ``chargemitra-cloud serve`` (its own process and connection pool), seeds one host with two
instant-book chargers (6 connectors) and 200 drivers, then, per run, releases 200
``POST /bookings`` at once, each on its own connection — the race of
``tests/cloud/test_booking_race.py`` (4 mutually overlapping requests per one-hour slot,
slots on different connectors overlapping in time). Figures (one JSON line each, per
BENCHMARKS.md):

* ``confirmed`` (goal exactly 50) and ``overlaps`` (pairs of active bookings of one connector
  whose periods overlap, counted in SQL; goal 0): the worst run.
* ``bookings_per_s``: requests decided (201 or 409) per second, release to last answer,
  against the same 200 rows inserted with raw asyncpg by 200 tasks over a pool as large as
  the API's (``pool_size`` + SQLAlchemy's default overflow of 10), each in a transaction
  taking the service's per-connector advisory lock first, with the same deadlock retry.
  Median of ``--runs``. ``params`` also gives the raw rate without that lock.
* ``conflicts_per_s`` (409 answers per second), ``booking_p50_ms``, ``booking_p95_ms``
  (client-side latency of each request, all runs pooled).

The database is ``CHARGEMITRA_BENCH_DATABASE_URL`` (default: the development database,
migrated to head); only the bench's own users, hosts, chargers and bookings are written and
removed afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import statistics
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from cloud import migrate
from cloud.pg import (
    DeadlockDetected,
    ExclusionViolation,
    PgConnection,
    PgPool,
    close,
    connect,
    open_pool,
)
from cloud.settings import DbSettings
from protocols.ids import new_ulid
from tests.support.bookings_fixtures import (
    RacePlan,
    RaceRequest,
    race_requests,
    race_round,
    race_setup,
    serve_api,
)
from tests.support.certs import make_certs
from tests.support.cloud_env import make_settings
from tests.support.mosquitto import cloud_broker

DEFAULT_DB = "postgresql://chargemitra:chargemitra@127.0.0.1:5432/chargemitra"
#: SQLAlchemy's default ``max_overflow``: the API can hold pool_size + this many connections.
SQLALCHEMY_OVERFLOW = 10


async def _clear_bookings(conn: PgConnection, plan: RacePlan) -> None:
    await conn.execute(
        "DELETE FROM bookings WHERE charger_id = ANY($1::text[])", [c.id for c in plan.chargers]
    )


async def _remove(conn: PgConnection, plan: RacePlan) -> None:
    """Delete everything :func:`race_setup` created (and only that)."""
    chargers = [c.id for c in plan.chargers]
    devices = [c.device_id for c in plan.chargers if c.device_id]
    users = [plan.host.id, *(d.id for d in plan.drivers)]
    await _clear_bookings(conn, plan)
    await conn.execute("DELETE FROM chargers WHERE id = ANY($1::text[])", chargers)
    await conn.execute("DELETE FROM devices WHERE id = ANY($1::text[])", devices)
    await conn.execute("DELETE FROM hosts WHERE id = $1", plan.host.host_id)
    await conn.execute("DELETE FROM users WHERE id = ANY($1::text[])", users)


async def _baseline(
    pool: PgPool, requests: list[RaceRequest], plan: RacePlan, *, connector_lock: bool
) -> float:
    """Seconds for concurrent raw INSERTs of the same bookings, each in its own transaction,
    after the service's per-connector advisory lock if ``connector_lock`` (deadlocks are
    retried either way)."""
    connector_ids = {
        (c.id, number): cid for c in plan.chargers for number, cid in c.connectors.items()
    }
    release = asyncio.Event()

    async def one(request: RaceRequest) -> bool:
        body = request.body
        charger_id = str(body["charger_id"])
        connector_id = connector_ids[(charger_id, int(str(body["connector"])))]
        start = datetime.fromisoformat(str(body["start"]))
        end = datetime.fromisoformat(str(body["end"]))
        await release.wait()
        for attempt in range(1, 6):
            try:
                async with pool.acquire() as conn, conn.transaction():
                    if connector_lock:
                        await conn.execute(
                            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))",
                            f"cm-booking|{connector_id}",
                        )
                    await conn.execute(
                        "INSERT INTO bookings (id, user_id, charger_id, connector_id, period, "
                        "status, amount_paise) "
                        "VALUES ($1, $2, $3, $4, tstzrange($5, $6, '[)'), 'confirmed', 0)",
                        new_ulid(),
                        request.driver.id,
                        charger_id,
                        connector_id,
                        start,
                        end,
                    )
            except ExclusionViolation:
                return False
            except DeadlockDetected:
                await asyncio.sleep(random.uniform(0, 0.01 * 2**attempt))
                continue
            return True
        return False

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(one(r)) for r in requests]
        await asyncio.sleep(0)
        started = time.perf_counter()
        release.set()
    elapsed = time.perf_counter() - started
    if sum(t.result() for t in tasks) != 50:
        raise RuntimeError("the baseline did not admit exactly one booking per slot")
    return elapsed


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    db_url = os.environ.get("CHARGEMITRA_BENCH_DATABASE_URL", DEFAULT_DB)
    await asyncio.to_thread(migrate.upgrade, db_url, "head")
    conn = await connect(DbSettings(url=db_url))
    confirmed: list[int] = []
    overlaps: list[int] = []
    api_rates: list[float] = []
    conflict_rates: list[float] = []
    baseline_rates: list[float] = []
    unlocked_rates: list[float] = []
    latencies_ms: list[float] = []
    server_errors = 0
    with tempfile.TemporaryDirectory() as tmp:
        api_password = secrets.token_urlsafe(16)
        broker = cloud_broker(
            Path(tmp) / "broker", make_certs(Path(tmp)), {"cloud-api": api_password}
        )
        broker.start()
        settings = make_settings(db_url, broker, api_password, username="cloud-api")
        plan = await race_setup(conn, settings, drivers=args.drivers)
        try:
            requests = race_requests(plan)
            async with (
                serve_api(settings, Path(tmp) / "api.log") as base_url,
                open_pool(
                    DbSettings(url=db_url),
                    max_size=settings.db.pool_size + SQLALCHEMY_OVERFLOW,
                ) as pool,
            ):
                for _ in range(args.runs):
                    await _clear_bookings(conn, plan)
                    result = await race_round(base_url, conn, plan, requests)
                    statuses, elapsed = result.statuses, result.elapsed_s
                    server_errors += sum(n for s, n in statuses.items() if s >= 500)
                    confirmed.append(statuses[201])
                    overlaps.append(result.overlaps)
                    api_rates.append((statuses[201] + statuses[409]) / elapsed)
                    conflict_rates.append(statuses[409] / elapsed)
                    latencies_ms.extend(o.latency_s * 1000 for o in result.outcomes)

                    await _clear_bookings(conn, plan)
                    seconds = await _baseline(pool, requests, plan, connector_lock=True)
                    baseline_rates.append(len(requests) / seconds)
                    await _clear_bookings(conn, plan)
                    seconds = await _baseline(pool, requests, plan, connector_lock=False)
                    unlocked_rates.append(len(requests) / seconds)
        finally:
            await _remove(conn, plan)
            await close(conn)
            broker.stop()

    latencies_ms.sort()
    params: dict[str, Any] = {
        "clients": len(requests),
        "slots": len({r.slot for r in requests}),
        "connectors": sum(len(c.connectors) for c in plan.chargers),
        "runs": args.runs,
        "api_pool": f"{settings.db.pool_size} + {SQLALCHEMY_OVERFLOW} overflow",
        "server_errors": server_errors,
    }
    value, baseline = statistics.median(api_rates), statistics.median(baseline_rates)
    worst_confirmed = max(confirmed, key=lambda n: abs(n - 50))
    return [
        {
            "bench": "booking_race",
            "figure": "confirmed",
            "value": worst_confirmed,
            "unit": "bookings",
            "goal": "exactly 50",
            "meets_goal": all(n == 50 for n in confirmed),
            "params": params | {"per_run": confirmed},
        },
        {
            "bench": "booking_race",
            "figure": "overlaps",
            "value": max(overlaps),
            "unit": "pairs",
            "goal": "0",
            "meets_goal": max(overlaps) == 0,
            "params": params,
        },
        {
            "bench": "booking_race",
            "figure": "bookings_per_s",
            "value": round(value, 1),
            "unit": "requests/s",
            "baseline": "raw asyncpg: the same 200 bookings, each a transaction of the "
            "service's connector lock + INSERT, same concurrency and pool size",
            "baseline_value": round(baseline, 1),
            "ratio": round(value / baseline, 3),
            "params": params
            | {
                "counts": "requests answered 201 or 409",
                # Why the service takes the connector lock: without it the same inserts
                # deadlock, and PostgreSQL only notices after deadlock_timeout.
                "raw_insert_without_lock_per_s": round(statistics.median(unlocked_rates), 1),
            },
        },
        {
            "bench": "booking_race",
            "figure": "conflicts_per_s",
            "value": round(statistics.median(conflict_rates), 1),
            "unit": "409/s",
            "params": params,
        },
        {
            "bench": "booking_race",
            "figure": "booking_p50_ms",
            "value": round(statistics.median(latencies_ms), 1),
            "unit": "ms",
            "params": params,
        },
        {
            "bench": "booking_race",
            "figure": "booking_p95_ms",
            "value": round(latencies_ms[int(0.95 * (len(latencies_ms) - 1))], 1),
            "unit": "ms",
            "params": params,
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--drivers", type=int, default=200, help="distinct driver accounts")
    for line in asyncio.run(run(parser.parse_args())):
        print(json.dumps(line))


if __name__ == "__main__":
    main()
