"""Payments: webhook latency through the real API, and settling stopped sessions.

``python -m bench.payments`` works in a database of its own (``CHARGEMITRA_BENCH_PAYMENTS_
DATABASE_URL``, default ``chargemitra_bench_payments`` on the development server), created on
first use as a copy of ``chargemitra_test`` (or of ``chargemitra``: a new database needs the
``earthdistance`` extension, which only a superuser can create, and a copy of a database
that has it has it too), migrated to head and emptied at the start of each run — the ledger
is append-only, so the bench cannot clean up after itself in a shared database — and a
Redis database of its own (``CHARGEMITRA_BENCH_REDIS_URL``, default db 14). Figures (one
JSON line each, per BENCHMARKS.md):

* ``webhook_p99_ms`` (goal ≤ 50; Razorpay counts an answer after 5 s as a failure):
  ``--rounds`` rounds (after ``--warmup`` uncounted ones, which fill the API's pool) of
  ``--deliveries`` concurrent signed ``payment.captured`` deliveries, each on its own
  connection (a bare HTTP/1.1 client, :mod:`bench.rawhttp`: httpx's own per-request cost
  queued the client, not the server), to ``POST /webhooks/dummy`` of ``chargemitra-cloud serve``
  (its own process and pool, the dummy provider): each is verified, stored once and moves
  an authorized payment of the database to captured, posting its capture to the ledger.
  Client-side latency, all rounds pooled; ``webhook_p50_ms`` beside it, and in ``params``
  the latency of as many deliveries sent one at a time (the service time, no queueing) and
  ``healthz_floor_p99_ms``: after each round, as many ``GET /healthz`` at once on the same
  connections (no body, no database) — what the machine, the server and this client cost
  at that moment, the floor no webhook can go below on a shared machine.
* ``settle_sessions_per_s`` (goal ratio ≥ 0.3): ``--sessions`` stopped sessions, each with
  an authorized prepayment at the dummy provider, settled in-process by ``--concurrency``
  workers through the settle function the API's settle job uses (:func:`cloud.payments.
  settlement.settle_sessions`, batches of ``--batch`` as the job takes them: price by the
  one rule, capture in full, refund the unused part, post the bill, issue the invoice), the
  dummy's capture and refund webhooks applied as the API applies them (through
  :class:`cloud.payments.webhooks.WebhookBatcher`; the refund reaches the ledger through its
  webhook), timed until every session is billed and every webhook applied. Baseline: the
  ledger rows this produced, inserted again with raw asyncpg, one database transaction per
  ledger transaction, by as many workers over a pool as large.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import os
import secrets
import statistics
import tempfile
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import uvloop
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from bench.rawhttp import Http1
from cloud import migrate
from cloud.billing.quote import Rates
from cloud.ledger.service import ledger_total
from cloud.payments.dummy import CARD_SUCCEEDS, SIGNATURE_HEADER, DummyProvider
from cloud.payments.provider import OrderRequest
from cloud.payments.settlement import BATCH, settle_sessions
from cloud.payments.webhooks import WebhookBatcher
from cloud.pg import PgConnection, PgPool, close, connect, open_pool
from cloud.settings import DbSettings, Environment, sqlalchemy_url
from protocols.ids import new_ulid
from tests.support.bookings_fixtures import serve_api
from tests.support.certs import make_certs
from tests.support.cloud_env import TABLES, make_settings
from tests.support.mosquitto import cloud_broker

DEFAULT_DB = "postgresql://chargemitra:chargemitra@127.0.0.1:5432/chargemitra_bench_payments"
DEFAULT_REDIS = "redis://127.0.0.1:6379/14"
#: Databases the bench database is first copied from (they have the extensions).
TEMPLATES = ("chargemitra_test", "chargemitra")
#: The dummy provider's default webhook secret (the served API runs with defaults).
WEBHOOK_SECRET = "dummy-webhook-secret"
#: One hour at 7.4 kW on a ₹18/kWh charger with a ₹5 session fee; ₹200 authorized.
ENERGY_WH, AUTHORIZED_PAISE = 7400, 20000


# --- the database --------------------------------------------------------------------------


async def _ensure_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    parts = urlsplit(url)
    admin = await connect(DbSettings(url=urlunsplit(parts._replace(path="/postgres"))))
    try:
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            return
        errors = []
        for template in TEMPLATES:
            try:
                await admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
                return
            except Exception as exc:  # noqa: BLE001 -- in use or missing: try the next
                errors.append(f"{template}: {exc}")
        raise RuntimeError(f"cannot create {name}: {'; '.join(errors)}")
    finally:
        await close(admin)


def _migrate(url: str) -> None:
    # Alembic's env calls asyncio.run(): in a thread of its own, away from this loop.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(migrate.upgrade, url, "head").result()


async def _world(conn: PgConnection) -> dict[str, str]:
    """A host with a per-kWh charger, and a driver."""
    ids = {k: new_ulid() for k in ("host_user", "host", "driver", "charger")}
    ids["device"] = f"cm-{new_ulid().lower()}"
    await conn.execute(
        "INSERT INTO users (id, name) VALUES ($1, 'Bench host'), ($2, 'Bench driver')",
        ids["host_user"],
        ids["driver"],
    )
    await conn.execute(
        "INSERT INTO hosts (id, user_id, display_name) VALUES ($1, $2, 'Bench')",
        ids["host"],
        ids["host_user"],
    )
    await conn.execute(
        "INSERT INTO devices (id, host_id) VALUES ($1, $2)", ids["device"], ids["host"]
    )
    await conn.execute(
        "INSERT INTO chargers (id, host_id, device_id, name, address, city, state, pincode, "
        "latitude, longitude, price_per_kwh_paise, session_fee_paise, qr_code) VALUES ($1, $2, "
        "$3, 'Bench', '1 Road', 'Pune', 'MH', '411001', 18.5, 73.8, 1800, 500, $4)",
        ids["charger"],
        ids["host"],
        ids["device"],
        ids["charger"][-10:],
    )
    return ids


# --- webhook latency -----------------------------------------------------------------------


def _signed(event: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(event, separators=(",", ":")).encode()
    signature = hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    return body, {SIGNATURE_HEADER: signature, "content-type": "application/json"}


Delivery = tuple[bytes, dict[str, str]]


async def _deliveries(conn: PgConnection, ids: dict[str, str], n: int) -> list[Delivery]:
    """``n`` authorized payments in the database, and a signed ``payment_captured`` for each."""
    rows = []
    for _ in range(n):
        pid = new_ulid()
        rows.append(
            (
                pid,
                ids["driver"],
                "dummy",
                f"order_{pid}",
                f"pay_{pid}",
                AUTHORIZED_PAISE,
                "authorized",
            )
        )
    await conn.copy_records_to_table(
        "payments",
        records=rows,
        columns=[
            "id",
            "user_id",
            "provider",
            "provider_order_id",
            "provider_payment_id",
            "amount_paise",
            "status",
        ],
    )
    return [
        _signed(
            {
                "id": f"evt_{new_ulid()}",
                "type": "payment_captured",
                "order_ref": row[3],
                "payment_ref": row[4],
                "amount_paise": AUTHORIZED_PAISE,
            }
        )
        for row in rows
    ]


async def _deliver(client: Http1, body: bytes, headers: Mapping[str, str]) -> float:
    """One delivery's latency (ms); it must be answered 200 ``applied``."""
    began = time.perf_counter()
    status, answer = await client.request("POST", "/webhooks/dummy", body, headers)
    elapsed = (time.perf_counter() - began) * 1000
    if status != 200 or json.loads(answer)["outcome"] != "applied":
        raise RuntimeError(f"webhook answered {status}: {answer!r}")
    return elapsed


