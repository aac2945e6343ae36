"""The host's pages without a browser (cloud/web/host.py): the charger form through the API's
validation (errors beside the fields, the form kept), a booking request approved from the
dashboard, the pairing code and the sticker (page and A6 PDF), the earnings chart from the
ledger and a payout refused kindly without KYC. The browser walk is
tests/cloud/test_host_pages_flow.py."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from cloud.accounts.models import Role
from cloud.chargers.qr import code_in_words
from cloud.pg import PgConnection
from cloud.web.chart import bar_chart
from cloud.web.format import IST
from protocols.ids import new_ulid
from tests.cloud.test_pages import _address, _csrf
from tests.support.bookings_fixtures import add_charger, booking_body
from tests.support.market import TEST_PASSWORD, Api, ApiUser, add_user

GOOD = {
    "name": "Gate 4 charger",
    "address": "4 MG Road, Kothrud",
    "city": "Pune",
    "state": "Maharashtra",
    "pincode": "411038",
    "latitude": "18.5074",
    "longitude": "73.8077",
    "type_1": "Type2",
    "power_1": "7.4",
    "mode": "per_kwh",
    "price": "18.50",
    "session_fee": "",
}


@pytest.fixture
async def host_browser(
    market_api: Api, pg: PgConnection
) -> AsyncIterator[tuple[httpx.AsyncClient, ApiUser]]:
    """A cookie-signed-in host (the password form), from an address of its own."""
    host = await add_user(pg, market_api.settings, Role.HOST)
    transport = httpx.ASGITransport(app=market_api.app, client=(_address(), 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://api") as client:
        token = _csrf((await client.get("/app/signin")).text)
        form = {"email": host.email, "password": TEST_PASSWORD, "action": "signin", "csrf": token}
        signed = await client.post("/app/signin/password", data={**form, "next": "/app/host"})
        assert signed.status_code == 303
        assert signed.headers["location"] == "/app/host"
        yield client, host


async def test_the_charger_form_keeps_what_was_typed_and_names_the_wrong_field(
    host_browser: tuple[httpx.AsyncClient, ApiUser], pg: PgConnection
) -> None:
    client, _host = host_browser
    page = await client.get("/app/host/chargers/new")
    assert page.status_code == 200
    csrf = _csrf(page.text)
    wrong = await client.post(
        "/app/host/chargers/new", data={**GOOD, "pincode": "0110", "price": "abc", "csrf": csrf}
    )
    assert wrong.status_code == 422
    assert 'id="e-pincode"' in wrong.text
    assert 'id="e-price"' in wrong.text
    assert 'id="e-city"' not in wrong.text
    assert "Enter the 6-digit PIN code." in wrong.text
    assert 'value="4 MG Road, Kothrud"' in wrong.text  # nothing typed is lost
    created = await client.post("/app/host/chargers/new", data={**GOOD, "csrf": csrf})
    assert created.status_code == 303, created.text
    charger_id = created.headers["location"].rsplit("/", 1)[1]
    rows = await pg.fetch(
        "SELECT c.price_per_kwh_paise, c.moderation_status, k.max_power_w, k.type "
        "FROM chargers c JOIN connectors k ON k.charger_id = c.id WHERE c.id = $1",
        charger_id,
    )
    row = rows[0]
    assert (row["price_per_kwh_paise"], row["max_power_w"], row["type"]) == (1850, 7400, "Type2")
    assert row["moderation_status"] == "pending"
    # Editing keeps the pricing fields the form does not show (the minimum charge).
    await pg.execute("UPDATE chargers SET min_charge_paise = 4000 WHERE id = $1", charger_id)
    edit = await client.get(f"/app/host/chargers/{charger_id}")
    assert 'value="18.50"' in edit.text
    saved = await client.post(
        f"/app/host/chargers/{charger_id}",
        data={**GOOD, "price": "20", "type_2": "CCS2", "power_2": "30", "csrf": csrf},
    )
    assert saved.status_code == 303, saved.text
    after = (
        await pg.fetch(
            "SELECT price_per_kwh_paise, min_charge_paise, "
            "(SELECT count(*) FROM connectors WHERE charger_id = $1) AS n "
            "FROM chargers WHERE id = $1",
            charger_id,
        )
    )[0]
    assert (after["price_per_kwh_paise"], after["min_charge_paise"], after["n"]) == (2000, 4000, 2)
    dashboard = await client.get("/app/host")
    assert "Gate 4 charger" in dashboard.text
    assert 'data-online="no"' in dashboard.text  # no agent yet
    hindi = await client.get("/app/host?lang=hi")
    assert "मेरे चार्जर" in hindi.text  # "My chargers"
    assert "ऑफ़लाइन" in hindi.text
    assert "Add a charger" not in hindi.text


async def test_a_driver_and_another_host_are_kept_out(
    host_browser: tuple[httpx.AsyncClient, ApiUser], market_api: Api, pg: PgConnection
) -> None:
    client, _host = host_browser
    other = await add_user(pg, market_api.settings, Role.HOST)
    theirs = await add_charger(pg, other)
    for path in (f"/app/host/chargers/{theirs.id}", f"/app/host/chargers/{theirs.id}/sticker"):
        assert (await client.get(path)).status_code == 404
    driver = await add_user(pg, market_api.settings, Role.DRIVER)
    refused = await market_api.client.get("/app/host", headers=driver.headers)
    assert refused.status_code == 403
    assert "for hosts" in refused.text


async def test_the_host_approves_a_request_from_the_dashboard(
    host_browser: tuple[httpx.AsyncClient, ApiUser], market_api: Api, pg: PgConnection
) -> None:
    client, host = host_browser
    charger = await add_charger(pg, host, instant_book=False)
    driver = await add_user(pg, market_api.settings, Role.DRIVER)
    start = (datetime.now(UTC) + timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    booked = await market_api.client.post(
        "/bookings",
        json=booking_body(charger, start, start + timedelta(hours=1)),
        headers=driver.headers,
    )
    assert booked.status_code == 201, booked.text
    booking_id = booked.json()["id"]
    assert booked.json()["status"] == "pending"
    dashboard = await client.get("/app/host")
    assert f'data-booking="{booking_id}"' in dashboard.text
    csrf = _csrf(dashboard.text)
    no_token = await client.post(f"/app/host/bookings/{booking_id}/approve")
    assert no_token.status_code == 403
    approved = await client.post(f"/app/host/bookings/{booking_id}/approve", data={"csrf": csrf})
    assert approved.status_code == 303
    status = await pg.fetchval("SELECT status FROM bookings WHERE id = $1", booking_id)
    assert status == "confirmed"
    again = await client.post(f"/app/host/bookings/{booking_id}/decline", data={"csrf": csrf})
    assert again.status_code == 409  # decided already: said on a page, not a 500
    assert "not pending" in again.text


async def test_pairing_code_and_sticker(
    host_browser: tuple[httpx.AsyncClient, ApiUser], pg: PgConnection
) -> None:
    client, host = host_browser
    charger = await add_charger(pg, host)
    code = await pg.fetchval("SELECT qr_code FROM chargers WHERE id = $1", charger.id)
    csrf = _csrf((await client.get("/app/host")).text)
    issued = await client.post(f"/app/host/chargers/{charger.id}/pairing-code", data={"csrf": csrf})
    assert issued.status_code == 200
    shown = re.search(r'id="pairing-code">([^<]+)<', issued.text)
    assert shown is not None
    stored = await pg.fetchval(
        "SELECT count(*) FROM pairing_codes WHERE charger_id = $1 AND claimed_at IS NULL",
        charger.id,
    )
    assert stored == 1
    # The API route's rate limit holds on the page too: a 429 page saying so, not a 500.
    answers = [
        (await client.post(f"/app/host/chargers/{charger.id}/pairing-code", data={"csrf": csrf}))
        for _ in range(10)
    ]
    assert answers[-1].status_code == 429
    assert "Too many attempts" in answers[-1].text
    page = await client.get(f"/app/host/chargers/{charger.id}/sticker")
    assert page.status_code == 200
    assert 'src="data:image/svg+xml;base64,' in page.text
    assert code_in_words(code) in page.text
    pdf = await client.get(f"/app/host/chargers/{charger.id}/sticker.pdf")
    assert pdf.status_code == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    # A6 portrait: 105 x 148 mm is 297.64 x 419.53 points.
    assert re.search(rb"/MediaBox \[0 0 297\.6\d* 419\.5\d*\]", pdf.content), pdf.content[:600]


async def test_the_charger_page_shows_its_meters_health(
    host_browser: tuple[httpx.AsyncClient, ApiUser], pg: PgConnection
) -> None:
    """What the device's last status said of each meter (``device_meters``, written by ingest:
    tests/cloud/test_meter_health.py), in the page's language, last good reading relative."""
    client, host = host_browser
    charger = await add_charger(pg, host)
    page = await client.get(f"/app/host/chargers/{charger.id}")
    assert 'id="no-meters"' in page.text  # no device yet: nothing claimed about meters
    device = f"cm-{new_ulid().lower()}"
    await pg.execute("INSERT INTO devices (id, host_id) VALUES ($1, $2)", device, host.host_id)
    await pg.execute("UPDATE chargers SET device_id = $1 WHERE id = $2", device, charger.id)
    now = datetime.now(UTC)
    meters = [
        ("m1", "sdm630", True, 0, 0, None, now - timedelta(minutes=3)),
        ("m2", "em4m", False, 9, 4, "timeout after 0.3 s", now - timedelta(hours=2, minutes=5)),
    ]
    for meter in meters:
        await pg.execute(
            "INSERT INTO device_meters (device_id, meter_id, model, available, errors, "
            "consecutive_errors, last_error, last_good_at, reported_at, status_seq) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 1)",
            device,
            *meter,
            now,
        )
    page = await client.get(f"/app/host/chargers/{charger.id}")
    assert page.status_code == 200
    cards = re.findall(r'<li class="card" data-meter="(\w+)">(.*?)</li>', page.text, re.S)
    assert [meter for meter, _ in cards] == ["m1", "m2"]
    m1, m2 = (body for _, body in cards)
    assert "sdm630" in m1
    assert 'data-available="yes"' in m1
    assert "3 minutes ago (" in m1
    assert 'data-consecutive-errors="0"' in m1
    assert "data-last-error" not in m1
    assert "em4m" in m2
    assert 'data-available="no"' in m2
    assert "2 hours ago (" in m2
    assert 'data-consecutive-errors="4"' in m2
    assert "Last error: timeout after 0.3 s" in m2
    # The absolute time is IST: 2 h 5 min ago, written as Indians read a clock.
    ist_clock = (now - timedelta(hours=2, minutes=5)).astimezone(IST).strftime("%H:%M")
    assert f"{ist_clock} IST)" in m2
    hindi = await client.get(f"/app/host/chargers/{charger.id}?lang=hi")
    assert "आख़िरी सही रीडिंग" in hindi.text  # "last good reading"
    assert "3 मिनट पहले" in hindi.text  # "3 minutes ago"
    assert "जवाब नहीं दे रहा" in hindi.text  # "not answering"
    assert "Last good reading" not in hindi.text


