"""Acceptance (issue 19, the driver's flow) in a real browser against the running marketplace
(tests/support/flow_rig.py: API, ingest, broker, a real agent and the simulated charger):

* online: open the QR URL → sign up by phone OTP → quote → pay with the dummy's test card →
  the simulated relay closes → the live page shows power (and, its stream cut, says
  "Reconnecting…" and reconnects) → stop → receipt → invoice PDF;
* offline: a booked driver (email sign-in) whose charger lost its link gets the keypad PIN;
  typed on the simulator's keypad it closes the relay;
* the phone offline: the service worker serves my bookings (with the PIN shown once) and the
  last charger page with the browser's network cut.

Each step is screenshot (artifacts/pages/<test>/) and checked with axe-core at 360x640 and
1280x800, light and dark: no serious or critical violation, and no Content-Security-Policy
report in the console.
"""

from __future__ import annotations

import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Error as PlaywrightError
from playwright.async_api import WebSocketRoute
from redis.asyncio import Redis

from cloud.accounts.sms import RedisSmsOutbox
from cloud.billing.quote import Tariff, Usage, price, window_usage
from cloud.chargers.models import PricingMode
from cloud.chargers.qr import new_short_code
from cloud.pg import PgConnection
from cloud.web.format import rupees
from tests.support.browser import artifacts_dir, chromium, tour
from tests.support.certs import Certs
from tests.support.cloud_env import REDIS_KEY_PREFIX
from tests.support.flow_rig import (
    PRICE_PER_KWH_PAISE,
    SESSION_FEE_PAISE,
    Market,
    booking_window,
    relay_closed,
    running_market,
    wait_for,
)
from tests.support.market import TEST_PASSWORD
from tests.support.mosquitto import Broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TARIFF = Tariff(
    mode=PricingMode.PER_KWH,
    price_per_kwh_paise=PRICE_PER_KWH_PAISE,
    price_per_hour_paise=0,
    session_fee_paise=SESSION_FEE_PAISE,
    min_charge_paise=0,
)


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
        CHARGEMITRA_BILLING_SETTLE_INTERVAL_S="0.2",
        # One browser signs in many times from 127.0.0.1 across the tests of a run.
        CHARGEMITRA_AUTH_LOGIN_ATTEMPTS_PER_WINDOW="1000",
    ) as running:
        yield running


async def _otp(market: Market, phone: str) -> str:
    """The code the development SMS gateway recorded for ``phone`` (what the driver reads)."""
    redis = Redis.from_url(market.settings.redis.url)
    try:
        sent = await RedisSmsOutbox(redis, REDIS_KEY_PREFIX).messages(phone)
    finally:
        await redis.aclose()
    assert sent, f"no SMS recorded for {phone}"
    found = re.match(r"(\d{6}) is your ChargeMitra code", sent[0].text)
    assert found, sent[0].text
    return found.group(1)


async def _qr_code(market: Market) -> str:
    """The charger's sticker code (the rig's listing gets one as the API would issue it)."""
    code = new_short_code()
    await market.pg.execute(
        "UPDATE chargers SET qr_code = $2 WHERE id = $1", market.charger_id, code
    )
    return code


