"""Acceptance (issue 19, the host's pages) in a real browser against the running marketplace
(tests/support/flow_rig.py): the rig's host signs in, adds a charger through the form (a wrong
PIN code first: the error beside the field, the form kept), gets a pairing code on the page, a
second real edge agent (its own simulated site) claims that code through
``POST /devices/claim`` and connects, and the dashboard shows the new charger online and its
page the agent's meter health; the host
approves a pending booking request; the QR sticker is checked; a driver charges on the rig's
charger and is billed, and the earnings page shows the host's share as this week's bar; a
payout is asked for; the dashboard and the charger's page in Hindi.

Each step is screenshot (artifacts/pages/<test>/) and checked with axe-core at 360x640 and
1280x800, light and dark: no serious or critical violation, and no Content-Security-Policy
report in the console.
"""

from __future__ import annotations

import asyncio
import re
from contextlib import AsyncExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud.pg import PgConnection
from cloud.web.format import rupees
from edge_agent.app import Agent
from edge_agent.config import load_config
from edge_agent.provision import claim, write_claim
from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec
from tests.support.browser import artifacts_dir, chromium, tour
from tests.support.certs import Certs
from tests.support.flow_rig import Market, register_wh, running_market, site_config, wait_for
from tests.support.market import TEST_PASSWORD
from tests.support.mosquitto import Broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture
async def market(
    db_url: str,
    broker: Broker,
    certs: Certs,
    service_passwords: dict[str, str],
    pg: PgConnection,
    tmp_path: Path,
) -> Any:
    async with running_market(
        db_url=db_url,
        broker=broker,
        certs=certs,
        service_passwords=service_passwords,
        pg=pg,
        tmp=tmp_path,
        CHARGEMITRA_AUTH_LOGIN_ATTEMPTS_PER_WINDOW="1000",
        # Earnings payable as soon as billed (the ledger stamps entries with the database's
        # clock, which a test cannot move).
        CHARGEMITRA_BILLING_HOLD_DAYS="0",
        CHARGEMITRA_BILLING_SETTLE_INTERVAL_S="0.2",
    ) as running:
        yield running


async def _second_agent(
    stack: AsyncExitStack, market: Market, certs: Certs, code: str, tmp: Path
) -> str:
    """An installer's second site: a simulated charger and a real agent provisioned with the
    pairing code the page showed. Returns the device id it was given."""
    sim = await stack.enter_async_context(
        SimSite(
            SimConfig(
                meters=(MeterSpec("sdm630", 1),),
                relay_unit=2,
                tcp=("127.0.0.1", 0),
                turnaround_s=0.0,
                rfid=False,
                keys=True,
                control=None,
                state_path=None,
            )
        )
    )
    site = tmp / "second-site"
    site.mkdir()
    config = site_config(site, sim)
    claimed = await asyncio.to_thread(claim, market.api_url, code)
    write_claim(claimed, site, ca_file=certs.ca)
    agent = Agent(load_config(config))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop), name="second-agent")

    async def stop_agent() -> None:
        stop.set()
        await asyncio.wait({task}, timeout=30)

    stack.push_async_callback(stop_agent)
    await asyncio.wait_for(agent.ready.wait(), 20)
    return claimed.device_id


