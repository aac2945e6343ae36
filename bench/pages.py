"""The driver's pages on a phone: what the QR page weighs, how fast it answers, and how long
from scanning the sticker to a closed relay.

``python -m bench.pages`` starts the whole marketplace on loopback (tests/support/flow_rig.py, as
``bench.unlock`` does: broker, ingest, the API under uvicorn, a real agent and the simulated
charger; the settle job off) and drives Debian's Chromium through Playwright
(tests/support/browser.py). Figures (one JSON line each, per BENCHMARKS.md):

* ``qr_page_bytes``: everything a first visit to ``/c/{code}`` transfers (a fresh browser
  context, nothing cached, not signed in): the sum of Chromium's ``encodedDataLength`` over
  every response (headers included, as they came over the wire). Goal ≤ 150 KB. The API
  sends no ``Content-Encoding`` itself (a reverse proxy in front compresses), so the figure
  is uncompressed: an upper bound of the compressed one;
* ``qr_page_ttfb_p95_ms`` (and p50): ``GET /c/{code}`` as a browser asks for it, time to the
  response's headers, over ``--requests`` sequential requests. Goal ≤ 50 ms;
* ``scan_to_charging_s``: a signed-in driver opens the QR URL, asks the price of an hour,
  pays with the dummy's test card (the pay form unlocks at once) — until the simulator's
  relay is closed. Median of ``--scans`` runs (each session stopped, not timed). Goal ≤ 10 s.

The goals are absolute; the TTFB also has an in-run baseline for the shared, noisy machine:
``GET /healthz`` of the same server, timed interleaved with the QR page (its ratio says how
much the page's own work — two queries, a template — adds to an answer). Everything but the
broker and the browser runs in this one process and event loop. The database is
``CHARGEMITRA_BENCH_DATABASE_URL`` (default: the development database, migrated to head); the
rows the bench creates are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from playwright.async_api import Browser, Page

from bench.unlock import DEFAULT_DB, _available, _cleanup, _percentile
from cloud import migrate
from cloud.chargers.qr import new_short_code
from cloud.pg import PgConnection, close, connect
from cloud.settings import DbSettings
from tests.support.browser import PHONE, chromium
from tests.support.certs import make_certs
from tests.support.flow_rig import Market, relay_closed, running_market
from tests.support.market import TEST_PASSWORD
from tests.support.mosquitto import cloud_broker

BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
QR_PAGE_GOAL_BYTES = 150 * 1024


async def _qr_page_bytes(browser: Browser, url: str) -> tuple[int, int]:
    """Bytes over the wire and the number of responses of a first, uncached visit."""
    context = await browser.new_context(viewport=PHONE)
    try:
        page = await context.new_page()
        cdp = await context.new_cdp_session(page)
        sizes: list[float] = []
        cdp.on("Network.loadingFinished", lambda event: sizes.append(event["encodedDataLength"]))
        await cdp.send("Network.enable")
        await page.goto(url, wait_until="networkidle")
        return int(sum(sizes)), len(sizes)
    finally:
        await context.close()


async def _ttfb(urls: tuple[str, ...], requests: int) -> list[list[float]]:
    """Time to the response's headers of each URL, ``requests`` rounds, one request per URL
    per round (interleaved: a burst of load on the shared machine hits both alike)."""
    times: list[list[float]] = [[] for _ in urls]
    async with httpx.AsyncClient(timeout=30) as client:
        for _ in range(requests):
            for url, kept in zip(urls, times, strict=True):
                started = time.perf_counter()
                async with client.stream("GET", url, headers={"Accept": BROWSER_ACCEPT}) as answer:
                    kept.append((time.perf_counter() - started) * 1000)
                    if answer.status_code != 200:
                        raise RuntimeError(f"{url} answered {answer.status_code}")
                    await answer.aread()
    return [sorted(kept) for kept in times]


async def _sign_in(page: Page, market: Market) -> None:
    await page.goto(f"{market.api_url}/app/signin")
    await page.fill("#email", market.driver.email)
    await page.fill("#password", TEST_PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.wait_for_url("**/app")


async def _scan_to_charging(page: Page, market: Market, qr_url: str) -> float:
    """Seconds from opening the QR URL to the relay closed; then stops the session."""
    started = time.perf_counter()
    await page.goto(qr_url)
    await page.get_by_role("button", name="See the price").click()
    await page.fill("#card", "4111 1111 1111 1111")
    await page.get_by_role("button", name=re.compile("^Pay ")).click()
    while not relay_closed(market.sim):
        await asyncio.sleep(0.001)
    elapsed = time.perf_counter() - started
    await page.wait_for_url(re.compile(r"/app/sessions/\w+$"))
    session_id = page.url.rsplit("/", 1)[1]
    stop = await market.http.post(f"/sessions/{session_id}/stop", headers=market.driver.headers)
    if stop.status_code != 202:
        raise RuntimeError(f"stop answered {stop.status_code}: {stop.text}")
    await asyncio.wait_for(_available(market), 10)
    return elapsed


async def _measure(market: Market, args: argparse.Namespace) -> dict[str, Any]:
    code = new_short_code()
    await market.pg.execute(
        "UPDATE chargers SET qr_code = $2 WHERE id = $1", market.charger_id, code
    )
    qr_url = f"{market.api_url}/c/{code}"
    async with chromium() as browser:
        page_bytes, responses = await _qr_page_bytes(browser, qr_url)
        ttfb, baseline = await _ttfb((qr_url, f"{market.api_url}/healthz"), args.requests)
        context = await browser.new_context(viewport=PHONE)
        try:
            page = await context.new_page()
            await _sign_in(page, market)
            scans = [await _scan_to_charging(page, market, qr_url) for _ in range(args.scans)]
        finally:
            await context.close()
    return {
        "bytes": page_bytes,
        "responses": responses,
        "ttfb": ttfb,
        "baseline": baseline,
        "scans": sorted(scans),
    }


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    db_url = os.environ.get("CHARGEMITRA_BENCH_DATABASE_URL", DEFAULT_DB)
    await asyncio.to_thread(migrate.upgrade, db_url, "head")
    pg: PgConnection = await connect(DbSettings(url=db_url))
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
                        found = await _measure(market, args)
                    finally:
                        await _cleanup(pg, market)
            finally:
                broker.stop()
    finally:
        await close(pg)
    ttfb, scans = found["ttfb"], found["scans"]
    p50, p95 = _percentile(ttfb, 0.5), _percentile(ttfb, 0.95)
    base_p95 = _percentile(found["baseline"], 0.95)
    scan_s = statistics.median(scans)
    common = {"transport": "loopback, plain HTTP", "browser": "Debian chromium, headless"}
    return [
        {
            "bench": "pages",
            "figure": "qr_page_bytes",
            "value": found["bytes"],
            "unit": "B",
            "goal": "<= 153600",
            "meets_goal": found["bytes"] <= QR_PAGE_GOAL_BYTES,
            "params": {
                **common,
                "responses": found["responses"],
                "cache": "empty",
                "encoding": "none (uncompressed: an upper bound)",
            },
        },
        {
            "bench": "pages",
            "figure": "qr_page_ttfb_p95_ms",
            "value": round(p95, 2),
            "unit": "ms",
            "baseline": "GET /healthz on the same server, interleaved (routing, middleware, "
            "HTTP; no database, no template)",
            "baseline_value": round(base_p95, 2),
            "ratio": round(p95 / base_p95, 2),
            "goal": "<= 50",
            "meets_goal": p95 <= 50,
            "params": {**common, "requests": args.requests, "p50_ms": round(p50, 2)},
        },
        {
            "bench": "pages",
            "figure": "scan_to_charging_s",
            "value": round(scan_s, 2),
            "unit": "s",
            "goal": "<= 10",
            "meets_goal": scan_s <= 10,
            "params": {
                **common,
                "scans": args.scans,
                "all_s": [round(s, 2) for s in scans],
                "flow": "QR page -> price of 1 h -> dummy card -> relay closed, signed in",
            },
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--scans", type=int, default=3)
    for line in asyncio.run(run(parser.parse_args())):
        print(json.dumps(line))


if __name__ == "__main__":
    main()