async def _healthz(client: Http1) -> float:
    began = time.perf_counter()
    status, answer = await client.request("GET", "/healthz")
    if status != 200:
        raise RuntimeError(f"/healthz answered {status}: {answer!r}")
    return (time.perf_counter() - began) * 1000


async def _webhooks(
    conn: PgConnection, base_url: str, ids: dict[str, str], args: Any
) -> tuple[list[float], list[float], list[float]]:
    """Latencies (ms) of the concurrent deliveries, of as many sent one at a time, and of as
    many concurrent ``GET /healthz`` (the floor)."""
    where = urlsplit(base_url)
    host, port = where.hostname or "127.0.0.1", where.port or 80
    latencies: list[float] = []
    floor: list[float] = []
    for round_no in range(args.warmup + args.rounds):
        deliveries = await _deliveries(conn, ids, args.deliveries)
        async with AsyncExitStack() as stack:
            # Connections opened (and used once) before the clock starts: a provider's
            # delivery reuses one.
            clients = [await stack.enter_async_context(Http1(host, port)) for _ in deliveries]
            await asyncio.gather(*(_healthz(c) for c in clients))
            start = asyncio.Event()

            async def one(client: Http1, delivery: Delivery, go: asyncio.Event = start) -> float:
                await go.wait()
                return await _deliver(client, *delivery)

            tasks = [
                asyncio.create_task(one(c, d)) for c, d in zip(clients, deliveries, strict=True)
            ]
            start.set()
            measured = await asyncio.gather(*tasks)
            # The floor, right after on the same connections: as many GET /healthz at once
            # (no body, no database): what this machine and this client cost at the moment.
            floor_start = asyncio.Event()

            async def probe(client: Http1, go: asyncio.Event = floor_start) -> float:
                await go.wait()
                return await _healthz(client)

            probes = [asyncio.create_task(probe(c)) for c in clients]
            floor_start.set()
            floor_measured = await asyncio.gather(*probes)
            if round_no >= args.warmup:  # warm-up rounds fill the API's pool, not the figure
                latencies.extend(measured)
                floor.extend(floor_measured)
    # The service time without queueing: the same deliveries one after another.
    serial: list[float] = []
    async with Http1(host, port) as client:
        for delivery in await _deliveries(conn, ids, args.deliveries):
            serial.append(await _deliver(client, *delivery))
    return latencies, serial, floor