async def _billed_session(market: Market) -> int:
    """A walk-up paid, charged through the real agent and meter, stopped and settled (as in
    tests/cloud/test_billing_flow.py); returns what the ledger credited the host."""
    walkup = {"charger_id": market.charger_id, "connector": 1, "duration_min": 30}
    opened = await market.http.post("/payments", json=walkup, headers=market.driver.headers)
    assert opened.status_code == 201, opened.text
    paid = await market.http.post(
        f"/payments/{opened.json()['id']}/verify",
        json={"card_number": "4111 1111 1111 1111"},
        headers=market.driver.headers,
    )
    assert paid.status_code == 200, paid.text
    started = await market.http.post(
        f"/chargers/{market.charger_id}/sessions",
        json={"connector": 1},
        headers=market.driver.headers,
    )
    assert started.status_code == 201, started.text
    session_id = started.json()["session_id"]
    before_wh = register_wh(market.sim)

    async def energy_flowed() -> bool:
        return register_wh(market.sim) >= before_wh + 5

    await wait_for(energy_flowed, "energy through the meter")
    stop = await market.http.post(f"/sessions/{session_id}/stop", headers=market.driver.headers)
    assert stop.status_code == 202, stop.text

    async def settled() -> bool:
        state = await market.pg.fetchval(
            "SELECT billing_state FROM sessions WHERE device_session_id = $1", session_id
        )
        return bool(state == "settled")

    await wait_for(settled, "the session settled")
    credited = await market.pg.fetchval(
        "SELECT -coalesce(sum(amount_paise), 0) FROM ledger_entries WHERE account = $1",
        f"host:{market.host.host_id}",
    )
    assert credited > 0
    return int(credited)


