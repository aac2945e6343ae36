"""``POST /quotes`` and the one pricing rule through the API: a quote, a booking of the same
window and a session lasting that window cost the same; the request's rules are enforced;
nobody quotes a charger they may not see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloud.accounts.models import Role
from cloud.pg import PgConnection
from protocols.ids import new_ulid
from tests.support.bookings_fixtures import ListedCharger, add_charger, next_slot
from tests.support.market import Api, ApiUser, add_user

pytestmark = pytest.mark.integration

INVALID = "https://chargemitra.in/problems/invalid-request"


def _window(days: int = 2, minutes: int = 60) -> tuple[datetime, datetime]:
    start = next_slot(datetime.now(UTC), days=days)
    return start, start + timedelta(minutes=minutes)


def _window_body(charger: ListedCharger, start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "charger_id": charger.id,
        "connector": 1,
        "start": start.isoformat(),
        "end": end.isoformat(),
    }


async def _quote(api: Api, body: dict[str, Any], user: ApiUser | None = None) -> Any:
    headers = user.headers if user is not None else {}
    return await api.client.post("/quotes", json=body, headers=headers)


def _check_sums(quote: dict[str, Any]) -> None:
    amounts = [line["amount_paise"] for line in quote["lines"]]
    assert all(type(a) is int for a in amounts)
    assert sum(amounts) == quote["total_paise"]
    assert quote["taxable_paise"] + quote["gst_paise"] == quote["total_paise"]
    assert quote["sac"] == "998714"
    assert quote["currency"] == "INR"


async def _session_over(
    pg: PgConnection,
    charger: ListedCharger,
    driver: ApiUser,
    start: datetime,
    end: datetime,
    energy_wh: int,
) -> str:
    """A stopped session of ``driver`` at ``charger`` that ran from ``start`` to ``end``."""
    sid = new_ulid()
    await pg.execute(
        "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
        "user_id, credential_kind, credential_ref, state, started_at, stopped_at, "
        "meter_start_wh, meter_stop_wh, energy_wh, stop_reason, last_event_seq, "
        "events_received) VALUES ($1, $2, 1, $3, $4, 'Remote', 'r', 'stopped', $5, $6, 1000, "
        "$7, $8, 'Local', 2, 2)",
        charger.device_id,
        sid,
        charger.id,
        driver.id,
        start,
        end,
        1000 + energy_wh,
        energy_wh,
    )
    return sid


@pytest.fixture
async def people(market_api: Api, pg: PgConnection) -> dict[str, ApiUser]:
    s = market_api.settings
    return {
        "host": await add_user(pg, s, Role.HOST),
        "other_host": await add_user(pg, s, Role.HOST),
        "driver": await add_user(pg, s, Role.DRIVER),
        "admin": await add_user(pg, s, Role.ADMIN),
    }


async def test_a_per_hour_booking_costs_what_a_session_of_its_window_costs(
    market_api: Api, pg: PgConnection, people: dict[str, ApiUser]
) -> None:
    """The bug: 60.01 rupees an hour for 15 minutes is 15.0025 rupees; the booking said
    1501 paise (rounded up), the same session's cost 1500 (rounded half up). One rule now:
    the booking holds what the session costs."""
    host, driver = people["host"], people["driver"]
    charger = await add_charger(pg, host, price_per_hour_paise=6001)
    start, end = _window(minutes=15)
    booked = await market_api.client.post(
        "/bookings", json=_window_body(charger, start, end), headers=driver.headers
    )
    assert booked.status_code == 201, booked.text
    sid = await _session_over(pg, charger, driver, start, end, energy_wh=0)
    seen = await market_api.client.get(f"/sessions/{sid}", headers=driver.headers)
    assert seen.status_code == 200, seen.text
    assert seen.json()["cost_paise"] == booked.json()["amount_paise"]


async def test_a_window_quote_is_the_bookings_amount_and_bounds_the_session(
    market_api: Api, pg: PgConnection, people: dict[str, ApiUser]
) -> None:
    host, driver = people["host"], people["driver"]
    charger = await add_charger(
        pg,
        host,
        pricing_mode="per_kwh",
        price_per_kwh_paise=1800,
        session_fee_paise=500,
        max_power_w=7400,
    )
    start, end = _window(minutes=120)
    answer = await _quote(market_api, _window_body(charger, start, end), driver)
    assert answer.status_code == 200, answer.text
    quote = answer.json()
    _check_sums(quote)
    # 14.8 kWh at 18.00 = 266.40 + 5.00 fee; 9 % of 271.40 = 24.426 -> 24.43, twice.
    assert [(x["kind"], x["amount_paise"]) for x in quote["lines"]] == [
        ("energy", 26640),
        ("session_fee", 500),
        ("cgst", 2443),
        ("sgst", 2443),
    ]
    assert quote["lines"][0]["quantity"] == 14800
    assert quote["lines"][0]["unit"] == "Wh"
    assert (quote["basis"], quote["amount_kind"]) == ("window", "upper_bound")
    booked = await market_api.client.post(
        "/bookings", json=_window_body(charger, start, end), headers=driver.headers
    )
    assert booked.status_code == 201, booked.text
    assert booked.json()["amount_paise"] == quote["total_paise"]
    # A session in the window, at less than full power, costs less.
    sid = await _session_over(pg, charger, driver, start, end - timedelta(minutes=30), 9000)
    cost = (await market_api.client.get(f"/sessions/{sid}", headers=driver.headers)).json()
    assert cost["cost_paise"] < quote["total_paise"]


async def test_walk_up_quotes_for_a_duration_or_an_energy(
    market_api: Api, pg: PgConnection, people: dict[str, ApiUser]
) -> None:
    host = people["host"]
    hourly = await add_charger(pg, host, price_per_hour_paise=6000, min_charge_paise=2000)
    await pg.execute(
        "UPDATE chargers SET idle_fee_per_min_paise = 300, idle_grace_min = 15 WHERE id = $1",
        hourly.id,
    )
    # Anonymous callers may quote a listed charger.
    answer = await _quote(market_api, {"charger_id": hourly.id, "connector": 1, "duration_min": 45})
    assert answer.status_code == 200, answer.text
    quote = answer.json()
    _check_sums(quote)
    assert [(x["kind"], x["amount_paise"]) for x in quote["lines"]] == [
        ("time", 4500),
        ("cgst", 405),
        ("sgst", 405),
    ]
    assert (quote["basis"], quote["amount_kind"], quote["pricing_mode"]) == (
        "duration",
        "exact",
        "per_hour",
    )
    assert (quote["idle_fee_per_min_paise"], quote["idle_grace_min"]) == (300, 15)
    # JSON Schema counts 45.0 as an integer, so the API does too.
    same = {"charger_id": hourly.id, "connector": 1.0, "duration_min": 45.0}
    assert (await _quote(market_api, same)).json() == quote
    short = await _quote(market_api, {"charger_id": hourly.id, "connector": 1, "duration_min": 5})
    assert [(x["kind"], x["amount_paise"]) for x in short.json()["lines"]] == [
        ("time", 500),
        ("minimum_charge", 1500),
        ("cgst", 180),
        ("sgst", 180),
    ]
    # By the hour, an energy has no honest price: the time it takes depends on the car.
    refused = await _quote(market_api, {"charger_id": hourly.id, "connector": 1, "energy_wh": 1})
    assert refused.status_code == 422
    assert refused.json()["field"] == "energy_wh"

    per_kwh = await add_charger(pg, host, pricing_mode="per_kwh", price_per_kwh_paise=1850)
    body = {"charger_id": per_kwh.id, "connector": 1, "energy_wh": 10_001}
    quote = (await _quote(market_api, body)).json()
    _check_sums(quote)
    # 10.001 kWh at 18.50 = 185.0185 rupees -> 18502 paise; 9 % = 1665.18 -> 1665.
    assert [(x["kind"], x["amount_paise"]) for x in quote["lines"]] == [
        ("energy", 18502),
        ("cgst", 1665),
        ("sgst", 1665),
    ]
    assert (quote["basis"], quote["amount_kind"]) == ("energy", "exact")
    timed = await _quote(market_api, {"charger_id": per_kwh.id, "connector": 1, "duration_min": 60})
    assert timed.json()["amount_kind"] == "upper_bound"
    assert timed.json()["lines"][0]["quantity"] == 7400  # Wh at full power for the hour


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({}, None),  # no basis at all
        ({"duration_min": 30, "energy_wh": 100}, None),  # two bases
        ({"duration_min": 30, "start": "W", "end": "W+1"}, None),
        ({"start": "W"}, None),  # half a window
        ({"duration_min": 0}, "duration_min"),
        ({"duration_min": 721}, "duration_min"),
        ({"duration_min": 30.5}, "duration_min"),
        ({"duration_min": True}, "duration_min"),
        ({"duration_min": "30"}, "duration_min"),
        ({"energy_wh": 500_001}, "energy_wh"),
        ({"energy_wh": None}, None),  # null: omit the field instead
        ({"duration_min": 30, "tip_paise": 5}, "tip_paise"),  # unknown field
        ({"duration_min": 30, "connector": 0}, "connector"),
        ({"duration_min": 30, "connector": 9}, "connector"),  # not one of the charger's
        ({"start": "W+7m", "end": "W+1"}, "start"),  # off the 15-minute grid
        ({"start": "W", "end": "W"}, "end"),
        ({"start": "W-3d", "end": "W-3d+1"}, "start"),  # in the past
    ],
)
async def test_the_request_states_its_rules(
    market_api: Api,
    pg: PgConnection,
    people: dict[str, ApiUser],
    change: dict[str, Any],
    field: str | None,
) -> None:
    charger = await add_charger(pg, people["host"])
    start, _ = _window()
    times = {
        "W": start,
        "W+1": start + timedelta(hours=1),
        "W+7m": start + timedelta(minutes=7),
        "W-3d": start - timedelta(days=3),
        "W-3d+1": start - timedelta(days=3) + timedelta(hours=1),
    }
    body: dict[str, Any] = {"charger_id": charger.id, "connector": 1}
    for key, value in change.items():
        body[key] = times[value].isoformat() if isinstance(value, str) and value in times else value
    answer = await _quote(market_api, body, people["driver"])
    assert answer.status_code == 422, answer.text
    problem = answer.json()
    assert answer.headers["content-type"].startswith("application/problem+json")
    if field is not None:
        named = {problem.get("field")} | {e.get("field") for e in problem.get("errors", [])}
        assert any(field in str(name) for name in named), problem


async def test_nobody_quotes_a_charger_they_may_not_see(
    market_api: Api, pg: PgConnection, people: dict[str, ApiUser]
) -> None:
    """The attack: learn an unlisted (pending) charger's prices by quoting it. Only its
    host and admins may; everyone else gets the same 404 as for no charger at all."""
    hidden = await add_charger(pg, people["host"], moderation_status="pending", is_listed=False)
    body = {"charger_id": hidden.id, "connector": 1, "duration_min": 60}
    for who in (None, people["driver"], people["other_host"]):
        answer = await _quote(market_api, body, who)
        assert answer.status_code == 404, answer.text
        assert "6000" not in answer.text
    for who in (people["host"], people["admin"]):
        answer = await _quote(market_api, body, who)
        assert answer.status_code == 200, answer.text
        assert answer.json()["lines"][0]["amount_paise"] == 6000
    missing = {"charger_id": new_ulid(), "connector": 1, "duration_min": 60}
    assert (await _quote(market_api, missing, people["driver"])).status_code == 404
    # A token that is not valid is refused, not taken for an anonymous caller.
    bad = await market_api.client.post(
        "/quotes", json=body, headers={"Authorization": "Bearer nope"}
    )
    assert bad.status_code == 401