# --- settling -------------------------------------------------------------------------------


async def _prepare_sessions(
    conn: PgConnection, provider: DummyProvider, ids: dict[str, str], n: int
) -> list[int]:
    """``n`` stopped sessions, each with its authorized prepayment (at the dummy and in the
    database, claimed by the session)."""
    stop = datetime.now(UTC)
    start = stop - timedelta(hours=1)
    session_ids: list[int] = []
    sessions = [
        (ids["device"], new_ulid(), ids["charger"], ids["driver"], start, stop) for _ in range(n)
    ]
    for chunk in range(0, n, 1000):
        rows = await conn.fetch(
            "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
            "user_id, credential_kind, credential_ref, state, started_at, stopped_at, "
            f"meter_start_wh, meter_stop_wh, energy_wh, last_event_seq, events_received) "
            "SELECT d, s, 1, c, u, 'Remote', s, 'stopped', a, b, 0, "
            f"{ENERGY_WH}, {ENERGY_WH}, 2, 2 FROM unnest($1::text[], $2::text[], $3::text[], "
            "$4::text[], $5::timestamptz[], $6::timestamptz[]) AS t(d, s, c, u, a, b) "
            "RETURNING id",
            *[list(col) for col in zip(*sessions[chunk : chunk + 1000], strict=True)],
        )
        session_ids.extend(r["id"] for r in rows)
    payments = []
    for sid in session_ids:
        pid = new_ulid()
        order = await provider.create_order(
            OrderRequest(receipt=pid, amount_paise=AUTHORIZED_PAISE)
        )
        paid = await provider.pay(order.order_ref, CARD_SUCCEEDS)
        payments.append(
            (
                pid,
                ids["driver"],
                sid,
                "dummy",
                order.order_ref,
                paid.payment_ref,
                AUTHORIZED_PAISE,
                "authorized",
            )
        )
    await conn.copy_records_to_table(
        "payments",
        records=payments,
        columns=[
            "id",
            "user_id",
            "session_id",
            "provider",
            "provider_order_id",
            "provider_payment_id",
            "amount_paise",
            "status",
        ],
    )
    return session_ids


