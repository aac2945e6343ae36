"""The pages without a browser (issue 19): rupees and IST, content negotiation on the QR
URL, the hi-IN catalogue, security headers, CSRF, and cookie sessions tied to the accounts'
tokens (signing out everywhere ends them). The browser walk is tests/cloud/test_pages_flow.py.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from redis.asyncio import Redis
from starlette.requests import Request

from cloud.accounts.models import Role
from cloud.accounts.sms import RedisSmsOutbox
from cloud.chargers.qr import new_short_code
from cloud.pg import PgConnection
from cloud.web.format import ago, indian_grouping, ist, rupees
from cloud.web.i18n import accepted
from cloud.web.render import safe_next
from cloud.web.router import wants_html
from cloud.web.security import CONTENT_SECURITY_POLICY
from protocols.ids import new_ulid
from tests.support.cloud_env import REDIS_KEY_PREFIX
from tests.support.market import TEST_PASSWORD, Api, add_user

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"


def test_rupees_use_indian_grouping_from_paise() -> None:
    assert rupees(12_345_678) == "₹1,23,456.78"
    assert rupees(0) == "₹0.00"
    assert rupees(5) == "₹0.05"
    assert rupees(99_999) == "₹999.99"
    assert rupees(10_000_000_000) == "₹10,00,00,000.00"
    assert rupees(-150) == "-₹1.50"
    assert indian_grouping(1000) == "1,000"
    assert indian_grouping(100000) == "1,00,000"


def test_times_are_ist_24_hour_day_first() -> None:
    moment = datetime(2026, 12, 5, 8, 35, tzinfo=UTC)  # 14:05 in India
    assert ist(moment) == "5 Dec 2026, 14:05"
    assert ist(moment, "hi_IN").endswith("2026, 14:05")
    assert ist(moment, "hi_IN") != ist(moment)  # the month is named in Hindi


def test_relative_times_in_the_pages_language() -> None:
    now = datetime(2026, 12, 5, 8, 35, tzinfo=UTC)
    assert ago(now - timedelta(minutes=3), now) == "3 minutes ago"
    assert ago(now - timedelta(hours=2, minutes=5), now, "hi_IN") == "2 घंटे पहले"
    # A device clock a little ahead of ours is not "in 2 seconds".
    assert ago(now + timedelta(seconds=2), now) == "1 second ago"
    assert ago(None, now) == "—"


def _request(accept: str) -> Request:
    return Request({"type": "http", "headers": [(b"accept", accept.encode())]})


def test_browsers_get_html_and_api_clients_json() -> None:
    assert wants_html(_request(BROWSER))
    assert wants_html(_request("text/html"))
    assert not wants_html(_request(""))
    assert not wants_html(_request("*/*"))
    assert not wants_html(_request("application/json"))
    assert not wants_html(_request("application/json, text/html;q=0.5"))
    assert not wants_html(_request("text/html;q=0"))


def test_language_and_next_url_choices() -> None:
    assert accepted("hi-IN,hi;q=0.9,en;q=0.8") == "hi_IN"
    assert accepted("en-GB,hi;q=0.5") == "en_IN"
    assert accepted("fr-FR") is None
    assert safe_next("/c/ABCD1234") == "/c/ABCD1234"
    for hostile in ("//evil.example", "https://evil.example", "/\\evil.example", "", None):
        assert safe_next(hostile) == "/app"


def _address() -> str:
    return f"10.{secrets.randbelow(256)}.{secrets.randbelow(256)}.{secrets.randbelow(254) + 1}"


@pytest.fixture
async def https_client(market_api: Api) -> AsyncIterator[httpx.AsyncClient]:
    """A client that keeps Secure cookies (the test environment sets them), from an address
    of its own: sign-in is rate-limited per client address, in a Redis every test shares."""
    transport = httpx.ASGITransport(app=market_api.app, client=(_address(), 40000))
    async with httpx.AsyncClient(transport=transport, base_url="https://api") as client:
        yield client


async def _listed_charger(pg: PgConnection, market_api: Api) -> str:
    host = await add_user(pg, market_api.settings, Role.HOST)
    code = new_short_code()
    await pg.execute(
        "INSERT INTO chargers (id, host_id, name, address, city, state, pincode, latitude, "
        "longitude, price_per_kwh_paise, session_fee_paise, qr_code, moderation_status, "
        "is_listed) VALUES ($1, $2, 'Gate', '1 Road', 'Pune', 'MH', '411001', 18.5, 73.8, "
        "123456, 500, $3, 'approved', true)",
        new_ulid(),
        host.host_id,
        code,
    )
    return code


async def test_the_qr_url_serves_a_page_to_browsers_and_json_to_clients(
    market_api: Api, pg: PgConnection
) -> None:
    code = await _listed_charger(pg, market_api)
    api = await market_api.client.get(f"/c/{code}")
    assert api.status_code == 200
    assert api.headers["content-type"] == "application/json"
    assert api.json()["qr_code"] == code
    page = await market_api.client.get(f"/c/{code}", headers={"Accept": BROWSER})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "₹1,234.56 / kWh" in page.text
    assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "private, no-store"
    # No inline script: every <script> has a src under /static.
    scripts = re.findall(r"<script[^>]*>", page.text)
    assert scripts
    assert all('src="/static/' in tag for tag in scripts), scripts
    missing = await market_api.client.get("/c/ZZZZZZZZ", headers={"Accept": BROWSER})
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("text/html")


async def test_the_qr_page_in_hindi(market_api: Api, pg: PgConnection) -> None:
    code = await _listed_charger(pg, market_api)
    page = await market_api.client.get(f"/c/{code}?lang=hi", headers={"Accept": BROWSER})
    assert page.status_code == 200
    assert '<html lang="hi-IN">' in page.text
    assert "दाम" in page.text  # "Price"
    assert "चार्ज करने के लिए साइन इन करें" in page.text  # "Sign in to charge"
    assert "Sign in to charge" not in page.text
    assert "₹1,234.56 / kWh" in page.text
    assert "cm_lang=hi_IN" in page.headers["set-cookie"]
    by_header = await market_api.client.get(
        f"/c/{code}", headers={"Accept": BROWSER, "Accept-Language": "hi-IN,hi;q=0.9"}
    )
    assert "दाम" in by_header.text


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, "no CSRF field in the form"
    return found.group(1)


async def test_forms_need_the_visitors_csrf_token(
    https_client: httpx.AsyncClient, market_api: Api, pg: PgConnection
) -> None:
    driver = await add_user(pg, market_api.settings, Role.DRIVER)
    form = {"email": driver.email, "password": TEST_PASSWORD, "action": "signin"}
    refused = await https_client.post("/app/signin/password", data=form)
    assert refused.status_code == 403
    page = await https_client.get("/app/signin")
    token = _csrf(page.text)
    wrong = await https_client.post("/app/signin/password", data={**form, "csrf": "0" * 64})
    assert wrong.status_code == 403
    # A token outside ASCII is just as wrong (compare_digest would raise on it: a 500).
    odd = await https_client.post("/app/signin/password", data={**form, "csrf": "é" * 64})
    assert odd.status_code == 403
    # Another visitor's token (another nonce) is refused too.
    transport = httpx.ASGITransport(app=market_api.app, client=(_address(), 40000))
    stranger = httpx.AsyncClient(transport=transport, base_url="https://api")
    async with stranger:
        taken = await stranger.post("/app/signin/password", data={**form, "csrf": token})
        assert taken.status_code == 403
    signed = await https_client.post("/app/signin/password", data={**form, "csrf": token})
    assert signed.status_code == 303, signed.text
    assert signed.headers["location"] == "/app"
    cookie = signed.headers["set-cookie"]
    assert "cm_session=" in cookie
    assert "HttpOnly" in cookie
    assert "Secure" in cookie
    assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()


async def test_a_web_session_ends_with_the_accounts_tokens(
    https_client: httpx.AsyncClient, market_api: Api, pg: PgConnection
) -> None:
    driver = await add_user(pg, market_api.settings, Role.DRIVER)
    token = _csrf((await https_client.get("/app/signin")).text)
    form = {"email": driver.email, "password": TEST_PASSWORD, "action": "signin", "csrf": token}
    signed = await https_client.post("/app/signin/password", data=form)
    assert signed.status_code == 303
    mine = await https_client.get("/app/sessions")
    assert mine.status_code == 200
    assert "My sessions" in mine.text
    # Logging out everywhere through the API revokes the pair the web session holds.
    ended = await market_api.client.post("/auth/logout-everywhere", headers=driver.headers)
    assert ended.status_code == 204
    after = await https_client.get("/app/sessions")
    assert after.status_code == 303
    assert after.headers["location"].startswith("/app/signin?next=")


async def test_signing_out_revokes_the_refresh_token(
    https_client: httpx.AsyncClient, market_api: Api, pg: PgConnection
) -> None:
    driver = await add_user(pg, market_api.settings, Role.DRIVER)
    token = _csrf((await https_client.get("/app/signin")).text)
    form = {"email": driver.email, "password": TEST_PASSWORD, "action": "signin", "csrf": token}
    assert (await https_client.post("/app/signin/password", data=form)).status_code == 303
    page = await https_client.get("/app/sessions")
    out = await https_client.post("/app/signout", data={"csrf": _csrf(page.text)})
    assert out.status_code == 303
    revoked = await pg.fetchval(
        "SELECT count(*) FROM refresh_tokens WHERE user_id = $1 AND revoked_at IS NOT NULL",
        driver.id,
    )
    assert revoked == 1
    assert (await https_client.get("/app/sessions")).status_code == 303


async def test_a_wrong_one_time_code_signs_nobody_in(
    https_client: httpx.AsyncClient, market_api: Api
) -> None:
    local = f"97{secrets.randbelow(10**8):08d}"
    token = _csrf((await https_client.get("/app/signin")).text)
    sent = await https_client.post("/app/signin/otp", data={"phone": local, "csrf": token})
    assert sent.status_code == 200
    assert 'id="code"' in sent.text
    redis = Redis.from_url(market_api.settings.redis.url)
    try:
        messages = await RedisSmsOutbox(redis, REDIS_KEY_PREFIX).messages(f"+91{local}")
    finally:
        await redis.aclose()
    right = messages[0].text[:6]
    wrong = f"{(int(right) + 1) % 10**6:06d}"
    form = {"phone": f"+91{local}", "code": wrong, "csrf": token}
    refused = await https_client.post("/app/signin/otp/verify", data=form)
    assert refused.status_code == 401
    assert "cm_session" not in refused.headers.get("set-cookie", "")
    signed = await https_client.post("/app/signin/otp/verify", data={**form, "code": right})
    assert signed.status_code == 303
    assert "cm_session=" in signed.headers["set-cookie"]
