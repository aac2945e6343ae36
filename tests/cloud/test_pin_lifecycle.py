"""Booking PINs die with their booking, end to end: the real API, ingest, broker (the
project's config), simulator and edge agent.

A driver's PIN (shown once by ``POST /bookings/{id}/pin``) starts one session at the keypad,
which the cloud gives to the booking and its driver; it is refused at the booking's end (a
30-minute booking's PIN no longer lasts an hour); cancelling the booking revokes it at the
charger — also when the charger is away, as soon as it reconnects; and the next driver who
books the same slot gets another PIN.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from cloud.accounts.models import Role
from cloud.pg import PgConnection
from edge_agent.auth.authorizer import Moment, Pin
from edge_agent.control import request as control
from protocols.enums import AuthorizationStatus
from tests.support.certs import Certs
from tests.support.cloud_env import REDIS_KEY_PREFIX, REDIS_URL
from tests.support.flow_rig import Market, relay_closed, running_market, wait_for
from tests.support.market import ApiUser, add_user
from tests.support.mosquitto import Broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

S = AuthorizationStatus


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
        # One pairing-code claim per test, from one address: more than the default allows.
        CHARGEMITRA_PROVISIONING_CLAIM_ATTEMPTS_PER_WINDOW="1000",
    ) as running:
        yield running
    await _forget_the_claim()


async def _forget_the_claim() -> None:
    """Take back the market's pairing-code claim from the per-address count in Redis
    (``cloud.ratelimit``, key ``claim:{address}``), which outlives the test: else these tests'
    claims would push later tests that keep the default limit over it (429)."""
    redis = Redis.from_url(REDIS_URL)
    try:
        key = REDIS_KEY_PREFIX + "rl:claim:127.0.0.1"
        if int(await redis.get(key) or 0) > 0:
            await redis.decr(key)
    finally:
        await redis.aclose()


def _this_slot() -> datetime:
    """The 15-minute boundary at or before now (bookings start and end on one)."""
    now = datetime.now(UTC)
    return now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)


async def _book_and_reveal(
    market: Market, driver: ApiUser, start: datetime, end: datetime
) -> tuple[str, str]:
    """A confirmed booking of the market's connector and its PIN, as the driver is shown it."""
    booking_id = await market.book(driver, start=start, end=end)
    answer = await market.http.post(f"/bookings/{booking_id}/pin", headers=driver.headers)
    assert answer.status_code == 200, answer.text
    return booking_id, str(answer.json()["pin"])


async def _type(market: Market, pin: str) -> dict[str, Any]:
    """The PIN presented at connector 1, through the agent's one decision path."""
    answer: dict[str, Any] = await control(
        market.site / "agent.sock", {"cmd": "start", "connector": 1, "pin": pin}
    )
    return answer


async def _stop(market: Market) -> None:
    """Stop the session on connector 1 and wait until the connector is free again."""
    sock = market.site / "agent.sock"
    assert (await control(sock, {"cmd": "stop", "connector": 1}))["ok"]

    async def available() -> bool:
        status = await control(sock, {"cmd": "status"})
        return bool(status["connectors"][0]["status"] == "Available")

    await wait_for(available, "the connector to be Available again")


def _judged(market: Market, pin: str, at: datetime | None = None) -> AuthorizationStatus:
    """What the running agent's authorizer would decide for ``pin`` now (or ``at``), without
    using anything up."""
    authorizer = market.agent.runtime.authorizer
    moment = Moment(at or datetime.now(UTC), market.agent.runtime.clocks.mono(), clock_synced=True)
    return authorizer.evaluate(Pin(pin), connector=1, at=moment, connector_busy=False).status


async def _revoked_at_the_charger(market: Market, pin: str, *, timeout_s: float = 30) -> None:
    async def blocked() -> bool:
        return _judged(market, pin) is S.BLOCKED

    await wait_for(blocked, "the revocation to reach the agent", timeout_s=timeout_s)


async def test_a_pin_starts_one_session(market: Market) -> None:
    start = _this_slot()
    _, pin = await _book_and_reveal(market, market.driver, start, start + timedelta(hours=1))
    first = await _type(market, pin)
    assert first["ok"], first
    assert relay_closed(market.sim)
    await _stop(market)
    # The same PIN again, on the free connector, inside its window: refused, nothing starts.
    again = await _type(market, pin)
    assert (again["ok"], again["status"]) == (False, "Replayed"), again
    assert not relay_closed(market.sim)