async def test_scan_sign_up_pay_charge_stop_and_get_the_receipt(
    market: Market, request: pytest.FixtureRequest
) -> None:
    out = artifacts_dir(request.node.name)
    code = await _qr_code(market)
    local = f"98{secrets.randbelow(10**8):08d}"
    phone = f"+91{local}"
    async with chromium() as browser, tour(browser, out) as walk:
        page = walk.page
        # The live page's WebSocket passes through here, so the test can cut it.
        streams: list[WebSocketRoute] = []

        def relay(stream: WebSocketRoute) -> None:
            stream.connect_to_server()
            streams.append(stream)

        await page.route_web_socket(re.compile(r"/app/sessions/\w+/live$"), relay)
        # 1. The QR sticker's URL: a page, not JSON, for a browser.
        answer = await page.goto(f"{market.api_url}/c/{code}")
        assert answer is not None
        assert answer.status == 200
        assert answer.headers["content-type"].startswith("text/html")
        assert "'unsafe-inline'" not in answer.headers["content-security-policy"]
        await page.get_by_role("heading", name="Asha's garage").wait_for()
        assert "₹18.00 / kWh" in await page.inner_text(".price")
        assert await page.inner_text("#online") == "Online"
        await walk.check("qr")

        # 2. Sign up by phone: the code from the development SMS gateway.
        await page.get_by_role("link", name="Sign in to charge").click()
        await page.wait_for_url(re.compile(r"/app/signin\?next="))
        await walk.check("signin")
        await page.fill("#phone", local)
        await page.get_by_role("button", name="Send me a code").click()
        await page.locator("#code").wait_for()
        await walk.check("otp")
        await page.fill("#code", await _otp(market, phone))
        await page.fill("#otp-name", "Priya")
        await page.get_by_role("button", name="Continue").click()
        await page.wait_for_url(f"**/c/{code}")
        cookies = {c["name"]: c for c in await walk.context.cookies()}
        assert cookies["cm_session"]["httpOnly"]
        assert cookies["cm_session"]["sameSite"] == "Lax"
        assert await market.pg.fetchval("SELECT name FROM users WHERE phone = $1", phone) == (
            "Priya"
        )

        # 3. One hour (the default choice) → the quote, GST line by line.
        await walk.check("choose")
        await page.get_by_role("button", name="See the price").click()
        await page.wait_for_url(re.compile(r"/app/chargers/\w+/quote\?"))
        expected = price(TARIFF, window_usage_hour()).total_paise
        assert await page.inner_text("#total") == rupees(expected)
        body = await page.inner_text("table.lines")
        assert "CGST (9%)" in body
        assert "SGST (9%)" in body
        await walk.check("quote")

        # 4. Pay with the dummy's test card: the unlock follows, the relay closes.
        await page.fill("#card", "4111 1111 1111 1111")
        await page.get_by_role("button", name=re.compile("^Pay ")).click()
        await page.wait_for_url(re.compile(r"/app/sessions/\w+$"), timeout=30_000)
        session_id = page.url.rsplit("/", 1)[1]
        assert relay_closed(market.sim)
        payments = await market.pg.fetch(
            "SELECT p.status, p.amount_paise FROM payments p JOIN users u ON u.id = p.user_id "
            "WHERE u.phone = $1",
            phone,
        )
        assert [(p["status"], p["amount_paise"]) for p in payments] == [("authorized", expected)]

        # 5. The live page: power arrives over the WebSocket.
        power = page.locator("#power")
        await page.wait_for_function(
            "() => /^[1-9][0-9]*\\.[0-9] kW$/.test(document.getElementById('power').textContent)",
            timeout=30_000,
        )
        assert await page.inner_text("#conn") == "Live"
        assert float((await power.inner_text()).split()[0]) > 1.0
        await walk.check("live")
        # Patchy data: the stream drops; the page says so, reconnects by itself, goes on.
        assert len(streams) == 1
        await streams[0].close(code=4000, reason="link lost")
        conn = page.locator("#conn")
        await conn.filter(has_text="Reconnecting…").wait_for()
        await walk.check("reconnecting")
        await conn.filter(has_text="Live").wait_for(timeout=30_000)
        assert len(streams) == 2

        # 6. Stop: the relay opens, the page shows the receipt link.
        await page.get_by_role("button", name="Stop charging").click()

        async def opened() -> bool:
            return not relay_closed(market.sim)

        await wait_for(opened, "the relay to open after stop")
        await page.locator("#receipt-link").wait_for(state="visible", timeout=30_000)
        await walk.check("stopped")

        # 7. The receipt, once settled with its invoice PDF.
        async def invoiced() -> bool:
            count = await market.pg.fetchval(
                "SELECT count(*) FROM invoices i JOIN sessions s ON s.id = i.session_id "
                "WHERE s.device_session_id = $1",
                session_id,
            )
            return bool(count)

        await wait_for(invoiced, "the session billed and invoiced", timeout_s=60)
        await page.get_by_role("link", name="Receipt").click()
        await page.wait_for_url(f"**/app/sessions/{session_id}/receipt")
        billed = await market.pg.fetchval(
            "SELECT amount_paise FROM sessions WHERE device_session_id = $1", session_id
        )
        assert await page.inner_text("#total") == rupees(billed)
        await walk.check("receipt")
        href = await page.get_attribute("#invoice", "href")
        assert href is not None
        pdf = await walk.context.request.get(f"{market.api_url}{href}")
        assert pdf.status == 200
        assert pdf.headers["content-type"] == "application/pdf"
        assert (await pdf.body()).startswith(b"%PDF")

        # 8. My sessions lists it.
        await page.goto(f"{market.api_url}/app/sessions")
        assert session_id in (await page.content())
        await walk.check("my-sessions")

    assert not walk.csp_reports, walk.csp_reports
    assert not walk.axe_failures, "\n".join(walk.axe_failures)


