"""Acceptance (issue 16, item 3): a driver extends a running booking — end to end with the
real agent, simulator, broker, ingest and API (tests/support/flow_rig.py) and the dummy
provider. The extension is quoted by the one rule, the agent is told over the command path
and stores the session's longer authorization, the top-up is paid as a second payment of
the booking, and the stop's bill is taken from both: captured - refunded = billed."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud.billing.quote import Tariff, price, window_usage
from cloud.chargers.models import PricingMode
from cloud.ledger.accounts import driver_account
from cloud.pg import PgConnection
from tests.support.bookings_fixtures import ALL_WEEK
from tests.support.certs import Certs
from tests.support.flow_rig import (
    PRICE_PER_KWH_PAISE,
    SESSION_FEE_PAISE,
    Market,
    register_wh,
    running_market,
    wait_for,
)
from tests.support.mosquitto import Broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TARIFF = Tariff(
    mode=PricingMode.PER_KWH,
    price_per_kwh_paise=PRICE_PER_KWH_PAISE,
    price_per_hour_paise=0,
    session_fee_paise=SESSION_FEE_PAISE,
    min_charge_paise=0,
)
CARD = "4111111111111111"


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
    ) as running:
        yield running


async def _pay(market: Market, booking_id: str) -> dict[str, Any]:
    opened = await market.http.post(
        f"/bookings/{booking_id}/payment", headers=market.driver.headers
    )
    assert opened.status_code == 201, opened.text
    paid = await market.http.post(
        f"/payments/{opened.json()['id']}/verify",
        json={"card_number": CARD},
        headers=market.driver.headers,
    )
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "authorized"
    result: dict[str, Any] = paid.json()
    return result


def _stored_authorization(site: Path, session_id: str) -> datetime | None:
    """The session's authorization as the agent stored it (its SQLite store, WAL mode)."""
    conn = sqlite3.connect(f"file:{site / 'agent.db'}?mode=ro", uri=True)
    try:
        row = conn.execute(
            "SELECT auth_expires_at FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
    finally:
        conn.close()
    return None if row is None or row[0] is None else datetime.fromisoformat(str(row[0]))


async def test_a_running_booking_is_extended_at_the_charger_topped_up_and_billed_across_both(
    market: Market,
) -> None:
    # On 15-minute boundaries, as POST /bookings makes them: the slot running now, an hour.
    now = datetime.now(UTC)
    start = now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)
    end = start + timedelta(hours=1)
    booking_id = await market.book(market.driver, start=start, end=end)
    for weekday, opens, closes in ALL_WEEK:  # open around the clock, as a listing states it
        await market.pg.execute(
            "INSERT INTO availability_windows (charger_id, weekday, opens_at, closes_at) "
            "VALUES ($1, $2, $3, $4)",
            market.charger_id,
            weekday,
            opens,
            closes,
        )
    amount = price(TARIFF, window_usage(end - start, 7400)).total_paise
    await market.pg.execute(
        "UPDATE bookings SET amount_paise = $2 WHERE id = $1", booking_id, amount
    )
    first = await _pay(market, booking_id)
    answer = await market.http.post(
        f"/chargers/{market.charger_id}/sessions",
        json={"connector": 1, "booking_id": booking_id},
        headers=market.driver.headers,
    )
    assert answer.status_code == 201, answer.text
    session_id = answer.json()["session_id"]
    before = _stored_authorization(market.site, session_id)
    assert before is not None
    assert before < end  # the unlock token's short life

    new_end = end + timedelta(minutes=45)
    extended = await market.http.post(
        f"/bookings/{booking_id}/extend",
        json={"end": new_end.isoformat()},
        headers=market.driver.headers,
    )
    assert extended.status_code == 200, extended.text
    body = extended.json()
    assert body["session_extended"] is True
    longer = price(TARIFF, window_usage(new_end - start, 7400)).total_paise
    assert body["extra_paise"] == longer - amount
    assert body["amount_paise"] == longer
    assert body["topup_paise"] == longer - amount

    async def accepted() -> bool:
        status = await market.pg.fetchval(
            "SELECT result_status FROM device_commands WHERE device_id = $1 "
            "AND name = 'extend_session'",
            market.device_id,
        )
        return bool(status == "Accepted")

    await wait_for(accepted, "the agent's answer to extend_session")
    assert _stored_authorization(market.site, session_id) == new_end

    topup = await _pay(market, booking_id)
    assert topup["amount_paise"] == body["topup_paise"]
    before_wh = register_wh(market.sim)

    async def energy_flowed() -> bool:
        return register_wh(market.sim) >= before_wh + 3

    await wait_for(energy_flowed, "energy through the meter")
    stop = await market.http.post(f"/sessions/{session_id}/stop", headers=market.driver.headers)
    assert stop.status_code == 202, stop.text

    async def settled() -> bool:
        state = await market.pg.fetchval(
            "SELECT billing_state FROM sessions WHERE device_session_id = $1", session_id
        )
        payments = await market.pg.fetch(
            "SELECT status FROM payments WHERE booking_id = $1", booking_id
        )
        return state == "settled" and all(
            p["status"] in {"partially_refunded", "refunded", "captured"} for p in payments
        )

    await wait_for(settled, "the session billed and both payments settled", timeout_s=30)
    [row] = await market.pg.fetch(
        "SELECT id, amount_paise FROM sessions WHERE device_session_id = $1", session_id
    )
    pk, billed = row["id"], row["amount_paise"]
    claimed = await market.pg.fetch(
        "SELECT id, session_id FROM payments WHERE booking_id = $1 ORDER BY created_at",
        booking_id,
    )
    assert [(r["id"], r["session_id"]) for r in claimed] == [(first["id"], pk), (topup["id"], pk)]
    receipt = (
        await market.http.get(f"/sessions/{session_id}/receipt", headers=market.driver.headers)
    ).json()
    assert receipt["prepaid_paise"] == longer
    assert receipt["captured_paise"] - receipt["refunded_paise"] == billed == receipt["total_paise"]
    assert receipt["due_paise"] == 0
    assert await market.pg.fetchval("SELECT sum(amount_paise) FROM ledger_entries") == 0
    held = await market.pg.fetchval(
        "SELECT coalesce(sum(amount_paise), 0) FROM ledger_entries WHERE account = $1",
        driver_account(market.driver.id),
    )
    assert held == 0
