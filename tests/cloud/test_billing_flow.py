"""Acceptance (issue 16, item 3): pay before unlock, bill the meter, refund the rest — end to
end with the real agent, simulator, broker, ingest and API (tests/support/flow_rig.py) and the
dummy payment provider (its webhooks through the API's own webhook route).

* online: a driver books, is refused the unlock unpaid (402), pays with the dummy's test card
  (a declined card first), unlocks, charges, stops; the session is billed meter delta x
  tariff + session fee + GST by the one rule, the prepayment captured and the unused part
  refunded, the host credited their share in the ledger — once, however often settlement
  runs;
* offline: the same booking paid, the charger's link cut, the PIN typed on the keypad; the
  session reaches the cloud when the link returns and is billed then;
* walk-up: an unpaid walk-up unlock is 402; a walk-up paid for less than it used leaves an
  amount due that refuses the next booking (402) until it is paid.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any

import pytest

from cloud.accounts.models import Role
from cloud.billing.quote import Rates, Tariff, price, window_usage
from cloud.chargers.models import PricingMode
from cloud.ledger.accounts import driver_account, host_account
from cloud.payments.dummy import CARD_DECLINED, CARD_SUCCEEDS
from cloud.payments.settlement import settle_session
from cloud.pg import PgConnection, PgRecord
from cloud.state import AppState
from edge_agent.control import request as control
from tests.support.bookings_fixtures import next_slot
from tests.support.certs import Certs
from tests.support.flow_rig import (
    PRICE_PER_KWH_PAISE,
    SESSION_FEE_PAISE,
    Market,
    booking_window,
    register_wh,
    relay_closed,
    running_market,
    wait_for,
)
from tests.support.market import add_user
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
        # Earnings payable at once: the acceptance ends with the host's payout paid.
        CHARGEMITRA_BILLING_HOLD_DAYS="0",
    ) as running:
        yield running


def _bill(energy_wh: int) -> int:
    """What the one rule bills for ``energy_wh`` on the rig's charger: energy at 18 Rs/kWh
    to the nearest paisa, the session fee, CGST 9 % + SGST 9 % each to the nearest paisa."""
    taxable = SESSION_FEE_PAISE + (PRICE_PER_KWH_PAISE * energy_wh + 500) // 1000
    return taxable + 2 * ((taxable * 900 + 5000) // 10_000)


def _host_share(total_paise: int, energy_wh: int) -> int:
    """The unregistered host's share: the taxable value less the 10 % commission."""
    taxable = SESSION_FEE_PAISE + (PRICE_PER_KWH_PAISE * energy_wh + 500) // 1000
    assert total_paise == _bill(energy_wh)
    return taxable - (taxable * 1000 + 5000) // 10_000


async def _book_with_amount(market: Market) -> tuple[str, int]:
    """A confirmed booking covering now whose amount is its window's quote (as
    ``POST /bookings`` would set it)."""
    start, end = booking_window()
    booking_id = await market.book(market.driver, start=start, end=end)
    amount = price(TARIFF, window_usage(end - start, 7400)).total_paise
    await market.pg.execute(
        "UPDATE bookings SET amount_paise = $2 WHERE id = $1", booking_id, amount
    )
    return booking_id, amount


