"""QR unlock latency: ``POST /chargers/{id}/sessions`` → relay closed → 201, end to end.

``python -m bench.unlock`` starts the whole marketplace on loopback (tests/support/flow_rig.py):
the project's broker (TLS for the device), an ingest worker, the API under uvicorn, the
simulated charger and a real edge agent provisioned with a pairing code. Then a driver
unlocks the charger ``--unlocks`` times (pay-as-you-go, each walk-up paid first with the dummy
provider's test card, not timed; the settle job is off), each time:

1. the API call is sent (t0) and a watcher polls the simulator's contactor every 1 ms;
2. the agent verifies the token, stores the session, closes the relay (t_relay, observed at
   the simulator) and answers; ingest stores the answer and announces it on Redis;
3. the API answers 201 (t_response);

and the session is stopped (not timed) before the next. Figures (one JSON line each, per
BENCHMARKS.md): ``unlock_p50_ms`` / ``unlock_p99_ms`` (t0 → response; goal ≤ 100 / ≤ 300 ms)
and ``relay_closed_p50_ms`` / ``relay_closed_p99_ms`` (t0 → relay closed). No baseline: the
goal is absolute. Everything runs in this one process and event loop (API, ingest, agent and
simulator), so the figures include their contention; the broker is its own process.

The database is ``CHARGEMITRA_BENCH_DATABASE_URL`` (default: the development database,
migrated to head); the rows the bench creates are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from cloud import migrate
from cloud.pg import PgConnection, close, connect
from cloud.settings import DbSettings
from tests.support.certs import make_certs
from tests.support.flow_rig import Market, relay_closed, running_market
from tests.support.market import ApiUser
from tests.support.mosquitto import cloud_broker

DEFAULT_DB = "postgresql://chargemitra:chargemitra@127.0.0.1:5432/chargemitra"
WATCH_INTERVAL_S = 0.001


def _percentile(sorted_ms: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    index = max(0, min(len(sorted_ms) - 1, round(q * len(sorted_ms) + 0.5) - 1))
    return sorted_ms[index]


async def _watch_relay(market: Market, started: float) -> float:
    while not relay_closed(market.sim):
        await asyncio.sleep(WATCH_INTERVAL_S)
    return (time.perf_counter() - started) * 1000


async def _available(market: Market) -> None:
    """Wait until the agent's connector is Available again after a stop (with the EV still
    plugged the agent passes through Finishing first: about 2 s, not timed)."""
    while True:
        if not market.agent.runtime.controllers[1].busy and not relay_closed(market.sim):
            return
        await asyncio.sleep(0.01)


async def pay_walkup(http: httpx.AsyncClient, charger_id: str, driver: ApiUser) -> None:
    """The walk-up's prepayment (issue 16: no unlock without it), with the dummy's test card;
    not timed."""
    body = {"charger_id": charger_id, "connector": 1, "duration_min": 15}
    order = await http.post("/payments", json=body, headers=driver.headers)
    if order.status_code != 201:
        raise RuntimeError(f"walk-up payment answered {order.status_code}: {order.text}")
    paid = await http.post(
        f"/payments/{order.json()['id']}/verify",
        json={"card_number": "4111111111111111"},
        headers=driver.headers,
    )
    if paid.status_code != 200:
        raise RuntimeError(f"payment verify answered {paid.status_code}: {paid.text}")


async def post_unlock(
    http: httpx.AsyncClient, charger_id: str, driver: ApiUser, started: float
) -> tuple[float, str]:
    """``POST /chargers/{id}/sessions`` (the QR unlock): ms from ``started``
    (``time.perf_counter()``) to the 201, and the session id it names."""
    answer = await http.post(
        f"/chargers/{charger_id}/sessions", json={"connector": 1}, headers=driver.headers
    )
    response_ms = (time.perf_counter() - started) * 1000
    if answer.status_code != 201:
        raise RuntimeError(f"unlock answered {answer.status_code}: {answer.text}")
    return response_ms, str(answer.json()["session_id"])


async def stop_session(http: httpx.AsyncClient, session_id: str, driver: ApiUser) -> None:
    """The driver stops the session (not timed)."""
    stop = await http.post(f"/sessions/{session_id}/stop", headers=driver.headers)
    if stop.status_code != 202:
        raise RuntimeError(f"stop answered {stop.status_code}: {stop.text}")


async def _one_unlock(market: Market) -> tuple[float, float]:
    await pay_walkup(market.http, market.charger_id, market.driver)
    started = time.perf_counter()
    watcher = asyncio.create_task(_watch_relay(market, started), name="relay-watch")
    try:
        response_ms, session_id = await post_unlock(
            market.http, market.charger_id, market.driver, started
        )
        relay_ms = await asyncio.wait_for(watcher, 5)
    finally:
        watcher.cancel()
    await stop_session(market.http, session_id, market.driver)
    await asyncio.wait_for(_available(market), 10)
    return response_ms, relay_ms


async def remove_rows(
    pg: PgConnection, *, device_ids: list[str], charger_ids: list[str], user_ids: list[str]
) -> None:
    """Delete what an unlock bench made: its devices' and chargers' rows, its users (and
    their payments: authorized, never settled — the settle job is off — so no ledger rows
    refer to them; a billed session's ledger entries could not be deleted)."""
    for sql, ids in (
        ("DELETE FROM session_events WHERE device_id = ANY($1::text[])", device_ids),
        ("DELETE FROM sessions WHERE device_id = ANY($1::text[])", device_ids),
        ("DELETE FROM auth_decisions WHERE device_id = ANY($1::text[])", device_ids),
        ("DELETE FROM telemetry WHERE device_id = ANY($1::text[])", device_ids),
        ("DELETE FROM telemetry_batches WHERE device_id = ANY($1::text[])", device_ids),
        ("DELETE FROM device_commands WHERE device_id = ANY($1::text[])", device_ids),
        ("DELETE FROM downlink_sequences WHERE device_id = ANY($1::text[])", device_ids),
        ("DELETE FROM dead_letters WHERE device_id = ANY($1::text[])", device_ids),
        ("DELETE FROM device_meters WHERE device_id = ANY($1::text[])", device_ids),
        ("DELETE FROM unlock_requests WHERE charger_id = ANY($1::text[])", charger_ids),
        ("DELETE FROM bookings WHERE charger_id = ANY($1::text[])", charger_ids),
        ("DELETE FROM pairing_codes WHERE charger_id = ANY($1::text[])", charger_ids),
        ("DELETE FROM chargers WHERE id = ANY($1::text[])", charger_ids),
        ("DELETE FROM devices WHERE id = ANY($1::text[])", device_ids),
        ("DELETE FROM payments WHERE user_id = ANY($1::text[])", user_ids),
        ("DELETE FROM hosts WHERE user_id = ANY($1::text[])", user_ids),
        ("DELETE FROM user_roles WHERE user_id = ANY($1::text[])", user_ids),
        ("DELETE FROM users WHERE id = ANY($1::text[])", user_ids),
    ):
        await pg.execute(sql, ids)


async def _cleanup(pg: PgConnection, market: Market) -> None:
    await remove_rows(
        pg,
        device_ids=[market.device_id],
        charger_ids=[market.charger_id],
        user_ids=[market.host.id, market.driver.id, market.admin.id],
    )


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    db_url = os.environ.get("CHARGEMITRA_BENCH_DATABASE_URL", DEFAULT_DB)
    await asyncio.to_thread(migrate.upgrade, db_url, "head")
    pg = await connect(DbSettings(url=db_url))
    responses: list[float] = []
    relays: list[float] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            passwords = {
                "cloud-ingest": secrets.token_urlsafe(16),
                "cloud-api": secrets.token_urlsafe(16),
            }
            certs = make_certs(Path(tmp))
            broker = cloud_broker(Path(tmp) / "broker", certs, passwords)
            broker.start()
            try:
                # No billing: the bench times unlocks, and the rows it made are deleted after
                # (a billed session's ledger entries could not be: the ledger is append-only).
                async with running_market(
                    db_url=db_url,
                    broker=broker,
                    certs=certs,
                    service_passwords=passwords,
                    pg=pg,
                    tmp=Path(tmp),
                    CHARGEMITRA_BILLING_SETTLE_INTERVAL_S="0",
                ) as market:
                    try:
                        for _ in range(args.warmup):
                            await _one_unlock(market)
                        for _ in range(args.unlocks):
                            response_ms, relay_ms = await _one_unlock(market)
                            responses.append(response_ms)
                            relays.append(relay_ms)
                    finally:
                        await _cleanup(pg, market)
            finally:
                broker.stop()
    finally:
        await close(pg)
    responses.sort()
    relays.sort()
    params = {
        "unlocks": args.unlocks,
        "warmup": args.warmup,
        "transport": "loopback; device link MQTT 5 over TLS; meter and relay Modbus TCP",
        "in_process": "API, ingest worker, agent and simulator share one event loop",
        "mean_ms": round(statistics.fmean(responses), 2),
    }
    p50, p99 = _percentile(responses, 0.5), _percentile(responses, 0.99)
    r50, r99 = _percentile(relays, 0.5), _percentile(relays, 0.99)
    return [
        {
            "bench": "unlock",
            "figure": "unlock_p50_ms",
            "value": round(p50, 2),
            "unit": "ms",
            "goal": "<= 100",
            "meets_goal": p50 <= 100,
            "params": params,
        },
        {
            "bench": "unlock",
            "figure": "unlock_p99_ms",
            "value": round(p99, 2),
            "unit": "ms",
            "goal": "<= 300",
            "meets_goal": p99 <= 300,
            "params": params,
        },
        {
            "bench": "unlock",
            "figure": "relay_closed_p50_ms",
            "value": round(r50, 2),
            "unit": "ms",
            "params": params,
        },
        {
            "bench": "unlock",
            "figure": "relay_closed_p99_ms",
            "value": round(r99, 2),
            "unit": "ms",
            "params": params,
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--unlocks", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=5)
    for line in asyncio.run(run(parser.parse_args())):
        print(json.dumps(line))


if __name__ == "__main__":
    main()