async def _settle(
    url: str, conn: PgConnection, ids: dict[str, str], args: Any
) -> tuple[float, dict[str, Any]]:
    """Seconds to settle ``args.sessions`` sessions, webhooks applied; and what it did."""
    engine = create_async_engine(
        sqlalchemy_url(url), pool_size=args.concurrency * 2, max_overflow=4, pool_timeout=600
    )
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    applied = 0

    async with DummyProvider(env=Environment.TEST, webhook_secret=WEBHOOK_SECRET) as provider:
        session_ids = await _prepare_sessions(conn, provider, ids, args.sessions)
        before = len(provider.sent)

        batcher = WebhookBatcher(sessions)

        async def sink(body: bytes, headers: Mapping[str, str]) -> None:
            nonlocal applied
            try:
                await batcher.apply(provider.parse_webhook(body, headers))
            finally:
                applied += 1

        provider.deliver_to(sink)
        queue: asyncio.Queue[list[int]] = asyncio.Queue()
        for chunk in range(0, len(session_ids), args.batch):
            queue.put_nowait(session_ids[chunk : chunk + args.batch])
        platform = Rates()

        async def worker() -> None:
            while not queue.empty():
                batch = queue.get_nowait()
                await settle_sessions(sessions, provider, batch, platform=platform, tcs_bp=50)

        began = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        while applied < len(provider.sent) - before:
            await asyncio.sleep(0.005)
        seconds = time.perf_counter() - began
    async with sessions() as db:
        total = await ledger_total(db)
    await engine.dispose()
    billed = await conn.fetchval(
        "SELECT count(DISTINCT session_id) FROM ledger_entries WHERE source = 'bill'"
    )
    refunds = await conn.fetchval(
        "SELECT count(*) FROM ledger_entries WHERE source = 'refund' "
        "AND account = 'provider_clearing'"
    )
    if billed != args.sessions or refunds != args.sessions or total != 0:
        raise RuntimeError(f"settled {billed}, refunded {refunds}, ledger total {total}")
    return seconds, {
        "settle": "cloud.payments.settlement.settle_sessions",
        "batch": args.batch,
        "webhooks_applied": applied,
    }


#: One ledger transaction's rows in one statement, as bare as SQL gets.
_RAW_INSERT = (
    "INSERT INTO ledger_entries (txn_id, account, amount_paise, source, session_id, "
    "payment_id, refund_id, memo) SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], "
    "$4::text[], $5::bigint[], $6::text[], $7::text[], $8::text[])"
)


async def _baseline(pool: PgPool, conn: PgConnection, concurrency: int) -> float:
    """Seconds to insert the settle phase's ledger rows again, raw."""
    rows = await conn.fetch(
        "SELECT txn_id, account, amount_paise, source, session_id, payment_id, refund_id, memo "
        "FROM ledger_entries ORDER BY id"
    )
    txns: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        txns.setdefault(r["txn_id"], []).append(tuple(r[k] for k in range(1, 8)))
    queue: asyncio.Queue[list[tuple[Any, ...]]] = asyncio.Queue()
    for entries in txns.values():
        queue.put_nowait(entries)

    async def worker() -> None:
        async with pool.acquire() as c:
            while not queue.empty():
                entries = queue.get_nowait()
                txn_id = new_ulid()
                columns = [[txn_id] * len(entries), *map(list, zip(*entries, strict=True))]
                async with c.transaction():
                    await c.execute(_RAW_INSERT, *columns)

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - began