async def _pay(market: Market, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Open a payment at ``path`` and pay it with the dummy's succeeding test card."""
    opened = await market.http.post(path, json=body, headers=market.driver.headers)
    assert opened.status_code == 201, opened.text
    order: dict[str, Any] = opened.json()
    assert order["status"] == "created"
    assert order["checkout"]["order_id"] == order["order_id"]
    paid = await market.http.post(
        f"/payments/{order['id']}/verify",
        json={"card_number": "4111 1111 1111 1111"},
        headers=market.driver.headers,
    )
    assert paid.status_code == 200, paid.text
    assert CARD_SUCCEEDS == "4111111111111111"
    result: dict[str, Any] = paid.json()
    return result


async def _one(market: Market, query: str, *args: object) -> PgRecord:
    rows = await market.pg.fetch(query, *args)
    assert len(rows) == 1, rows
    return rows[0]


async def _settled(market: Market, device_session_id: str) -> PgRecord:
    async def done() -> bool:
        state = await market.pg.fetchval(
            "SELECT billing_state FROM sessions WHERE device_session_id = $1", device_session_id
        )
        return bool(state == "settled")

    await wait_for(done, "the session settled", timeout_s=30)
    return await _one(
        market,
        "SELECT id, amount_paise, energy_wh FROM sessions WHERE device_session_id = $1",
        device_session_id,
    )


async def _refunded(market: Market, payment_id: str) -> None:
    async def processed() -> bool:
        status = await market.pg.fetchval("SELECT status FROM payments WHERE id = $1", payment_id)
        return status in {"partially_refunded", "refunded"}

    await wait_for(processed, "the refund webhook processed")


async def _balance(market: Market, account: str) -> int:
    total = await market.pg.fetchval(
        "SELECT coalesce(sum(amount_paise), 0) FROM ledger_entries WHERE account = $1", account
    )
    return int(total)


async def _check_money(
    market: Market, session_id: str, payment_id: str, prepaid: int
) -> dict[str, Any]:
    """The bill is the rule's, the unused prepayment refunded, the host credited, the ledger
    balanced; the receipt says so. Returns the receipt."""
    row = await _settled(market, session_id)
    await _refunded(market, payment_id)
    energy, billed = row["energy_wh"], row["amount_paise"]
    assert energy > 0
    assert billed == _bill(energy)
    payment = await _one(market, "SELECT * FROM payments WHERE id = $1", payment_id)
    assert payment["session_id"] == row["id"]
    assert payment["captured_paise"] == prepaid
    refunds = await market.pg.fetch(
        "SELECT amount_paise, status FROM refunds WHERE payment_id = $1", payment_id
    )
    assert [(r["amount_paise"], r["status"]) for r in refunds] == [(prepaid - billed, "processed")]
    host_id = await market.pg.fetchval(
        "SELECT host_id FROM chargers WHERE id = $1", market.charger_id
    )
    share = _host_share(billed, energy)
    assert -await _balance(market, host_account(host_id)) == share
    assert await _balance(market, driver_account(market.driver.id)) == 0
    assert await market.pg.fetchval("SELECT sum(amount_paise) FROM ledger_entries") == 0
    # The host's share is payable (no hold period here); a payout moves it to paid.
    asked = await market.http.post("/host/payouts", headers=market.host.headers)
    assert asked.status_code == 201, asked.text
    assert asked.json()["amount_paise"] == share
    paid = await market.http.post(
        f"/admin/payouts/{asked.json()['id']}/approve", headers=market.admin.headers
    )
    assert (paid.status_code, paid.json()["status"]) == (200, "paid"), paid.text
    earnings = (await market.http.get("/host/earnings", headers=market.host.headers)).json()
    assert (earnings["paid_paise"], earnings["payable_paise"]) == (share, 0)
    assert await _balance(market, host_account(host_id)) == 0
    assert await market.pg.fetchval("SELECT sum(amount_paise) FROM ledger_entries") == 0

    session = await market.http.get(f"/sessions/{session_id}", headers=market.driver.headers)
    assert session.json()["cost_paise"] == billed
    assert session.json()["cost_final"] is True
    receipt = await market.http.get(
        f"/sessions/{session_id}/receipt", headers=market.driver.headers
    )
    assert receipt.status_code == 200, receipt.text
    body: dict[str, Any] = receipt.json()
    assert body["total_paise"] == billed == sum(line["amount_paise"] for line in body["lines"])
    assert [line["kind"] for line in body["lines"]] == ["energy", "session_fee", "cgst", "sgst"]
    assert body["lines"][0]["quantity"] == energy
    assert (body["prepaid_paise"], body["captured_paise"]) == (prepaid, prepaid)
    assert body["refunded_paise"] == prepaid - billed
    assert body["due_paise"] == 0
    assert body["billing_state"] == "settled"
    assert body["sac"] == "998714"
    # The GST tax invoice came with the bill, and its PDF downloads.
    invoices = await market.http.get("/invoices", headers=market.driver.headers)
    assert invoices.status_code == 200, invoices.text
    (invoice,) = [i for i in invoices.json()["items"] if i["session_id"] == session_id]
    assert (invoice["kind"], invoice["total_paise"], invoice["sac"]) == (
        "invoice",
        billed,
        "998714",
    )
    pdf = await market.http.get(f"/invoices/{invoice['id']}.pdf", headers=market.driver.headers)
    assert pdf.status_code == 200, pdf.text
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    mine = await market.http.get(f"/payments/{payment_id}", headers=market.driver.headers)
    assert mine.json()["session_id"] == session_id
    assert mine.json()["refunded_paise"] == prepaid - billed
    # Another driver sees neither the payment nor the receipt.
    stranger = await add_user(market.pg, market.settings, Role.DRIVER)
    assert (
        await market.http.get(f"/payments/{payment_id}", headers=stranger.headers)
    ).status_code == 404
    assert (
        await market.http.get(f"/sessions/{session_id}/receipt", headers=stranger.headers)
    ).status_code == 404
    assert (await market.http.get("/payments", headers=stranger.headers)).json()["items"] == []
    return body


async def _settle_again(market: Market, session_pk: int) -> None:
    """Settlement retried (a redelivered stop, a second API process): nothing moves."""
    state = market.extra["state"]
    assert isinstance(state, AppState)
    assert state.payments is not None
    before = await market.pg.fetchval("SELECT count(*) FROM ledger_entries")
    await market.pg.execute(
        "UPDATE sessions SET updated_at = now() WHERE id = $1", session_pk
    )  # a stop event redelivered refolds the row: billing_state untouched
    billed = await settle_session(
        state.sessions,
        state.payments,
        session_pk,
        platform=Rates(),
        tcs_bp=50,
    )
    assert billed is False
    assert await market.pg.fetchval("SELECT count(*) FROM ledger_entries") == before
    assert await market.pg.fetchval("SELECT count(*) FROM refunds") == 1
    assert await market.pg.fetchval("SELECT count(*) FROM invoices") == 1


async def test_book_pay_unlock_charge_stop_bills_the_meter_and_refunds_the_rest(
    market: Market,
) -> None:
    booking_id, amount = await _book_with_amount(market)
    unlock = {"connector": 1, "booking_id": booking_id}
    path = f"/chargers/{market.charger_id}/sessions"

    # Unpaid: 402, and the contactor stays open.
    refused = await market.http.post(path, json=unlock, headers=market.driver.headers)
    assert refused.status_code == 402, refused.text
    problem = refused.json()
    assert problem["type"].endswith("/payment-required")
    assert problem["amount_paise"] == amount
    assert not relay_closed(market.sim)

    # A declined card pays nothing: still 402.
    opened = await market.http.post(
        f"/bookings/{booking_id}/payment", headers=market.driver.headers
    )
    assert opened.status_code == 201, opened.text
    assert opened.json()["amount_paise"] == amount
    declined = await market.http.post(
        f"/payments/{opened.json()['id']}/verify",
        json={"card_number": CARD_DECLINED},
        headers=market.driver.headers,
    )
    assert declined.status_code == 402, declined.text
    assert declined.json()["type"].endswith("/payment-required")

    async def failed() -> bool:
        status = await market.pg.fetchval(
            "SELECT status FROM payments WHERE id = $1", opened.json()["id"]
        )
        return bool(status == "failed")

    await wait_for(failed, "the payment.failed webhook")
    assert (
        await market.http.post(path, json=unlock, headers=market.driver.headers)
    ).status_code == 402

    paid = await _pay(market, f"/bookings/{booking_id}/payment")
    assert paid["status"] == "authorized"
    assert paid["amount_paise"] == amount
    again = await market.http.post(f"/bookings/{booking_id}/payment", headers=market.driver.headers)
    assert again.status_code == 409  # already paid

    before_wh = register_wh(market.sim)
    answer = await market.http.post(path, json=unlock, headers=market.driver.headers)
    assert answer.status_code == 201, answer.text
    assert relay_closed(market.sim)
    session_id = answer.json()["session_id"]

    async def energy_flowed() -> bool:
        return register_wh(market.sim) >= before_wh + 5

    await wait_for(energy_flowed, "energy through the meter")
    stop = await market.http.post(f"/sessions/{session_id}/stop", headers=market.driver.headers)
    assert stop.status_code == 202, stop.text
    after_wh = register_wh(market.sim)

    receipt = await _check_money(market, session_id, paid["id"], amount)
    assert receipt["energy_wh"] == after_wh - before_wh
    assert receipt["booking_id"] == booking_id
    listed = (await market.http.get("/payments", headers=market.driver.headers)).json()["items"]
    assert [p["id"] for p in listed] == [paid["id"], opened.json()["id"]]
    # The billed session completed its booking (cloud/bookings/completion.py): the slot is
    # free for others, and the booking starts nothing more.
    again_unlock = await market.http.post(path, json=unlock, headers=market.driver.headers)
    assert again_unlock.status_code == 409, again_unlock.text
    assert "completed" in again_unlock.json()["detail"]
    row = await _one(market, "SELECT id FROM sessions WHERE device_session_id = $1", session_id)
    await _settle_again(market, row["id"])


async def test_offline_pin_session_is_billed_when_it_syncs(market: Market) -> None:
    booking_id, amount = await _book_with_amount(market)
    await market.link.cut()

    async def offline() -> bool:
        return not await market.device_online()

    await wait_for(offline, "the Last Will to mark the device offline")
    path = f"/chargers/{market.charger_id}/sessions"
    unlock = {"connector": 1, "booking_id": booking_id}
    # No PIN for an unpaid booking.
    refused = await market.http.post(path, json=unlock, headers=market.driver.headers)
    assert refused.status_code == 402, refused.text
    paid = await _pay(market, f"/bookings/{booking_id}/payment")
    answer = await market.http.post(path, json=unlock, headers=market.driver.headers)
    assert answer.status_code == 202, answer.text
    pin = answer.json()["pin"]

    before_wh = register_wh(market.sim)
    market.sim.keys(pin + "#")

    async def closed() -> bool:
        return relay_closed(market.sim)

    await wait_for(closed, "the keypad PIN to close the relay")

    async def energy_flowed() -> bool:
        return register_wh(market.sim) >= before_wh + 3

    await wait_for(energy_flowed, "energy through the meter")
    assert (await control(market.site / "agent.sock", {"cmd": "stop", "connector": 1}))["ok"]
    after_wh = register_wh(market.sim)
    # Nothing billed while the charger is away: the cloud has not heard of the session.
    assert (
        await market.pg.fetchval("SELECT count(*) FROM ledger_entries WHERE source = 'bill'") == 0
    )

    await market.link.restore()
    device_session_id = None

    async def synced() -> bool:
        nonlocal device_session_id
        device_session_id = await market.pg.fetchval(
            "SELECT device_session_id FROM sessions WHERE device_id = $1 AND state = 'stopped'",
            market.device_id,
        )
        return device_session_id is not None

    await wait_for(synced, "the offline session to reach the cloud", timeout_s=60)
    assert device_session_id is not None
    receipt = await _check_money(market, device_session_id, paid["id"], amount)
    assert receipt["energy_wh"] == after_wh - before_wh
    offline_flag = await market.pg.fetchval(
        "SELECT offline FROM sessions WHERE device_session_id = $1", device_session_id
    )
    assert offline_flag is True


async def test_walk_up_unpaid_is_402_and_an_overstay_is_due_before_the_next_booking(
    market: Market,
) -> None:
    path = f"/chargers/{market.charger_id}/sessions"
    refused = await market.http.post(path, json={"connector": 1}, headers=market.driver.headers)
    assert refused.status_code == 402, refused.text
    assert refused.json()["type"].endswith("/payment-required")
    assert not relay_closed(market.sim)

    # Prepaid for 1 Wh: the session uses more, and the bill goes beyond the prepayment.
    paid = await _pay(
        market, "/payments", {"charger_id": market.charger_id, "connector": 1, "energy_wh": 1}
    )
    prepaid = paid["amount_paise"]
    assert prepaid == _bill(1)
    answer = await market.http.post(path, json={"connector": 1}, headers=market.driver.headers)
    assert answer.status_code == 201, answer.text
    session_id = answer.json()["session_id"]
    before_wh = register_wh(market.sim)

    async def energy_flowed() -> bool:
        return register_wh(market.sim) >= before_wh + 5

    await wait_for(energy_flowed, "energy through the meter")
    stop = await market.http.post(f"/sessions/{session_id}/stop", headers=market.driver.headers)
    assert stop.status_code == 202, stop.text
    # The walk-up payment is consumed: another walk-up unlock needs another payment.
    again = await market.http.post(path, json={"connector": 1}, headers=market.driver.headers)
    assert again.status_code == 402, again.text

    row = await _settled(market, session_id)
    billed = row["amount_paise"]
    assert billed == _bill(row["energy_wh"]) > prepaid
    due = billed - prepaid
    receipt = (
        await market.http.get(f"/sessions/{session_id}/receipt", headers=market.driver.headers)
    ).json()
    assert (receipt["captured_paise"], receipt["refunded_paise"]) == (prepaid, 0)
    assert receipt["due_paise"] == due
    assert await _balance(market, driver_account(market.driver.id)) == due

    # The amount due refuses the next booking and the next walk-up payment.
    start = next_slot(datetime.now(UTC))
    booking = {
        "charger_id": market.charger_id,
        "connector": 1,
        "start": start.isoformat(),
        "end": (start + timedelta(hours=1)).isoformat(),
    }
    blocked = await market.http.post("/bookings", json=booking, headers=market.driver.headers)
    assert blocked.status_code == 402, blocked.text
    assert blocked.json()["amount_paise"] == due
    walkup = {"charger_id": market.charger_id, "connector": 1, "duration_min": 30}
    assert (
        await market.http.post("/payments", json=walkup, headers=market.driver.headers)
    ).status_code == 402

    settled_due = await _pay(market, "/amount-due/payment")
    assert settled_due["amount_paise"] == due
    assert settled_due["status"] == "captured"
    assert settled_due["session_id"] == session_id
    assert await _balance(market, driver_account(market.driver.id)) == 0
    receipt = (
        await market.http.get(f"/sessions/{session_id}/receipt", headers=market.driver.headers)
    ).json()
    assert receipt["due_paise"] == 0
    for weekday in range(7):  # open all day, every day, for the booking through the API
        await market.pg.execute(
            "INSERT INTO availability_windows (charger_id, weekday, opens_at, closes_at) "
            "VALUES ($1, $2, $3, $4)",
            market.charger_id,
            weekday,
            time(0, 0),
            time(23, 45),
        )
    booked = await market.http.post("/bookings", json=booking, headers=market.driver.headers)
    assert booked.status_code == 201, booked.text
    assert await market.pg.fetchval("SELECT sum(amount_paise) FROM ledger_entries") == 0
