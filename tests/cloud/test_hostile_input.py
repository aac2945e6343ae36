"""Input PostgreSQL cannot take is the client's mistake: a 4xx problem, never a 500.

Two kinds of value pass JSON and ISO 8601 parsing yet break at the database driver: text
holding NUL (U+0000, which no PostgreSQL ``text`` value can hold) and instants whose UTC
equivalent is outside years 1-9999 (``0001-01-01T00:00+05:30``). Each route below used to
answer them with a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cloud.accounts.models import Role
from cloud.pg import PgConnection
from tests.support.bookings_fixtures import add_charger
from tests.support.market import Api, add_user

pytestmark = pytest.mark.integration

PROBLEM = "application/problem+json"
EARLY = "0001-01-01T00:00:00+05:30"  # before 0001-01-01 in UTC
EARLY_END = "0001-01-01T01:00:00+05:30"
LATE = "9999-12-31T23:00:00-05:00"  # after 9999-12-31 in UTC


async def test_text_with_nul_and_instants_outside_utc_are_refused_not_crashed(
    market_api: Api,
    pg: PgConnection,
) -> None:
    settings = market_api.settings
    host = await add_user(pg, settings, Role.HOST)
    driver = await add_user(pg, settings, Role.DRIVER)
    charger = await add_charger(pg, host)
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    blocked = f"/chargers/{charger.id}/blocked-periods"
    cases: list[tuple[str, str, dict[str, object], dict[str, str], int]] = [
        ("POST", blocked, {"json": {"start": EARLY, "end": soon}}, host.headers, 422),
        ("POST", blocked, {"json": {"start": soon, "end": LATE}}, host.headers, 422),
        (
            "POST",
            blocked,
            {"json": {"start": soon, "end": LATE, "reason": "a\x00"}},
            host.headers,
            422,
        ),
        (
            "GET",
            "/chargers",
            {"params": {"lat": 18.5, "lon": 73.8, "from": EARLY, "to": EARLY_END}},
            driver.headers,
            422,
        ),
        (
            "GET",
            f"/chargers/{charger.id}/telemetry",
            {"params": {"from": EARLY, "to": EARLY_END}},
            host.headers,
            422,
        ),
        (
            "POST",
            "/bookings",
            {"json": {"charger_id": charger.id, "connector": 1, "start": EARLY, "end": EARLY_END}},
            driver.headers,
            422,
        ),
        ("GET", "/bookings/a%00b", {}, driver.headers, 422),
        ("POST", "/bookings/a%00b/cancel", {}, driver.headers, 422),
        ("GET", "/host/bookings", {"params": {"charger_id": "a\x00b"}}, host.headers, 422),
        ("POST", "/devices/a%00b/revoke", {}, host.headers, 422),
        ("POST", "/chargers/a%00b/pairing-code", {}, host.headers, 422),
        ("PATCH", "/me", {"json": {"name": "a\x00b"}}, driver.headers, 422),
        (
            "PATCH",
            f"/chargers/{charger.id}",
            {"json": {"description": "a\x00b"}},
            host.headers,
            422,
        ),
        (
            "PATCH",
            f"/chargers/{charger.id}",
            {"json": {"amenities": ["wifi\x00"]}},
            host.headers,
            422,
        ),
        (
            "POST",
            "/auth/register",
            {"json": {"email": "nul@example.in", "password": "0123456789ab", "name": "a\x00b"}},
            {},
            422,
        ),
        ("POST", "/auth/login", {"json": {"email": "n\x00l@example.in", "password": "x"}}, {}, 422),
    ]
    for method, url, kwargs, headers, status in cases:
        answer = await market_api.client.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]
        assert answer.status_code == status, (method, url, answer.text)
        assert answer.headers["content-type"] == PROBLEM