async def test_a_pin_session_belongs_to_its_booking_and_driver_in_the_cloud(
    market: Market,
) -> None:
    """The PIN was shown by the booking's reveal (no unlock request names it): the session
    the agent reports under the PIN's reference is the booking's, and its driver's."""
    start = _this_slot()
    booking_id, pin = await _book_and_reveal(
        market, market.driver, start, start + timedelta(hours=1)
    )
    started = await _type(market, pin)
    assert started["ok"], started
    session_id = started["session_id"]
    await _stop(market)

    async def stopped() -> bool:
        state = await market.pg.fetchval(
            "SELECT state FROM sessions WHERE device_session_id = $1", session_id
        )
        return bool(state == "stopped")

    await wait_for(stopped, "the PIN session in the cloud")
    seen = await market.http.get(f"/sessions/{session_id}", headers=market.driver.headers)
    assert seen.status_code == 200, seen.text
    assert (seen.json()["user_id"], seen.json()["booking_id"]) == (market.driver.id, booking_id)
    mine = (await market.http.get("/sessions", headers=market.driver.headers)).json()["items"]
    assert [s["id"] for s in mine] == [session_id]
    host_view = await market.http.get(f"/sessions/{session_id}", headers=market.host.headers)
    assert host_view.json()["user_id"] == market.driver.id
    stranger = await add_user(market.pg, market.settings, Role.DRIVER)
    answer = await market.http.get(f"/sessions/{session_id}", headers=stranger.headers)
    assert answer.status_code == 404


async def test_a_30_minute_booking_pin_is_refused_when_the_booking_ends(market: Market) -> None:
    """Its window is the booking's own (v1 rounded a 30-minute booking up to an hour); there
    is no grace after the end, where the next booking may start."""
    start = _this_slot()
    end = start + timedelta(minutes=30)
    _, pin = await _book_and_reveal(market, market.driver, start, end)
    assert _judged(market, pin, start - timedelta(minutes=10)) is S.ACCEPTED  # a little early
    assert _judged(market, pin, end - timedelta(seconds=1)) is S.ACCEPTED
    assert _judged(market, pin, end) is S.EXPIRED
    assert _judged(market, pin, end + timedelta(minutes=29)) is S.EXPIRED


async def test_a_cancelled_booking_pin_is_refused_once_the_revocation_reaches_the_charger(
    market: Market,
) -> None:
    start = _this_slot()
    booking_id, pin = await _book_and_reveal(
        market, market.driver, start, start + timedelta(hours=1)
    )
    assert _judged(market, pin) is S.ACCEPTED
    cancel = await market.http.post(f"/bookings/{booking_id}/cancel", headers=market.driver.headers)
    assert cancel.status_code == 200, cancel.text

    await _revoked_at_the_charger(market, pin)
    refused = await _type(market, pin)
    assert (refused["ok"], refused["status"]) == (False, "Blocked"), refused
    assert not relay_closed(market.sim)


async def test_the_next_driver_who_books_a_cancelled_slot_gets_another_pin(
    market: Market,
) -> None:
    start = _this_slot()
    end = start + timedelta(hours=1)
    booking_id, pin = await _book_and_reveal(market, market.driver, start, end)
    cancel = await market.http.post(f"/bookings/{booking_id}/cancel", headers=market.driver.headers)
    assert cancel.status_code == 200, cancel.text
    other = await add_user(market.pg, market.settings, Role.DRIVER)
    _, theirs = await _book_and_reveal(market, other, start, end)
    assert theirs != pin
    started = await _type(market, theirs)
    assert started["ok"], started
    await _stop(market)


async def test_a_revocation_sent_while_the_charger_is_away_arrives_when_it_reconnects(
    market: Market,
) -> None:
    start = _this_slot()
    booking_id, pin = await _book_and_reveal(
        market, market.driver, start, start + timedelta(hours=1)
    )
    await market.link.cut()

    async def offline() -> bool:
        return not await market.device_online()

    await wait_for(offline, "the Last Will to mark the device offline")
    cancel = await market.http.post(f"/bookings/{booking_id}/cancel", headers=market.driver.headers)
    assert cancel.status_code == 200, cancel.text
    # The charger has not heard yet: offline, the PIN would still work.
    assert _judged(market, pin) is S.ACCEPTED

    await market.link.restore()
    await _revoked_at_the_charger(market, pin, timeout_s=60)
    refused = await _type(market, pin)
    assert (refused["ok"], refused["status"]) == (False, "Blocked"), refused
