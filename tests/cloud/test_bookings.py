"""Bookings through the API (in-process ASGI, real PostgreSQL), and the pure booking rules."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx
import pytest

from cloud.accounts.models import Role
from cloud.billing.quote import Tariff, is_upper_bound, price, window_usage
from cloud.bookings import policy
from cloud.bookings.service import hash_pin
from cloud.chargers.models import PricingMode
from cloud.errors import InvalidRequest
from cloud.pg import PgConnection
from protocols.enums import AuthorizationStatus
from protocols.pins import verify_pin
from tests.support.bookings_fixtures import (
    ListedCharger,
    add_charger,
    block,
    booking_body,
    next_slot,
)
from tests.support.market import Api, ApiUser, add_user

pytestmark = pytest.mark.integration

OVERLAP = "https://chargemitra.in/problems/booking-overlap"
CONFLICT = "https://chargemitra.in/problems/conflict"
NOT_FOUND = "https://chargemitra.in/problems/not-found"


def _ahead(days: int = 2, hour: int = 0, minute: int = 0) -> datetime:
    """A 15-minute boundary ``days`` ahead (midnight UTC is 05:30 in Kolkata)."""
    return next_slot(datetime.now(UTC), days=days) + timedelta(hours=hour, minutes=minute)


def _soon(minutes_ahead: int = 15) -> datetime:
    """The first 15-minute boundary at least ``minutes_ahead`` from now."""
    now = datetime.now(UTC) + timedelta(minutes=minutes_ahead)
    boundary = now.replace(minute=(now.minute // 15) * 15, second=0, microsecond=0)
    return boundary + timedelta(minutes=15)


async def _book(
    api: Api,
    driver: ApiUser,
    charger: ListedCharger,
    start: datetime,
    end: datetime,
    connector: int = 1,
    **extra: Any,
) -> httpx.Response:
    body = booking_body(charger, start, end, connector) | extra
    return await api.client.post("/bookings", json=body, headers=driver.headers)


class World:
    def __init__(self, host: ApiUser, driver: ApiUser, other: ApiUser, other_host: ApiUser):
        self.host, self.driver, self.other, self.other_host = host, driver, other, other_host


@pytest.fixture
async def world(market_api: Api, pg: PgConnection) -> World:
    s = market_api.settings
    return World(
        host=await add_user(pg, s, Role.HOST),
        driver=await add_user(pg, s, Role.DRIVER),
        other=await add_user(pg, s, Role.DRIVER),
        other_host=await add_user(pg, s, Role.HOST),
    )


# --- create -------------------------------------------------------------------------------


async def _pay(api: Api, driver: ApiUser, booking_id: str) -> None:
    """Pay the booking's amount with the dummy provider's succeeding test card."""
    order = await api.client.post(f"/bookings/{booking_id}/payment", headers=driver.headers)
    assert order.status_code == 201, order.text
    paid = await api.client.post(
        f"/payments/{order.json()['id']}/verify",
        json={"card_number": "4111111111111111"},
        headers=driver.headers,
    )
    assert paid.json()["status"] == "authorized", paid.text


async def test_instant_booking_is_confirmed_and_its_pin_is_shown_once_paid(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host, connectors=(1, 2))
    start, end = _ahead(hour=1), _ahead(hour=2, minute=30)
    r = await _book(market_api, world.driver, charger, start, end, connector=2)
    assert r.status_code == 201, r.text
    b = r.json()
    assert b["status"] == "confirmed"
    assert b["connector"] == 2
    assert b["expires_at"] is None
    # 60.00 rupees an hour for 90 minutes, plus GST at 18 % (CGST 9 % + SGST 9 %).
    assert b["amount_paise"] == 9000 + 810 + 810
    assert isinstance(b["amount_paise"], int)
    assert b["amount_kind"] == "exact"
    # The PIN unlocks the relay offline: not before the booking is paid (issue 16).
    assert b["pin"] is None
    assert b["pin_issued"] is False
    path = f"/bookings/{b['id']}/pin"
    unpaid = await market_api.client.post(path, headers=world.driver.headers)
    assert unpaid.status_code == 402, unpaid.text
    assert unpaid.json()["amount_paise"] == b["amount_paise"]

    await _pay(market_api, world.driver, b["id"])
    reveal = await market_api.client.post(path, headers=world.driver.headers)
    assert reveal.status_code == 200, reveal.text
    pin = reveal.json()["pin"]
    assert charger.pin_secret is not None
    assert charger.device_id is not None
    check = verify_pin(charger.pin_secret, charger.device_id, 2, pin, start + timedelta(minutes=1))
    assert check.status is AuthorizationStatus.ACCEPTED
    assert check.valid_from == start
    assert check.valid_until is not None
    assert check.valid_until >= end
    # Not at the other connector, and stored only as a hash.
    other = verify_pin(charger.pin_secret, charger.device_id, 1, pin, start + timedelta(minutes=1))
    assert other.status is not AuthorizationStatus.ACCEPTED
    stored = await pg.fetchval("SELECT pin_hash FROM bookings WHERE id = $1", b["id"])
    secret = market_api.settings.app.secret_key.get_secret_value()
    assert stored == hash_pin(secret, b["id"], pin)
    assert pin not in stored

    again = await market_api.client.get(f"/bookings/{b['id']}", headers=world.driver.headers)
    assert again.status_code == 200
    assert again.json()["pin_issued"] is True
    assert "pin" not in again.json()
    assert pin not in again.text
    # Shown once.
    assert (await market_api.client.post(path, headers=world.driver.headers)).status_code == 409


async def test_free_instant_booking_has_its_pin_in_the_create_answer(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host, price_per_hour_paise=0)
    start, end = _ahead(hour=1), _ahead(hour=2)
    r = await _book(market_api, world.driver, charger, start, end)
    assert r.status_code == 201, r.text
    b = r.json()
    assert b["amount_paise"] == 0
    assert b["pin_issued"] is True
    assert charger.pin_secret is not None
    assert charger.device_id is not None
    check = verify_pin(charger.pin_secret, charger.device_id, 1, b["pin"]["pin"], start)
    assert check.accepted
    # Nothing to pay, and shown once.
    reveal = await market_api.client.post(f"/bookings/{b['id']}/pin", headers=world.driver.headers)
    assert reveal.status_code == 409


async def test_booking_without_a_device_secret_has_no_pin(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host, with_device=False)
    r = await _book(market_api, world.driver, charger, _ahead(hour=1), _ahead(hour=2))
    assert r.status_code == 201
    assert r.json()["pin"] is None
    assert r.json()["pin_issued"] is False


async def test_per_kwh_amount_is_an_upper_bound_at_full_power_with_fee_and_minimum(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(
        pg,
        world.host,
        pricing_mode="per_kwh",
        price_per_kwh_paise=1800,
        max_power_w=7400,
        session_fee_paise=500,
    )
    r = await _book(market_api, world.driver, charger, _ahead(hour=1), _ahead(hour=3))
    assert r.status_code == 201
    # 18.00/kWh x 7.4 kW x 2 h = 266.40 rupees, plus the 5.00 session fee, plus GST:
    # 9 % of 271.40 is 24.426, so 24.43 each for CGST and SGST.
    assert r.json()["amount_paise"] == 26640 + 500 + 2443 + 2443
    assert r.json()["amount_kind"] == "upper_bound"

    cheap = await add_charger(pg, world.host, price_per_hour_paise=1000, min_charge_paise=5000)
    r = await _book(market_api, world.driver, cheap, _ahead(hour=1), _ahead(hour=2))
    assert r.json()["amount_paise"] == 5000 + 450 + 450


async def test_approval_booking_is_pending_until_the_host_approves(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host, instant_book=False)
    start, end = _ahead(hour=3), _ahead(hour=4)
    before = datetime.now(UTC)
    r = await _book(market_api, world.driver, charger, start, end)
    assert r.status_code == 201
    b = r.json()
    assert b["status"] == "pending"
    assert b["pin"] is None
    ttl = timedelta(seconds=market_api.settings.marketplace.approval_ttl_s)
    expires = datetime.fromisoformat(b["expires_at"])
    assert before + ttl <= expires <= datetime.now(UTC) + ttl

    # The pending request already holds the slot.
    r = await _book(market_api, world.other, charger, start, end)
    assert r.status_code == 409
    assert r.json()["type"] == OVERLAP

    # Only the charger's host decides: the driver lacks the role, another host sees nothing.
    path = f"/bookings/{b['id']}/approve"
    assert (await market_api.client.post(path, headers=world.driver.headers)).status_code == 403
    assert (await market_api.client.post(path, headers=world.other_host.headers)).status_code == 404

    r = await market_api.client.post(path, headers=world.host.headers)
    assert r.status_code == 200, r.text
    approved = r.json()
    assert approved["status"] == "confirmed"
    assert approved["decided_at"] is not None
    assert approved["expires_at"] is None
    # The PIN is the driver's: not in the host's answer.
    assert "pin" not in approved

    # The PIN unlocks the charger: not before the booking is paid (issue 16).
    r = await market_api.client.post(f"/bookings/{b['id']}/pin", headers=world.driver.headers)
    assert r.status_code == 402, r.text
    order = await market_api.client.post(
        f"/bookings/{b['id']}/payment", headers=world.driver.headers
    )
    assert order.status_code == 201, order.text
    paid = await market_api.client.post(
        f"/payments/{order.json()['id']}/verify",
        json={"card_number": "4111111111111111"},
        headers=world.driver.headers,
    )
    assert paid.json()["status"] == "authorized", paid.text
    r = await market_api.client.post(f"/bookings/{b['id']}/pin", headers=world.driver.headers)
    assert r.status_code == 200, r.text
    pin = r.json()["pin"]
    assert charger.pin_secret is not None
    assert charger.device_id is not None
    check = verify_pin(charger.pin_secret, charger.device_id, 1, pin, start)
    assert check.accepted
    # Once only, and never to the host.
    r = await market_api.client.post(f"/bookings/{b['id']}/pin", headers=world.driver.headers)
    assert r.status_code == 409
    r = await market_api.client.post(f"/bookings/{b['id']}/pin", headers=world.host.headers)
    assert r.status_code == 404

    # Deciding twice is a state conflict.
    r = await market_api.client.post(path, headers=world.host.headers)
    assert r.status_code == 409
    assert r.json()["type"] == CONFLICT
    r = await market_api.client.post(f"/bookings/{b['id']}/decline", headers=world.host.headers)
    assert r.status_code == 409


async def test_declined_booking_frees_the_slot(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host, instant_book=False)
    start, end = _ahead(hour=3), _ahead(hour=4)
    b = (await _book(market_api, world.driver, charger, start, end)).json()
    r = await market_api.client.post(f"/bookings/{b['id']}/decline", headers=world.host.headers)
    assert r.status_code == 200
    assert r.json()["status"] == "declined"
    r = await market_api.client.post(f"/bookings/{b['id']}/approve", headers=world.host.headers)
    assert r.status_code == 409
    r = await _book(market_api, world.other, charger, start, end)
    assert r.status_code == 201


async def test_lapsed_request_expires_cannot_be_approved_and_does_not_block_the_slot(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host, instant_book=False)
    start, end = _ahead(hour=3), _ahead(hour=4)
    b = (await _book(market_api, world.driver, charger, start, end)).json()
    await pg.execute(
        "UPDATE bookings SET expires_at = now() - interval '1 minute' WHERE id = $1", b["id"]
    )
    r = await market_api.client.post(f"/bookings/{b['id']}/approve", headers=world.host.headers)
    assert r.status_code == 409
    assert "lapsed" in r.json()["detail"]
    # An overlapping request marks it expired and takes the slot.
    r = await _book(market_api, world.other, charger, start, end)
    assert r.status_code == 201, r.text
    r = await market_api.client.get(f"/bookings/{b['id']}", headers=world.driver.headers)
    assert r.json()["status"] == "expired"


async def test_lapsed_request_reads_as_expired(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host, instant_book=False)
    b = (await _book(market_api, world.driver, charger, _ahead(hour=3), _ahead(hour=4))).json()
    await pg.execute("UPDATE bookings SET expires_at = now() - interval '1 second'")
    r = await market_api.client.get("/bookings", headers=world.driver.headers)
    assert [i["status"] for i in r.json()["items"]] == ["expired"]
    r = await market_api.client.post(f"/bookings/{b['id']}/cancel", headers=world.driver.headers)
    assert r.status_code == 409


# --- overlap ------------------------------------------------------------------------------


async def test_overlap_is_a_409_problem_and_adjacent_or_other_connector_is_fine(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host, connectors=(1, 2))
    t = _ahead(hour=2)
    assert (await _book(market_api, world.driver, charger, t, t + timedelta(hours=1))).is_success
    r = await _book(
        market_api, world.other, charger, t + timedelta(minutes=45), t + timedelta(hours=2)
    )
    assert r.status_code == 409
    assert r.headers["content-type"].startswith("application/problem+json")
    problem = r.json()
    assert problem["type"] == OVERLAP
    assert problem["status"] == 409
    assert "already holds this connector" in problem["detail"]
    # [t, t+1h) then [t+1h, t+2h): touching is not overlapping.
    r = await _book(
        market_api, world.other, charger, t + timedelta(hours=1), t + timedelta(hours=2)
    )
    assert r.status_code == 201
    r = await _book(market_api, world.other, charger, t, t + timedelta(hours=1), connector=2)
    assert r.status_code == 201


# --- cancel -------------------------------------------------------------------------------


async def test_driver_cancels_free_before_the_deadline(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host, late_cancel_fee_paise=5000)
    t = _ahead(hour=2)
    b = (await _book(market_api, world.driver, charger, t, t + timedelta(hours=1))).json()
    r = await market_api.client.post(f"/bookings/{b['id']}/cancel", headers=world.driver.headers)
    assert r.status_code == 200
    c = r.json()
    assert c["status"] == "cancelled"
    assert c["cancellation_fee_paise"] == 0
    assert c["cancelled_by"] == "driver"
    assert c["cancelled_at"] is not None
    # Twice is a conflict; the slot is free again.
    r = await market_api.client.post(f"/bookings/{b['id']}/cancel", headers=world.driver.headers)
    assert r.status_code == 409
    assert (await _book(market_api, world.other, charger, t, t + timedelta(hours=1))).is_success


async def test_driver_cancelling_late_owes_the_late_fee(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(
        pg, world.host, free_cancel_before_min=60, late_cancel_fee_paise=2500
    )
    start = _soon()  # 15 to 30 minutes ahead: inside the 60-minute deadline
    b = (await _book(market_api, world.driver, charger, start, start + timedelta(hours=2))).json()
    assert b["amount_paise"] == 12000 + 1080 + 1080
    r = await market_api.client.post(f"/bookings/{b['id']}/cancel", headers=world.driver.headers)
    assert r.status_code == 200
    assert r.json()["cancellation_fee_paise"] == 2500
    fee = await pg.fetchval("SELECT cancellation_fee_paise FROM bookings WHERE id = $1", b["id"])
    assert fee == 2500


async def test_host_cancelling_late_costs_the_driver_nothing(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host, late_cancel_fee_paise=2500)
    start = _soon()
    b = (await _book(market_api, world.driver, charger, start, start + timedelta(hours=1))).json()
    r = await market_api.client.post(f"/bookings/{b['id']}/cancel", headers=world.host.headers)
    assert r.status_code == 200
    assert r.json()["cancellation_fee_paise"] == 0
    assert r.json()["cancelled_by"] == "host"


async def test_pending_booking_cancelled_by_its_driver_is_free(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host, instant_book=False, late_cancel_fee_paise=2500)
    start = _soon()
    b = (await _book(market_api, world.driver, charger, start, start + timedelta(hours=1))).json()
    r = await market_api.client.post(f"/bookings/{b['id']}/cancel", headers=world.driver.headers)
    assert r.json()["cancellation_fee_paise"] == 0
    r = await market_api.client.post(f"/bookings/{b['id']}/approve", headers=world.host.headers)
    assert r.status_code == 409


# --- who sees what ------------------------------------------------------------------------


async def test_other_drivers_and_other_hosts_get_404(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host)
    await add_charger(pg, world.other_host)
    t = _ahead(hour=2)
    b = (await _book(market_api, world.driver, charger, t, t + timedelta(hours=1))).json()
    path = f"/bookings/{b['id']}"
    for stranger in (world.other, world.other_host):
        r = await market_api.client.get(path, headers=stranger.headers)
        assert r.status_code == 404
        assert r.json()["type"] == NOT_FOUND
        r = await market_api.client.post(f"{path}/cancel", headers=stranger.headers)
        assert r.status_code == 404
        r = await market_api.client.post(f"{path}/pin", headers=stranger.headers)
        assert r.status_code == 404
    r = await market_api.client.post(f"{path}/approve", headers=world.other_host.headers)
    assert r.status_code == 404
    r = await market_api.client.get("/bookings", headers=world.other.headers)
    assert r.json()["items"] == []
    r = await market_api.client.get("/host/bookings", headers=world.other_host.headers)
    assert r.json()["items"] == []
    # The driver, the charger's host and an admin see it.
    admin = await add_user(pg, market_api.settings, Role.ADMIN)
    for viewer in (world.driver, world.host, admin):
        r = await market_api.client.get(path, headers=viewer.headers)
        assert r.status_code == 200
        assert r.json()["id"] == b["id"]


async def test_roles_gate_the_routes(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host)
    t = _ahead(hour=2)
    # A host without the driver role does not book; a driver has no host list.
    r = await _book(market_api, world.host, charger, t, t + timedelta(hours=1))
    assert r.status_code == 403
    r = await market_api.client.get("/host/bookings", headers=world.driver.headers)
    assert r.status_code == 403
    r = await market_api.client.get("/bookings")
    assert r.status_code == 401


async def test_lists_are_paginated_and_filtered(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host)
    t = _ahead(hour=1)
    ids = []
    for i in range(5):
        start = t + timedelta(hours=i)
        r = await _book(market_api, world.driver, charger, start, start + timedelta(hours=1))
        ids.append(r.json()["id"])
    await market_api.client.post(f"/bookings/{ids[0]}/cancel", headers=world.driver.headers)

    r = await market_api.client.get("/bookings?limit=2", headers=world.driver.headers)
    page = r.json()
    assert [i["id"] for i in page["items"]] == [ids[4], ids[3]]
    assert page["next_offset"] == 2
    r = await market_api.client.get("/bookings?limit=2&offset=4", headers=world.driver.headers)
    assert [i["id"] for i in r.json()["items"]] == [ids[0]]
    assert r.json()["next_offset"] is None
    r = await market_api.client.get(
        "/bookings", params={"status": "cancelled"}, headers=world.driver.headers
    )
    assert [i["id"] for i in r.json()["items"]] == [ids[0]]

    r = await market_api.client.get(
        "/host/bookings", params={"status": "confirmed"}, headers=world.host.headers
    )
    assert [i["id"] for i in r.json()["items"]] == ids[:0:-1]
    assert all(i["user_id"] == world.driver.id for i in r.json()["items"])
    r = await market_api.client.get(
        "/host/bookings", params={"charger_id": "nope"}, headers=world.host.headers
    )
    assert r.json()["items"] == []
    r = await market_api.client.get("/bookings?limit=0", headers=world.driver.headers)
    assert r.status_code == 422


# --- validation ---------------------------------------------------------------------------


def _field(r: httpx.Response) -> str:
    assert r.status_code == 422, r.text
    body = r.json()
    if "field" in body:
        return str(body["field"])
    return str(body["errors"][0]["field"])


async def test_time_range_validation_names_the_field(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host)
    t = _ahead(hour=2)
    h = timedelta(hours=1)
    past = _soon() - timedelta(hours=2)
    cases = [
        (past, past + h, "start"),
        (t, t, "end"),
        (t, t - h, "end"),
        (t, t + timedelta(hours=12, minutes=15), "end"),
        (t + timedelta(minutes=7), t + h, "start"),
        (t, t + timedelta(minutes=50), "end"),
        (t + timedelta(days=90), t + timedelta(days=90) + h, "start"),
    ]
    for start, end, field in cases:
        r = await _book(market_api, world.driver, charger, start, end)
        assert _field(r) == field, (start, end, r.text)
    # Twelve hours exactly is fine.
    r = await _book(market_api, world.driver, charger, t, t + timedelta(hours=12))
    assert r.status_code == 201


async def test_request_shape_is_checked(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    charger = await add_charger(pg, world.host)
    t = _ahead(hour=2)
    r = await _book(market_api, world.driver, charger, t, t + timedelta(hours=1), strat="x")
    assert _field(r) == "body.strat"
    r = await _book(market_api, world.driver, charger, t, t + timedelta(hours=1), connector=3)
    assert _field(r) == "connector"
    naive = booking_body(charger, t, t + timedelta(hours=1)) | {"start": "2030-01-01T10:00:00"}
    r = await market_api.client.post("/bookings", json=naive, headers=world.driver.headers)
    assert _field(r) == "body.start"


async def test_unapproved_or_unlisted_chargers_cannot_be_booked(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    t = _ahead(hour=2)
    for kwargs in ({"moderation_status": "pending"}, {"is_listed": False}):
        charger = await add_charger(pg, world.host, **kwargs)
        r = await _book(market_api, world.driver, charger, t, t + timedelta(hours=1))
        assert r.status_code == 404
    r = await market_api.client.post(
        "/bookings",
        json={"charger_id": "NOPE", "connector": 1, "start": t.isoformat(), "end": t.isoformat()},
        headers=world.driver.headers,
    )
    assert r.status_code == 422  # the range is checked first: nothing is looked up


async def test_opening_hours_and_blocked_periods(
    market_api: Api,
    pg: PgConnection,
    world: World,
) -> None:
    # Open 08:00-20:00 Kolkata time (02:30-14:30 UTC) every day.
    charger = await add_charger(pg, world.host, windows=[(d, time(8), time(20)) for d in range(7)])
    day = _ahead(days=3)  # midnight UTC = 05:30 local
    h = timedelta(hours=1)
    # 05:30-06:30 local: before opening.
    r = await _book(market_api, world.driver, charger, day, day + h)
    assert _field(r) == "start"
    # 19:30-20:30 local: runs past closing.
    evening = day + timedelta(hours=14)
    r = await _book(market_api, world.driver, charger, evening, evening + h)
    assert _field(r) == "end"
    # 08:30-09:30 local: open.
    morning = day + timedelta(hours=3)
    r = await _book(market_api, world.driver, charger, morning, morning + h)
    assert r.status_code == 201

    noon = day + timedelta(hours=6, minutes=30)  # 12:00 local
    await block(pg, charger.id, noon, noon + 2 * h)
    r = await _book(market_api, world.driver, charger, noon + h, noon + 2 * h)
    assert _field(r) == "start"
    r = await _book(market_api, world.driver, charger, noon - h, noon + timedelta(minutes=15))
    assert _field(r) == "end"
    r = await _book(market_api, world.driver, charger, noon - h, noon)
    assert r.status_code == 201

    # A charger without any opening window is never open.
    closed = await add_charger(pg, world.host, windows=None)
    r = await _book(market_api, world.driver, closed, morning, morning + h)
    assert _field(r) == "start"


# --- pure rules ---------------------------------------------------------------------------


def test_check_range_rules() -> None:
    now = datetime(2026, 3, 2, 10, 2, tzinfo=UTC)
    slot = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    policy.check_range(slot, slot + timedelta(minutes=15), now)  # within the start grace
    with pytest.raises(InvalidRequest) as exc:
        policy.check_range(slot - timedelta(minutes=15), slot + timedelta(hours=1), now)
    assert exc.value.field == "start"


@pytest.mark.parametrize(
    ("mode", "minutes", "expected", "upper"),
    [
        (PricingMode.PER_HOUR, 60, 6000, False),
        (PricingMode.PER_HOUR, 45, 4500, False),
        (PricingMode.PER_KWH, 60, 13320, True),
        (PricingMode.PER_KWH, 15, 3330, True),
    ],
)
def test_estimates_are_integer_paise(
    mode: PricingMode, minutes: int, expected: int, upper: bool
) -> None:
    pricing = Tariff(mode, 1800, 6000, 0, 0)
    estimate = price(pricing, window_usage(timedelta(minutes=minutes), 7400))
    assert estimate.taxable_paise == expected
    assert is_upper_bound(pricing) is upper


def test_a_booking_costs_what_a_session_of_its_length_costs() -> None:
    """One rule: 100 paise an hour for 20 minutes is 33.3 paise, 33 for both (it was 34 for
    the booking and 33 for the session)."""
    pricing = Tariff(PricingMode.PER_HOUR, 0, 100, 0, 0)
    assert price(pricing, window_usage(timedelta(minutes=20), 1)).taxable_paise == 33


def test_cancellation_fee_rule() -> None:
    start = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    common: dict[str, Any] = {
        "start": start,
        "free_cancel_before_min": 60,
        "late_cancel_fee_paise": 5000,
        "amount_paise": 3000,
    }
    free = start - timedelta(minutes=60)
    late = start - timedelta(minutes=59)
    assert policy.cancellation_fee(now=free, confirmed=True, by_driver=True, **common) == 0
    # Late: the fee, but never more than the booking itself.
    assert policy.cancellation_fee(now=late, confirmed=True, by_driver=True, **common) == 3000
    assert policy.cancellation_fee(now=late, confirmed=True, by_driver=False, **common) == 0
    assert policy.cancellation_fee(now=late, confirmed=False, by_driver=True, **common) == 0