# --- the run --------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    url = os.environ.get("CHARGEMITRA_BENCH_PAYMENTS_DATABASE_URL", DEFAULT_DB)
    redis_url = os.environ.get("CHARGEMITRA_BENCH_REDIS_URL", DEFAULT_REDIS)
    await _ensure_database(url)
    _migrate(url)
    conn = await connect(DbSettings(url=url))
    try:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        ids = await _world(conn)
        with tempfile.TemporaryDirectory() as tmp:
            api_password = secrets.token_urlsafe(16)
            broker = cloud_broker(
                Path(tmp) / "broker", make_certs(Path(tmp)), {"cloud-api": api_password}
            )
            broker.start()
            try:
                settings = make_settings(
                    url, broker, api_password, username="cloud-api", CHARGEMITRA_REDIS_URL=redis_url
                )
                async with serve_api(settings, Path(tmp) / "api.log") as base_url:
                    latencies, serial, floor = await _webhooks(conn, base_url, ids, args)
            finally:
                broker.stop()
        await conn.execute("TRUNCATE ledger_entries, provider_events")
        settle_s, settle_params = await _settle(url, conn, ids, args)
        async with open_pool(DbSettings(url=url), max_size=args.concurrency) as pool:
            baseline_s = await _baseline(pool, conn, args.concurrency)
    finally:
        await close(conn)

    p99 = _pct(latencies, 0.99)
    rate, baseline = args.sessions / settle_s, args.sessions / baseline_s
    web_params = {
        "deliveries": args.deliveries,
        "rounds": args.rounds,
        "warmup_rounds": args.warmup,
        "samples": len(latencies),
        "client": "bench/rawhttp.py: bare HTTP/1.1, one connection per delivery, uvloop",
    }
    return [
        {
            "bench": "payments",
            "figure": "webhook_p99_ms",
            "value": round(p99, 1),
            "unit": "ms",
            "goal": "<= 50",
            "meets_goal": p99 <= 50,
            "params": web_params
            | {
                "max_ms": round(max(latencies), 1),
                # One delivery at a time, same API: what a delivery costs without queueing.
                "serial_p50_ms": round(statistics.median(serial), 1),
                "serial_p99_ms": round(_pct(serial, 0.99), 1),
                # The same connections' concurrent GET /healthz: the machine's floor now.
                "healthz_floor_p99_ms": round(_pct(floor, 0.99), 1),
            },
        },
        {
            "bench": "payments",
            "figure": "webhook_p50_ms",
            "value": round(statistics.median(latencies), 1),
            "unit": "ms",
            "params": web_params,
        },
        {
            "bench": "payments",
            "figure": "settle_sessions_per_s",
            "value": round(rate, 1),
            "unit": "sessions/s",
            "baseline": "raw asyncpg inserts of the same ledger rows, one transaction per "
            "ledger transaction, same concurrency",
            "baseline_value": round(baseline, 1),
            "ratio": round(rate / baseline, 3),
            "goal": ">= 0.3 ratio",
            "meets_goal": rate / baseline >= 0.3,
            "params": {
                "sessions": args.sessions,
                "concurrency": args.concurrency,
                "provider": "dummy",
                "seconds": round(settle_s, 2),
                "baseline_seconds": round(baseline_s, 2),
            }
            | settle_params,
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sessions", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=8, help="settle workers")
    parser.add_argument(
        "--batch", type=int, default=BATCH, help="sessions per settle call (the job's batch)"
    )
    parser.add_argument("--deliveries", type=int, default=50, help="concurrent webhooks")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2, help="webhook rounds not counted")
    # uvloop, as the API itself runs on: the load generator's own loop costs less CPU.
    for line in uvloop.run(run(parser.parse_args())):
        print(json.dumps(line))


if __name__ == "__main__":
    main()
