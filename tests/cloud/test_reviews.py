"""Reviews and driver ratings over HTTP against the real PostgreSQL (cloud/reviews/).

Only the driver of a completed session reviews it (403 otherwise), once (409), within 30
days; the listing's average equals SQL's over its visible reviews, also with 20 reviews
written at once; a host replies once; an admin's hidden review leaves the list and the
average. Hosts rate drivers privately, and a low rating takes that driver off instant book.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloud.accounts.models import Role
from cloud.pg import PgConnection
from protocols.ids import new_ulid
from tests.support.bookings_fixtures import ListedCharger, add_charger, booking_body, next_slot
from tests.support.market import Api, ApiUser, add_user

pytestmark = pytest.mark.integration


async def _one(pg: PgConnection, query: str, *args: object) -> Any:
    """The first row of ``query`` (None without one)."""
    rows = await pg.fetch(query, *args)
    return rows[0] if rows else None


async def add_session(
    pg: PgConnection,
    charger: ListedCharger,
    driver: ApiUser,
    *,
    state: str = "stopped",
    billing_state: str = "settled",
    stopped_ago: timedelta = timedelta(hours=1),
) -> str:
    """A session of ``driver`` on ``charger`` (billed and settled by default); returns its
    public id."""
    public_id = new_ulid()
    stopped = datetime.now(UTC) - stopped_ago
    await pg.execute(
        "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
        "user_id, credential_kind, credential_ref, state, started_at, stopped_at, "
        "meter_start_wh, meter_stop_wh, energy_wh, last_event_seq, events_received, "
        "billing_state, amount_paise) VALUES ($1, $2, 1, $3, $4, 'Remote', $5, $6, $7, $8, "
        "0, 7400, 7400, 3, 3, $9, 15718)",
        charger.device_id,
        public_id,
        charger.id,
        driver.id,
        new_ulid(),
        state,
        stopped - timedelta(hours=1),
        None if state == "active" else stopped,
        billing_state,
    )
    return public_id


async def _sql_average(pg: PgConnection, charger_id: str) -> tuple[float | None, int]:
    row = await _one(
        pg,
        "SELECT round(avg(rating), 2) AS a, count(*) AS n FROM reviews "
        "WHERE charger_id = $1 AND hidden_at IS NULL",
        charger_id,
    )
    assert row is not None
    return (None if row["a"] is None else float(row["a"])), int(row["n"])


async def test_only_the_driver_of_a_completed_session_reviews_it_once(
    market_api: Api, pg: PgConnection
) -> None:
    s, api = market_api.settings, market_api.client
    host = await add_user(pg, s, Role.HOST)
    driver, other = await add_user(pg, s), await add_user(pg, s)
    charger = await add_charger(pg, host)
    done = await add_session(pg, charger, driver)
    review = {"rating": 4, "text": "Clean bay, fast charge."}

    refused = {
        "someone else's": await add_session(pg, charger, other),
        "still charging": await add_session(
            pg, charger, driver, state="active", billing_state="unbilled"
        ),
        "stopped, not billed": await add_session(pg, charger, driver, billing_state="unbilled"),
        "31 days old": await add_session(pg, charger, driver, stopped_ago=timedelta(days=31)),
        "unknown": new_ulid(),
    }
    for why, session_id in refused.items():
        answer = await api.post(
            f"/sessions/{session_id}/review", json=review, headers=driver.headers
        )
        assert answer.status_code == 403, (why, answer.text)

    first = await api.post(f"/sessions/{done}/review", json=review, headers=driver.headers)
    assert first.status_code == 201, first.text
    assert (first.json()["rating"], first.json()["text"]) == (4, "Clean bay, fast charge.")
    second = await api.post(f"/sessions/{done}/review", json={"rating": 1}, headers=driver.headers)
    assert second.status_code == 409, second.text

    page = (await api.get(f"/chargers/{charger.id}/reviews")).json()
    assert (page["average"], page["count"], len(page["items"])) == (4.0, 1, 1)
    listing = (await api.get(f"/chargers/{charger.id}")).json()
    assert listing["rating"] == {"average": 4.0, "count": 1}


async def test_markup_and_bad_ratings_are_refused(market_api: Api, pg: PgConnection) -> None:
    s, api = market_api.settings, market_api.client
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s)
    charger = await add_charger(pg, host)
    done = await add_session(pg, charger, driver)
    for body in (
        {"rating": 5, "text": "<script>alert(1)</script>"},
        {"rating": 5, "text": "nice <b>bay</b>"},
        {"rating": 0},
        {"rating": 6},
        {"rating": 4, "text": "x" * 2001},
    ):
        answer = await api.post(f"/sessions/{done}/review", json=body, headers=driver.headers)
        assert answer.status_code == 422, (body, answer.text)
    assert await pg.fetchval("SELECT count(*) FROM reviews") == 0


async def test_twenty_concurrent_reviews_keep_the_average_equal_to_sql(
    market_api: Api, pg: PgConnection
) -> None:
    s, api = market_api.settings, market_api.client
    host = await add_user(pg, s, Role.HOST)
    charger = await add_charger(pg, host)
    drivers = [await add_user(pg, s) for _ in range(20)]
    sessions = [await add_session(pg, charger, d) for d in drivers]
    ratings = [1 + (i * 7) % 5 for i in range(20)]

    answers = await asyncio.gather(
        *(
            api.post(f"/sessions/{sid}/review", json={"rating": r}, headers=d.headers)
            for sid, r, d in zip(sessions, ratings, drivers, strict=True)
        )
    )
    assert [a.status_code for a in answers] == [201] * 20, [a.text for a in answers]
    average, count = await _sql_average(pg, charger.id)
    assert count == 20
    assert average == round(sum(ratings) / 20, 2)
    stored = await _one(
        pg, "SELECT rating_sum, rating_count FROM chargers WHERE id = $1", charger.id
    )
    assert stored is not None
    assert (stored["rating_sum"], stored["rating_count"]) == (sum(ratings), 20)
    page = (await api.get(f"/chargers/{charger.id}/reviews", params={"limit": 100})).json()
    assert (page["average"], page["count"], len(page["items"])) == (average, 20, 20)


async def test_the_host_replies_once_and_a_hidden_review_leaves_the_average(
    market_api: Api, pg: PgConnection
) -> None:
    s, api = market_api.settings, market_api.client
    host, stranger = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.HOST)
    admin = await add_user(pg, s, Role.ADMIN)
    charger = await add_charger(pg, host)
    d1, d2 = await add_user(pg, s), await add_user(pg, s)
    s1, s2 = await add_session(pg, charger, d1), await add_session(pg, charger, d2)
    r1 = (
        await api.post(
            f"/sessions/{s1}/review", json={"rating": 1, "text": "rude"}, headers=d1.headers
        )
    ).json()
    await api.post(f"/sessions/{s2}/review", json={"rating": 5}, headers=d2.headers)
    assert (await api.get(f"/chargers/{charger.id}/reviews")).json()["average"] == 3.0

    other = await api.post(
        f"/reviews/{r1['id']}/reply", json={"text": "Not mine"}, headers=stranger.headers
    )
    assert other.status_code == 404
    replied = await api.post(
        f"/reviews/{r1['id']}/reply", json={"text": "Sorry, fixed it."}, headers=host.headers
    )
    assert replied.status_code == 200, replied.text
    assert replied.json()["host_reply"] == "Sorry, fixed it."
    again = await api.post(
        f"/reviews/{r1['id']}/reply", json={"text": "Again"}, headers=host.headers
    )
    assert again.status_code == 409

    not_admin = await api.post(
        f"/admin/reviews/{r1['id']}/hide", json={"reason": "abuse"}, headers=host.headers
    )
    assert not_admin.status_code == 403
    hidden = await api.post(
        f"/admin/reviews/{r1['id']}/hide", json={"reason": "abuse"}, headers=admin.headers
    )
    assert hidden.status_code == 200, hidden.text
    assert hidden.json()["hidden_reason"] == "abuse"
    audited = await pg.fetch(
        "SELECT actor_user_id, action FROM audit_log WHERE entity = 'review' AND entity_id = $1",
        r1["id"],
    )
    assert [(a["actor_user_id"], a["action"]) for a in audited] == [(admin.id, "review.hide")]
    twice = await api.post(
        f"/admin/reviews/{r1['id']}/hide", json={"reason": "abuse"}, headers=admin.headers
    )
    assert twice.status_code == 409
    page = (await api.get(f"/chargers/{charger.id}/reviews")).json()
    assert (page["average"], page["count"]) == (5.0, 1)
    assert [r["rating"] for r in page["items"]] == [5]
    assert await _sql_average(pg, charger.id) == (5.0, 1)
    queue = await api.get("/admin/reviews", params={"hidden": "true"}, headers=admin.headers)
    assert [(r["id"], r["hidden_reason"]) for r in queue.json()["items"]] == [(r1["id"], "abuse")]

    restored = await api.post(
        f"/admin/reviews/{r1['id']}/restore", json={"note": "appeal"}, headers=admin.headers
    )
    assert (restored.status_code, restored.json()["hidden_at"]) == (200, None), restored.text
    assert (await api.get(f"/chargers/{charger.id}/reviews")).json()["average"] == 3.0
    assert await _sql_average(pg, charger.id) == (3.0, 2)
    not_hidden = await api.post(
        f"/admin/reviews/{r1['id']}/restore", json={"note": "x"}, headers=admin.headers
    )
    assert not_hidden.status_code == 409


async def test_hosts_rate_drivers_privately_and_a_low_rating_ends_instant_book(
    market_api: Api, pg: PgConnection
) -> None:
    s, api = market_api.settings, market_api.client
    host, other_host = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.HOST)
    rude, polite = await add_user(pg, s), await add_user(pg, s)
    charger = await add_charger(pg, host, instant_book=True)
    rude_session = await add_session(pg, charger, rude)

    stranger = await api.post(
        f"/sessions/{rude_session}/driver-rating", json={"rating": 1}, headers=other_host.headers
    )
    assert stranger.status_code == 403
    as_driver = await api.post(
        f"/sessions/{rude_session}/driver-rating", json={"rating": 5}, headers=rude.headers
    )
    assert as_driver.status_code == 403
    rated = await api.post(
        f"/sessions/{rude_session}/driver-rating",
        json={"rating": 1, "note": "left the cable on the floor"},
        headers=host.headers,
    )
    assert rated.status_code == 201, rated.text
    assert rated.json()["driver_id"] == rude.id
    second = await api.post(
        f"/sessions/{rude_session}/driver-rating", json={"rating": 2}, headers=host.headers
    )
    assert second.status_code == 409

    start = next_slot(datetime.now(UTC), days=2)
    slots = [
        (start, start + timedelta(hours=1)),
        (start + timedelta(hours=2), start + timedelta(hours=3)),
    ]
    mine = await api.post("/bookings", json=booking_body(charger, *slots[0]), headers=rude.headers)
    theirs = await api.post(
        "/bookings", json=booking_body(charger, *slots[1]), headers=polite.headers
    )
    assert (mine.status_code, theirs.status_code) == (201, 201), (mine.text, theirs.text)
    assert mine.json()["status"] == "pending"  # the host approves this driver now
    assert theirs.json()["status"] == "confirmed"
    # Another host's instant-book charger still trusts one bad rating from someone else.
    elsewhere = await add_charger(pg, other_host, instant_book=True)
    there = await api.post(
        "/bookings", json=booking_body(elsewhere, *slots[0]), headers=rude.headers
    )
    assert (there.status_code, there.json()["status"]) == (201, "confirmed"), there.text
