"""Listings: hosts create and edit their chargers, admins moderate, others see nothing early.

The helpers at the top (``listing_body``, ``create_listing``, ``approve``) are shared by the
search, QR/photo and status tests.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from cloud.accounts.models import Role
from cloud.chargers.qr import ALPHABET, CODE_CHARS
from cloud.pg import PgConnection
from tests.support.market import Api, ApiUser, add_user

PROBLEM = "application/problem+json"


def listing_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Asha's driveway charger",
        "description": "Covered parking, gate code at the booth",
        "location": {
            "address": "12 MG Road, Shivajinagar",
            "city": "Pune",
            "state": "Maharashtra",
            "pincode": "411005",
            "latitude": 18.5204,
            "longitude": 73.8567,
        },
        "connectors": [
            {"number": 1, "type": "Type2", "current": "ac", "max_power_w": 7400},
        ],
        "pricing": {"mode": "per_kwh", "price_per_kwh_paise": 1800, "session_fee_paise": 500},
        "amenities": ["Parking", "washroom"],
    }
    body.update(overrides)
    return body


async def create_listing(api: Api, host: ApiUser, **overrides: Any) -> dict[str, Any]:
    response = await api.client.post(
        "/chargers", json=listing_body(**overrides), headers=host.headers
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def approve(api: Api, admin: ApiUser, charger_id: str) -> None:
    response = await api.client.post(f"/admin/chargers/{charger_id}/approve", headers=admin.headers)
    assert response.status_code == 200, response.text


def assert_problem(response: httpx.Response, status: int, field: str | None = None) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    if field is not None:
        fields = [body.get("field")] + [e["field"] for e in body.get("errors", [])]
        assert any(f is not None and f.endswith(field) for f in fields), body


async def test_new_listing_is_pending_with_a_qr_code_and_invisible(
    market_api: Api, pg: PgConnection
) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    created = await create_listing(market_api, host)
    assert created["moderation_status"] == "pending"
    assert created["host_id"] == host.host_id
    assert len(created["qr_code"]) == CODE_CHARS
    assert set(created["qr_code"]) <= set(ALPHABET)
    assert created["amenities"] == ["parking", "washroom"]
    assert created["pricing"]["price_per_kwh_paise"] == 1800
    # No schedule given: open all week, shown in the charger's zone.
    assert created["availability"]["timezone"] == "Asia/Kolkata"
    assert created["availability"]["windows"] == [
        {"weekday": d, "opens_at": "00:00", "closes_at": "24:00"} for d in range(7)
    ]
    client = market_api.client
    assert_problem(await client.get(f"/chargers/{created['id']}"), 404)
    found = await client.get("/chargers", params={"lat": 18.5204, "lon": 73.8567})
    assert found.json()["items"] == []
    mine = (await client.get("/host/chargers", headers=host.headers)).json()
    assert [c["id"] for c in mine["items"]] == [created["id"]]


async def test_a_subnormal_coordinate_is_stored_to_the_centimetre_not_a_500(
    market_api: Api, pg: PgConnection
) -> None:
    """5e-324 degrees underflowed PostgreSQL's float arithmetic in ll_to_earth (found by the
    schemathesis run): coordinates are kept to 7 decimal places, about a centimetre."""
    host = await add_user(pg, market_api.settings, Role.HOST)
    location = listing_body()["location"] | {"latitude": 18.52041234567, "longitude": 5e-324}
    created = await create_listing(market_api, host, location=location)
    assert (created["latitude"], created["longitude"]) == (18.5204123, 0.0)


async def test_approved_listing_is_public_and_found(market_api: Api, pg: PgConnection) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    admin = await add_user(pg, market_api.settings, Role.ADMIN)
    created = await create_listing(market_api, host)
    queue = await market_api.client.get("/admin/chargers", headers=admin.headers)
    assert [c["id"] for c in queue.json()["items"]] == [created["id"]]
    await approve(market_api, admin, created["id"])
    public = await market_api.client.get(f"/chargers/{created['id']}")
    assert public.status_code == 200
    view = public.json()
    assert view["name"] == "Asha's driveway charger"
    assert "moderation_status" not in view
    assert "host_id" not in view
    assert view["status"]["online"] is False
    found = await market_api.client.get("/chargers", params={"lat": 18.52, "lon": 73.85})
    assert [c["id"] for c in found.json()["items"]] == [created["id"]]


async def test_moderation_reject_needs_a_note_and_an_edit_resubmits(
    market_api: Api, pg: PgConnection
) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    admin = await add_user(pg, market_api.settings, Role.ADMIN)
    created = await create_listing(market_api, host)
    client = market_api.client
    url = f"/admin/chargers/{created['id']}"
    assert_problem(await client.post(f"{url}/reject", headers=admin.headers), 422)
    assert_problem(
        await client.post(f"{url}/reject", json={"note": ""}, headers=admin.headers), 422, "note"
    )
    rejected = await client.post(
        f"{url}/reject", json={"note": "photo shows a different site"}, headers=admin.headers
    )
    assert rejected.json()["moderation_status"] == "rejected"
    assert rejected.json()["moderation_note"] == "photo shows a different site"
    # Suspending a listing that was never approved is not a thing.
    assert_problem(
        await client.post(f"{url}/suspend", json={"note": "x"}, headers=admin.headers), 409
    )
    edited = await client.patch(
        f"/chargers/{created['id']}", json={"name": "Asha's charger"}, headers=host.headers
    )
    assert edited.json()["moderation_status"] == "pending"


async def test_suspended_listing_disappears(market_api: Api, pg: PgConnection) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    admin = await add_user(pg, market_api.settings, Role.ADMIN)
    created = await create_listing(market_api, host)
    await approve(market_api, admin, created["id"])
    suspended = await market_api.client.post(
        f"/admin/chargers/{created['id']}/suspend",
        json={"note": "safety complaint"},
        headers=admin.headers,
    )
    assert suspended.json()["moderation_status"] == "suspended"
    assert_problem(await market_api.client.get(f"/chargers/{created['id']}"), 404)


async def test_unlisting_hides_an_approved_charger(market_api: Api, pg: PgConnection) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    admin = await add_user(pg, market_api.settings, Role.ADMIN)
    created = await create_listing(market_api, host)
    await approve(market_api, admin, created["id"])
    paused = await market_api.client.patch(
        f"/chargers/{created['id']}", json={"listed": False}, headers=host.headers
    )
    assert paused.json()["listed"] is False
    assert paused.json()["moderation_status"] == "approved"
    assert_problem(await market_api.client.get(f"/chargers/{created['id']}"), 404)


async def test_roles_gate_creation_and_moderation(market_api: Api, pg: PgConnection) -> None:
    driver = await add_user(pg, market_api.settings, Role.DRIVER)
    host = await add_user(pg, market_api.settings, Role.HOST)
    client = market_api.client
    assert_problem(await client.post("/chargers", json=listing_body()), 401)
    assert_problem(await client.post("/chargers", json=listing_body(), headers=driver.headers), 403)
    created = await create_listing(market_api, host)
    for who in (driver, host):
        assert_problem(
            await client.post(f"/admin/chargers/{created['id']}/approve", headers=who.headers), 403
        )
    assert_problem(await client.get("/admin/chargers", headers=host.headers), 403)


async def test_another_hosts_charger_is_not_found_for_every_edit(
    market_api: Api, pg: PgConnection
) -> None:
    owner = await add_user(pg, market_api.settings, Role.HOST)
    other = await add_user(pg, market_api.settings, Role.HOST)
    created = await create_listing(market_api, owner)
    cid = created["id"]
    client = market_api.client
    h = other.headers
    later = datetime.now(UTC) + timedelta(days=1)
    attempts = [
        client.patch(f"/chargers/{cid}", json={"name": "mine now"}, headers=h),
        client.get(f"/host/chargers/{cid}", headers=h),
        client.put(f"/chargers/{cid}/availability", json={"windows": []}, headers=h),
        client.post(
            f"/chargers/{cid}/blocked-periods",
            json={"start": later.isoformat(), "end": (later + timedelta(hours=1)).isoformat()},
            headers=h,
        ),
        client.delete(f"/chargers/{cid}/blocked-periods/1", headers=h),
        client.post(
            f"/chargers/{cid}/photos",
            files={"photo": ("a.png", b"\x89PNG\r\n\x1a\n" + b"0" * 64, "image/png")},
            headers=h,
        ),
        client.get(
            f"/chargers/{cid}/telemetry",
            params={"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T01:00:00Z"},
            headers=h,
        ),
        client.get(f"/chargers/{cid}/qr.svg", headers=h),
    ]
    for attempt in attempts:
        response = await attempt
        assert_problem(response, 404)
        # Same answer as for a charger that does not exist: nothing to learn.
        assert response.json()["type"].endswith("/not-found")
    # The owner's data did not change.
    mine = await client.get(f"/host/chargers/{cid}", headers=owner.headers)
    assert mine.json()["name"] == created["name"]
    assert len(mine.json()["availability"]["windows"]) == 7
    # An admin may edit (support), and sees the same view.
    admin = await add_user(pg, market_api.settings, Role.ADMIN)
    fixed = await client.patch(f"/chargers/{cid}", json={"name": "Fixed"}, headers=admin.headers)
    assert fixed.status_code == 200


async def test_invalid_listings_are_refused_with_the_field(
    market_api: Api, pg: PgConnection
) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    client = market_api.client

    async def refused(body: dict[str, Any], field: str) -> None:
        response = await client.post("/chargers", json=body, headers=host.headers)
        assert_problem(response, 422, field)

    base = listing_body()
    await refused(
        {**base, "pricing": {"mode": "per_kwh", "price_per_kwh_paise": -1}}, "price_per_kwh_paise"
    )
    await refused(
        {**base, "pricing": {"mode": "per_kwh", "price_per_kwh_paise": 18.5}}, "price_per_kwh_paise"
    )
    await refused(
        {**base, "pricing": {"mode": "per_kwh", "price_per_kwh_paise": "1800"}},
        "price_per_kwh_paise",
    )
    await refused(
        {**base, "pricing": {"mode": "per_kwh", "price_per_kwh_paise": 10**9}},
        "price_per_kwh_paise",
    )
    await refused({**base, "pricing": {"mode": "per_hour", "price_per_kwh_paise": 1800}}, "pricing")
    await refused(
        {**base, "pricing": {**base["pricing"], "idle_fee_per_min_paise": -5}},
        "idle_fee_per_min_paise",
    )
    await refused({**base, "location": {**base["location"], "latitude": 91}}, "latitude")
    await refused({**base, "location": {**base["location"], "pincode": "04110"}}, "pincode")
    await refused(
        {**base, "connectors": [{"number": 1, "type": "Type2", "max_power_w": 0}]}, "max_power_w"
    )
    await refused(
        {**base, "connectors": [{"number": 1, "type": "Tesla", "max_power_w": 7400}]}, "type"
    )
    await refused({**base, "connectors": base["connectors"] * 2}, "connectors")
    await refused({**base, "connectors": []}, "connectors")
    await refused(
        {**base, "availability": [{"weekday": 0, "opens_at": "18:00", "closes_at": "09:00"}]},
        "availability.0",
    )
    await refused(
        {**base, "availability": [{"weekday": 7, "opens_at": "08:00", "closes_at": "09:00"}]},
        "weekday",
    )
    await refused(
        {**base, "availability": [{"weekday": 1, "opens_at": "8am", "closes_at": "09:00"}]},
        "opens_at",
    )
    # Unknown fields are refused, at the top and nested.
    await refused({**base, "price": 100}, "price")
    await refused({**base, "pricing": {**base["pricing"], "currency": "INR"}}, "currency")
    # Nothing was stored.
    assert await pg.fetchval("SELECT count(*) FROM chargers") == 0


async def test_edits_change_only_what_is_given(market_api: Api, pg: PgConnection) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    created = await create_listing(market_api, host)
    cid = created["id"]
    client = market_api.client
    response = await client.patch(
        f"/chargers/{cid}",
        json={
            "pricing": {
                "mode": "per_hour",
                "price_per_hour_paise": 9000,
                "min_charge_paise": 3000,
                "idle_fee_per_min_paise": 200,
                "idle_grace_min": 15,
            },
            "amenities": ["cafe", "Cafe", "wifi"],
            "instant_book": False,
            "cancellation": {"free_cancel_before_min": 120, "late_cancel_fee_paise": 5000},
        },
        headers=host.headers,
    )
    assert response.status_code == 200, response.text
    edited = response.json()
    assert edited["pricing"] == {
        "mode": "per_hour",
        "price_per_kwh_paise": 0,
        "price_per_hour_paise": 9000,
        "session_fee_paise": 0,
        "min_charge_paise": 3000,
        "idle_fee_per_min_paise": 200,
        "idle_grace_min": 15,
    }
    assert edited["amenities"] == ["cafe", "wifi"]
    assert edited["instant_book"] is False
    assert edited["cancellation"] == {"free_cancel_before_min": 120, "late_cancel_fee_paise": 5000}
    assert edited["name"] == created["name"]
    assert edited["address"] == created["address"]
    assert edited["qr_code"] == created["qr_code"]
    # null is not a way to leave a field unchanged
    assert_problem(
        await client.patch(f"/chargers/{cid}", json={"name": None}, headers=host.headers), 422
    )
    assert_problem(
        await client.patch(f"/chargers/{cid}", json={"colour": "red"}, headers=host.headers),
        422,
        "colour",
    )


async def test_connectors_are_replaced_by_number_but_booked_ones_stay(
    market_api: Api, pg: PgConnection
) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    driver = await add_user(pg, market_api.settings, Role.DRIVER)
    created = await create_listing(market_api, host)
    cid = created["id"]
    client = market_api.client
    first_id = await pg.fetchval("SELECT id FROM connectors WHERE charger_id = $1", cid)
    two = [
        {"number": 1, "type": "Type2", "current": "ac", "max_power_w": 11000},
        {"number": 2, "type": "CCS2", "current": "dc", "max_power_w": 30000},
    ]
    response = await client.patch(
        f"/chargers/{cid}", json={"connectors": two}, headers=host.headers
    )
    assert response.json()["connectors"] == two
    # Connector 1 kept its identity (bookings point at it).
    assert (
        await pg.fetchval("SELECT id FROM connectors WHERE charger_id = $1 AND number = 1", cid)
        == first_id
    )
    start = datetime.now(UTC) + timedelta(days=1)
    await pg.execute(
        "INSERT INTO bookings (id, user_id, charger_id, connector_id, period, status) "
        "VALUES ('B1', $1, $2, $3, tstzrange($4, $5), 'cancelled')",
        driver.id,
        cid,
        first_id,
        start,
        start + timedelta(hours=1),
    )
    response = await client.patch(
        f"/chargers/{cid}", json={"connectors": two[1:]}, headers=host.headers
    )
    assert_problem(response, 409)
    assert (
        len((await client.get(f"/host/chargers/{cid}", headers=host.headers)).json()["connectors"])
        == 2
    )


async def test_weekly_availability_and_blocked_periods(market_api: Api, pg: PgConnection) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    created = await create_listing(market_api, host)
    cid = created["id"]
    client = market_api.client
    windows = [
        {"weekday": 0, "opens_at": "08:00", "closes_at": "12:30"},
        {"weekday": 0, "opens_at": "14:00", "closes_at": "24:00"},
        {"weekday": 5, "opens_at": "00:00", "closes_at": "06:00"},
    ]
    response = await client.put(
        f"/chargers/{cid}/availability", json={"windows": windows}, headers=host.headers
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"timezone": "Asia/Kolkata", "windows": windows}
    # Stored as local wall-clock times; "24:00" is the end of the day.
    stored = await pg.fetch(
        "SELECT weekday, opens_at::text, closes_at::text FROM availability_windows "
        "WHERE charger_id = $1 ORDER BY weekday, opens_at",
        cid,
    )
    assert [tuple(r) for r in stored] == [  # type: ignore[arg-type]
        (0, "08:00:00", "12:30:00"),
        (0, "14:00:00", "23:59:59.999999"),
        (5, "00:00:00", "06:00:00"),
    ]
    # Blocked periods: any offset in, UTC stored, local shown.
    start = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0)
    ist = timedelta(hours=5, minutes=30)
    body = {
        "start": start.astimezone(_zone(ist)).isoformat(),
        "end": (start + timedelta(hours=3)).isoformat(),
        "reason": "maintenance",
    }
    response = await client.post(
        f"/chargers/{cid}/blocked-periods", json=body, headers=host.headers
    )
    assert response.status_code == 201, response.text
    blocked = response.json()
    assert datetime.fromisoformat(blocked["start"]) == start
    assert blocked["start_local"].endswith("+05:30")
    assert blocked["reason"] == "maintenance"
    lower = await pg.fetchval(
        "SELECT lower(period) FROM blocked_periods WHERE id = $1", blocked["id"]
    )
    assert lower == start
    view = (await client.get(f"/host/chargers/{cid}", headers=host.headers)).json()
    assert [b["id"] for b in view["blocked_periods"]] == [blocked["id"]]
    # Refused: the end before the start, a period already over, a naive time.
    past = datetime.now(UTC) - timedelta(days=1)
    for bad, field in (
        ({"start": body["end"], "end": body["start"]}, ""),
        ({"start": (past - timedelta(hours=1)).isoformat(), "end": past.isoformat()}, "end"),
        ({"start": "2030-01-01T10:00:00", "end": "2030-01-01T11:00:00"}, "start"),
    ):
        response = await client.post(
            f"/chargers/{cid}/blocked-periods", json=bad, headers=host.headers
        )
        assert_problem(response, 422, field or None)
    url = f"/chargers/{cid}/blocked-periods/{blocked['id']}"
    assert (await client.delete(url, headers=host.headers)).status_code == 204
    assert_problem(await client.delete(url, headers=host.headers), 404)
    # An empty schedule closes the charger.
    response = await client.put(
        f"/chargers/{cid}/availability", json={"windows": []}, headers=host.headers
    )
    assert response.json()["windows"] == []


async def test_devices_attach_only_to_their_own_hosts_listings(
    market_api: Api, pg: PgConnection
) -> None:
    host = await add_user(pg, market_api.settings, Role.HOST)
    other = await add_user(pg, market_api.settings, Role.HOST)
    created = await create_listing(market_api, host)
    for device_id, host_id in (("cm-mine", host.host_id), ("cm-theirs", other.host_id)):
        await pg.execute("INSERT INTO devices (id, host_id) VALUES ($1, $2)", device_id, host_id)
    client = market_api.client
    url = f"/chargers/{created['id']}"
    ok = await client.patch(url, json={"device_id": "cm-mine"}, headers=host.headers)
    assert ok.json()["device_id"] == "cm-mine"
    refused = await client.patch(url, json={"device_id": "cm-theirs"}, headers=host.headers)
    assert_problem(refused, 422, "device_id")


async def test_a_host_role_without_a_host_profile_cannot_list(
    market_api: Api, pg: PgConnection
) -> None:
    user = await add_user(pg, market_api.settings, Role.HOST)
    await pg.execute("DELETE FROM hosts WHERE id = $1", user.host_id)
    response = await market_api.client.post("/chargers", json=listing_body(), headers=user.headers)
    assert_problem(response, 403)


def _zone(offset: timedelta) -> Any:
    from datetime import timezone

    return timezone(offset)