def test_code_in_words_spells_digits() -> None:
    assert code_in_words("AB10") == "A B one zero"


def test_the_chart_scales_to_the_best_week_and_escapes_labels() -> None:
    weeks = [(date(2026, 11, 23), 5000), (date(2026, 11, 30), 10000), (date(2026, 12, 7), -300)]
    svg = bar_chart(weeks, label="<Earnings>", week_label=lambda d: f"{d.day}<", amount=str)
    heights = [int(h) for h in re.findall(r'<rect class="bar" [^>]*height="(-?\d+)"', svg)]
    assert heights[1] == 2 * heights[0] > 0
    assert heights[2] == 0
    assert "&lt;Earnings&gt;" in svg
    assert "<Earnings>" not in svg


async def test_earnings_chart_and_a_payout_without_kyc(
    host_browser: tuple[httpx.AsyncClient, ApiUser], pg: PgConnection
) -> None:
    client, host = host_browser
    # One billed session this week: 12,345 paise on the host's account (a balanced txn).
    txn = new_ulid()
    await pg.execute(
        "INSERT INTO ledger_entries (txn_id, account, amount_paise, source, memo) VALUES "
        "($1, $2, -12345, 'host_earning', 'test'), ($1, $3, 12345, 'bill', 'test')",
        txn,
        f"host:{host.host_id}",
        f"driver:{host.id}",
    )
    page = await client.get("/app/host/earnings")
    assert page.status_code == 200, page.text
    assert '<svg class="chart"' in page.text
    assert "₹123.45" in page.text
    bars = re.findall(r'<rect class="bar" [^>]*height="(\d+)"', page.text)
    assert len(bars) == 8
    assert int(bars[-1]) > 0
    assert all(int(h) == 0 for h in bars[:-1])
    await pg.execute("UPDATE hosts SET kyc_status = 'submitted' WHERE id = $1", host.host_id)
    refused = await client.post("/app/host/payouts", data={"csrf": _csrf(page.text)})
    assert refused.status_code == 403
    assert "identity is verified (KYC)" in refused.text
    assert "₹123.45" in refused.text  # still the earnings page