def window_usage_hour() -> Usage:
    """What a one-hour walk-up prices: the whole hour at the connector's 7.4 kW."""
    return window_usage(timedelta(hours=1), 7400)


async def test_offline_charger_gives_a_booked_driver_the_keypad_pin(
    market: Market, request: pytest.FixtureRequest
) -> None:
    out = artifacts_dir(request.node.name)
    start, end = booking_window()
    await market.book(market.driver, start=start, end=end)
    await market.link.cut()

    async def offline() -> bool:
        return not await market.device_online()

    await wait_for(offline, "the Last Will to mark the device offline")
    code = await _qr_code(market)
    async with chromium() as browser, tour(browser, out, locale="en-IN") as walk:
        page = walk.page
        await page.goto(f"{market.api_url}/c/{code}")
        assert await page.inner_text("#online") == "Offline"
        await walk.check("qr-offline")
        # Sign in by email and password, on the same screen.
        await page.goto(f"{market.api_url}/app/signin?next=/app/bookings")
        await page.fill("#email", market.driver.email)
        await page.fill("#password", TEST_PASSWORD)
        await page.get_by_role("button", name="Sign in", exact=True).click()
        await page.wait_for_url("**/app/bookings")
        await walk.check("bookings")
        await page.get_by_role("button", name="Start charging").click()
        pin = (await page.inner_text("#pin")).strip()
        assert re.fullmatch(r"\d{4,12}", pin), pin
        assert "What happens next" in await page.content()
        await walk.check("pin")
        # The same charger page in Hindi (Devanagari from Debian's fonts-lohit-deva).
        await page.goto(f"{market.api_url}/c/{code}?lang=hi")
        assert await page.get_attribute("html", "lang") == "hi-IN"
        assert await page.inner_text("#online") == "ऑफ़लाइन"
        # Signed in, but no walk-up to pay for: an offline charger cannot be unlocked online.
        assert await page.locator("#charge-h").count() == 0
        await walk.check("qr-hindi")

    market.sim.keys(pin + "#")

    async def closed() -> bool:
        return relay_closed(market.sim)

    await wait_for(closed, "the keypad PIN to close the relay")
    assert not walk.csp_reports, walk.csp_reports
    assert not walk.axe_failures, "\n".join(walk.axe_failures)


async def test_my_bookings_with_the_pin_and_the_last_charger_page_work_offline(
    market: Market, request: pytest.FixtureRequest
) -> None:
    """The service worker keeps my bookings (the PIN shown once is kept on the phone) and
    the last charger page readable with the browser's network cut."""
    out = artifacts_dir(request.node.name)
    start, end = booking_window()
    booking_id = await market.book(market.driver, start=start, end=end)
    code = await _qr_code(market)
    async with chromium() as browser, tour(browser, out) as walk:
        page = walk.page
        await page.goto(f"{market.api_url}/app/signin?next=/app/bookings")
        await page.fill("#email", market.driver.email)
        await page.fill("#password", TEST_PASSWORD)
        await page.get_by_role("button", name="Sign in", exact=True).click()
        await page.wait_for_url("**/app/bookings")
        assert await page.evaluate("navigator.serviceWorker.ready.then(() => true)")
        await page.get_by_role("button", name="Show keypad PIN").click()
        pin = (await page.inner_text("#pin")).strip()
        assert re.fullmatch(r"\d{4,12}", pin), pin
        await walk.check("pin-shown")
        # Online visits, now under the service worker: these are the copies kept.
        await page.goto(f"{market.api_url}/c/{code}")
        await page.goto(f"{market.api_url}/app/bookings")
        kept = page.locator(f'[data-booking-pin="{booking_id}"]')
        await kept.wait_for(state="visible")

        await walk.context.set_offline(True)
        await page.goto(f"{market.api_url}/app/bookings")
        assert await kept.is_visible()
        assert await kept.locator(".pin").inner_text() == pin
        await walk.check("offline-bookings")
        await page.goto(f"{market.api_url}/c/{code}")
        await page.get_by_role("heading", name="Asha's garage").wait_for()
        await walk.check("offline-charger")
        # Nothing kept that was not visited: an uncached page fails as any offline page.
        with pytest.raises(PlaywrightError):
            await page.goto(f"{market.api_url}/app/sessions/{booking_id}")
        await walk.context.set_offline(False)
    assert not walk.csp_reports, walk.csp_reports
    assert not walk.axe_failures, "\n".join(walk.axe_failures)