async def test_a_host_adds_pairs_and_runs_a_charger(
    market: Market, certs: Certs, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    out = artifacts_dir(request.node.name)
    start = datetime.now(UTC) + timedelta(days=1)
    booking_id = await market.book(
        market.driver, start=start, end=start + timedelta(hours=1), status="pending"
    )
    async with AsyncExitStack() as stack:
        browser = await stack.enter_async_context(chromium())
        walk = await stack.enter_async_context(tour(browser, out, locale="en-IN"))
        page = walk.page
        await page.goto(f"{market.api_url}/app/host")
        await page.wait_for_url(re.compile(r"/app/signin\?next="))
        await page.fill("#email", market.host.email)
        await page.fill("#password", TEST_PASSWORD)
        await page.get_by_role("button", name="Sign in", exact=True).click()
        await page.wait_for_url("**/app/host")
        await page.get_by_role("heading", name="My chargers").wait_for()
        await walk.check("dashboard")

        # Add a charger: a wrong PIN code first.
        await page.get_by_role("link", name="Add a charger").click()
        await page.wait_for_url("**/app/host/chargers/new")
        await walk.check("charger-form")
        await page.fill("#f-name", "Ravi's driveway")
        await page.fill("#f-address", "7 FC Road, Shivajinagar")
        await page.fill("#f-city", "Pune")
        await page.fill("#f-state", "Maharashtra")
        await page.fill("#f-pincode", "41100")
        await page.fill("#f-latitude", "18.5308")
        await page.fill("#f-longitude", "73.8475")
        await page.select_option("#f-type_1", "Type2")
        await page.fill("#f-power_1", "7.4")
        await page.fill("#f-price", "16.50")
        await page.get_by_role("button", name="Add the charger").click()
        assert await page.inner_text("#e-pincode") == "Enter the 6-digit PIN code."
        assert await page.input_value("#f-address") == "7 FC Road, Shivajinagar"
        assert await page.get_attribute("#f-pincode", "aria-invalid") == "true"
        await walk.check("charger-form-error")
        await page.fill("#f-pincode", "411005")
        await page.get_by_role("button", name="Add the charger").click()
        await page.wait_for_url(re.compile(r"/app/host/chargers/\w+$"))
        charger_id = page.url.rsplit("/", 1)[1]
        price = await market.pg.fetchval(
            "SELECT price_per_kwh_paise FROM chargers WHERE id = $1 AND host_id = $2",
            charger_id,
            market.host.host_id,
        )
        assert price == 1650
        await walk.check("charger-edit")

        # The pairing code, then a second agent claims it and connects.
        await page.goto(f"{market.api_url}/app/host")
        card = page.locator(f'[data-charger="{charger_id}"]')
        assert await card.locator("[data-online]").get_attribute("data-online") == "no"
        await card.get_by_role("button", name="Pair the agent").click()
        code = (await page.inner_text("#pairing-code")).strip()
        assert re.fullmatch(r"[0-9A-Z-]{6,}", code), code
        await walk.check("pairing-code")
        device_id = await _second_agent(stack, market, certs, code, tmp_path)

        async def paired_and_online() -> bool:
            row = await market.pg.fetch(
                "SELECT d.online FROM chargers c JOIN devices d ON d.id = c.device_id "
                "WHERE c.id = $1 AND d.id = $2",
                charger_id,
                device_id,
            )
            return bool(row and row[0]["online"])

        await wait_for(paired_and_online, "the second agent online for the new charger")

        # The charger's page: the second agent's meter as its status reported it (ingest's
        # device_meters), its last good reading a moment ago.
        async def meter_reported() -> bool:
            return bool(
                await market.pg.fetchval(
                    "SELECT count(*) FROM device_meters WHERE device_id = $1 AND available "
                    "AND last_good_at IS NOT NULL",
                    device_id,
                )
            )

        await wait_for(meter_reported, "the second agent's meter health")
        await page.goto(f"{market.api_url}/app/host/chargers/{charger_id}")
        meter = page.locator("#meter-list [data-meter]")
        assert await meter.count() == 1
        assert "sdm630" in await meter.inner_text()
        assert await meter.locator("[data-available]").get_attribute("data-available") == "yes"
        assert "ago (" in await meter.locator("[data-last-good]").inner_text()
        await walk.check("charger-meters")
        await page.goto(f"{market.api_url}/app/host")
        card = page.locator(f'[data-charger="{charger_id}"]')
        assert await card.locator("[data-online]").get_attribute("data-online") == "yes"
        assert "Online" in await card.inner_text()

        # The booking request, approved.
        requests = page.locator(f'[data-booking="{booking_id}"]')
        await requests.wait_for()
        await walk.check("dashboard-online")
        await requests.get_by_role("button", name="Approve").click()
        await page.wait_for_url("**/app/host")
        status = await market.pg.fetchval("SELECT status FROM bookings WHERE id = $1", booking_id)
        assert status == "confirmed"
        assert await page.locator(f'[data-booking="{booking_id}"]').count() == 0

        # The sticker.
        await page.goto(f"{market.api_url}/app/host/chargers/{charger_id}/sticker")
        assert await page.locator("img.qr").get_attribute("src") is not None
        await walk.check("sticker")

        # Earnings: a driver charges on the rig's charger and is billed (the ledger credits
        # the host); the page shows it as this week's bar, and a payout is asked for.
        share = await _billed_session(market)
        await page.goto(f"{market.api_url}/app/host/earnings")
        assert await page.inner_text("#earned") == rupees(share)
        bars = page.locator("svg.chart rect.bar")
        assert await bars.count() == 8
        assert float(await bars.nth(7).get_attribute("height") or 0) > 0
        await walk.check("earnings")
        await page.get_by_role("button", name="Request payout").click()
        await page.wait_for_url("**/app/host/earnings")
        assert "Awaiting approval" in await page.inner_text("main")
        assert await page.inner_text("#payable") == "₹0.00"
        await walk.check("earnings-after-request")

        # The dashboard in Hindi (Devanagari from Debian's fonts-lohit-deva).
        await page.goto(f"{market.api_url}/app/host?lang=hi")
        assert await page.get_attribute("html", "lang") == "hi-IN"
        await page.get_by_role("heading", name="मेरे चार्जर").wait_for()
        await walk.check("dashboard-hindi")
        await page.goto(f"{market.api_url}/app/host/chargers/{charger_id}")
        await page.get_by_role("heading", name="मीटर").wait_for()  # "Meters"
        assert "आख़िरी सही रीडिंग" in await page.inner_text("#meter-list")  # "last good reading"
        await walk.check("charger-meters-hindi")

    assert not walk.axe_failures, "\n".join(walk.axe_failures)
    assert not walk.csp_reports, walk.csp_reports
