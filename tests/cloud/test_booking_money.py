"""A booking's money through the API (in-process, real PostgreSQL, Redis and the dummy
provider): the overstay beyond a booking's end is billed as an idle fee and left due.

Sessions are written as ingest writes a stop (a ``stopped``, ``unbilled`` row) and settled
by the settle job's own function (cloud/payments/settlement.py) against the API's provider;
what the driver sees is read over HTTP.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloud.accounts.models import Role
from cloud.billing.quote import LineKind, Rates, Tariff, Usage, fee_quote, price
from cloud.billing.service import rates
from cloud.bookings.models import Booking
from cloud.chargers.models import PricingMode
from cloud.errors import BookingNotActive
from cloud.payments.checkout import require_booking_paid
from cloud.payments.settlement import release_cancelled, settle_session
from cloud.pg import PgConnection
from cloud.state import AppState
from protocols.ids import new_ulid
from tests.support.bookings_fixtures import ListedCharger, add_charger, booking_body, next_slot
from tests.support.flow_rig import wait_for
from tests.support.market import Api, ApiUser, add_user

pytestmark = pytest.mark.integration

#: The chargers below: 60.00 an hour, an idle fee of 2.00 a minute after 10 minutes' grace.
PER_HOUR_PAISE = 6000
IDLE_PER_MIN_PAISE = 200
GRACE_MIN = 10
CARD = "4111111111111111"


def _state(api: Api) -> AppState:
    state = api.app.state.cloud
    assert isinstance(state, AppState)
    return state


async def _charger(pg: PgConnection, host: ApiUser) -> ListedCharger:
    charger = await add_charger(pg, host, price_per_hour_paise=PER_HOUR_PAISE)
    await pg.execute(
        "UPDATE chargers SET idle_fee_per_min_paise = $2, idle_grace_min = $3 WHERE id = $1",
        charger.id,
        IDLE_PER_MIN_PAISE,
        GRACE_MIN,
    )
    return charger


async def _book(api: Api, driver: ApiUser, charger: ListedCharger, hours: int = 1) -> Any:
    start = next_slot(datetime.now(UTC), days=1)
    body = booking_body(charger, start, start + timedelta(hours=hours))
    answer = await api.client.post("/bookings", json=body, headers=driver.headers)
    assert answer.status_code == 201, answer.text
    return answer.json()


async def _pay(api: Api, driver: ApiUser, path: str, body: Any = None) -> Any:
    order = await api.client.post(path, json=body, headers=driver.headers)
    assert order.status_code == 201, order.text
    paid = await api.client.post(
        f"/payments/{order.json()['id']}/verify",
        json={"card_number": CARD},
        headers=driver.headers,
    )
    assert paid.status_code == 200, paid.text
    assert paid.json()["status"] == "authorized"
    return paid.json()


async def _stopped_session(
    pg: PgConnection,
    charger: ListedCharger,
    booking_id: str,
    *,
    started: datetime,
    stopped: datetime,
) -> tuple[int, str]:
    """The session of ``booking_id`` as ingest writes its stop; (its row id, its API id)."""
    public_id = new_ulid()
    pk: int = await pg.fetchval(
        "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
        "booking_id, credential_kind, credential_ref, state, started_at, stopped_at, "
        "meter_start_wh, meter_stop_wh, energy_wh, last_event_seq, events_received) VALUES "
        "($1, $2, 1, $3, $4, 'Remote', $5, 'stopped', $6, $7, 1000, 4000, 3000, 3, 3) "
        "RETURNING id",
        charger.device_id,
        public_id,
        charger.id,
        booking_id,
        new_ulid(),
        started,
        stopped,
    )
    return pk, public_id


async def _settle(api: Api, session_pk: int) -> None:
    state = _state(api)
    assert state.payments is not None
    billing = api.settings.billing
    await settle_session(
        state.sessions,
        state.payments,
        session_pk,
        platform=_rates(api),
        tcs_bp=billing.tcs_bp,
        billing=billing,
    )


def _rates(api: Api) -> Rates:
    return rates(api.settings.billing)


async def _move_booking(pg: PgConnection, booking_id: str, start: datetime, end: datetime) -> None:
    """Put a booking made for tomorrow at the time the test plays (the rules are for new
    bookings; the clock of a settled session is the past)."""
    await pg.execute(
        "UPDATE bookings SET period = tstzrange($2, $3, '[)') WHERE id = $1",
        booking_id,
        start,
        end,
    )


async def test_a_stop_after_the_bookings_end_bills_the_overstay_per_started_minute(
    market_api: Api, pg: PgConnection
) -> None:
    s = market_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    charger = await _charger(pg, host)
    booking = await _book(market_api, driver, charger)
    paid = await _pay(market_api, driver, f"/bookings/{booking['id']}/payment")
    assert paid["amount_paise"] == booking["amount_paise"] == 6000 + 540 + 540

    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    start = end - timedelta(hours=1)
    await _move_booking(pg, booking["id"], start, end)
    # Charged through the booking and stayed 25.5 minutes beyond it: 10 of grace, 15.5
    # billed as 16 started minutes.
    stopped = end + timedelta(minutes=25, seconds=30)
    pk, public_id = await _stopped_session(
        pg, charger, booking["id"], started=start, stopped=stopped
    )
    await _settle(market_api, pk)

    receipt = await market_api.client.get(f"/sessions/{public_id}/receipt", headers=driver.headers)
    assert receipt.status_code == 200, receipt.text
    r = receipt.json()
    lines = {line["kind"]: line for line in r["lines"]}
    assert lines["idle_fee"]["amount_paise"] == 16 * IDLE_PER_MIN_PAISE
    assert (lines["idle_fee"]["quantity"], lines["idle_fee"]["unit"]) == (16, "min")
    tariff = Tariff(PricingMode.PER_HOUR, 1800, PER_HOUR_PAISE, 0, 0, IDLE_PER_MIN_PAISE, GRACE_MIN)
    bill = price(tariff, Usage(stopped - start, 3000, idle=stopped - end), _rates(market_api))
    assert bill.line(LineKind.IDLE_FEE) == 3200
    assert r["total_paise"] == bill.total_paise
    assert await pg.fetchval("SELECT amount_paise FROM sessions WHERE id = $1", pk) == (
        bill.total_paise
    )
    # The overstay beyond the prepayment is due, and refuses the next booking until paid.
    assert r["due_paise"] == bill.total_paise - paid["amount_paise"] > 0
    again = await market_api.client.post(
        "/bookings", json=booking_body(charger, *_tomorrow(hours=3)), headers=driver.headers
    )
    assert again.status_code == 402, again.text
    assert again.json()["amount_paise"] == r["due_paise"]
    # The invoice shows the idle line.
    invoices = await market_api.client.get("/invoices", headers=driver.headers)
    [invoice] = invoices.json()["items"]
    assert {"kind": "idle_fee", "amount_paise": 3200} in [
        {"kind": line["kind"], "amount_paise": line["amount_paise"]} for line in invoice["lines"]
    ]


async def test_a_stop_within_the_grace_bills_no_idle_fee(market_api: Api, pg: PgConnection) -> None:
    s = market_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    charger = await _charger(pg, host)
    booking = await _book(market_api, driver, charger)
    await _pay(market_api, driver, f"/bookings/{booking['id']}/payment")
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    start = end - timedelta(hours=1)
    await _move_booking(pg, booking["id"], start, end)
    stopped = end + timedelta(minutes=GRACE_MIN)  # exactly the grace: nothing to pay
    pk, public_id = await _stopped_session(
        pg, charger, booking["id"], started=start, stopped=stopped
    )
    await _settle(market_api, pk)
    r = (
        await market_api.client.get(f"/sessions/{public_id}/receipt", headers=driver.headers)
    ).json()
    assert "idle_fee" not in [line["kind"] for line in r["lines"]]
    assert r["due_paise"] > 0  # 70 minutes at 60.00 an hour: more than the hour prepaid


def _tomorrow(hours: int) -> tuple[datetime, datetime]:
    start = next_slot(datetime.now(UTC), days=1) + timedelta(hours=hours)
    return start, start + timedelta(hours=1)


async def _money_of_payment(pg: PgConnection, payment_id: str) -> tuple[int, int, int]:
    """(captured, refunded, billed) of a payment, as the ledger has them."""
    [row] = await pg.fetch(
        "SELECT coalesce(sum(amount_paise) FILTER (WHERE account = 'provider_clearing' "
        "  AND source IN ('capture', 'payment')), 0), "
        "coalesce(-sum(amount_paise) FILTER (WHERE account = 'provider_clearing' "
        "  AND source = 'refund'), 0), "
        "coalesce(sum(amount_paise) FILTER (WHERE account LIKE 'driver:%' "
        "  AND source = 'bill'), 0) "
        "FROM ledger_entries WHERE payment_id = $1",
        payment_id,
    )
    return int(row[0]), int(row[1]), int(row[2])


async def test_a_late_cancellations_fee_is_billed_to_the_host_with_an_invoice(
    market_api: Api, pg: PgConnection
) -> None:
    s = market_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    # A late fee of 50.00 until a day before the start: tomorrow's booking is late already.
    charger = await add_charger(
        pg,
        host,
        price_per_hour_paise=PER_HOUR_PAISE,
        late_cancel_fee_paise=5000,
        free_cancel_before_min=48 * 60,
    )
    booking = await _book(market_api, driver, charger)
    paid = await _pay(market_api, driver, f"/bookings/{booking['id']}/payment")
    cancelled = await market_api.client.post(
        f"/bookings/{booking['id']}/cancel", headers=driver.headers
    )
    assert cancelled.status_code == 200, cancelled.text
    fee = cancelled.json()["cancellation_fee_paise"]
    assert fee == 5000

    state = _state(market_api)
    assert state.payments is not None
    await release_cancelled(state.sessions, state.payments, billing=s.billing)
    # Again (the job's next round, a second API process): nothing moves twice.
    await release_cancelled(state.sessions, state.payments, billing=s.billing)

    async def refunded() -> bool:
        status = await pg.fetchval("SELECT status FROM payments WHERE id = $1", paid["id"])
        return bool(status == "partially_refunded")

    await wait_for(refunded, "the refund webhook")
    # The fee is 50.00 GST included: 42.38 taxable + 3.81 CGST + 3.81 SGST.
    bill = fee_quote(fee, _rates(market_api))
    assert bill.taxable_paise == 4238
    captured, back, billed = await _money_of_payment(pg, paid["id"])
    assert (captured, back, billed) == (paid["amount_paise"], paid["amount_paise"] - fee, fee)
    assert captured - back == billed
    assert await pg.fetchval("SELECT sum(amount_paise) FROM ledger_entries") == 0
    driver_left = await pg.fetchval(
        "SELECT coalesce(sum(amount_paise), 0) FROM ledger_entries WHERE account = $1",
        f"driver:{driver.id}",
    )
    assert driver_left == 0  # nothing held as the driver's credit any more

    # The host earns the taxable value less the 10 % commission (an unregistered host).
    earnings = await market_api.client.get("/host/earnings", headers=host.headers)
    assert earnings.status_code == 200, earnings.text
    assert earnings.json()["earned_paise"] == bill.host_share_paise == 4238 - 424

    # A GST tax invoice for a supply without a session, read by the driver and the host.
    listed = (await market_api.client.get("/invoices", headers=driver.headers)).json()
    [invoice] = listed["items"]
    assert (invoice["booking_id"], invoice["session_id"]) == (booking["id"], None)
    assert invoice["total_paise"] == fee
    assert invoice["sac"] == "998714"
    assert [(line["kind"], line["amount_paise"]) for line in invoice["lines"]] == [
        ("cancellation_fee", 4238)
    ]
    assert (invoice["cgst_paise"], invoice["sgst_paise"], invoice["igst_paise"]) == (381, 381, 0)
    hosted = (await market_api.client.get("/invoices", headers=host.headers)).json()
    assert [i["id"] for i in hosted["items"]] == [invoice["id"]]
    other = await add_user(pg, s, Role.DRIVER)
    unseen = await market_api.client.get(f"/invoices/{invoice['id']}", headers=other.headers)
    assert unseen.status_code == 404
    document = await market_api.client.get(invoice["pdf_url"], headers=driver.headers)
    assert document.status_code == 200
    assert document.headers["content-type"] == "application/pdf"


def _this_slot() -> datetime:
    """The 15-minute boundary at or before now."""
    now = datetime.now(UTC)
    return now.replace(minute=now.minute - now.minute % 15, second=0, microsecond=0)


async def _running_booking(
    api: Api, pg: PgConnection, driver: ApiUser, charger: ListedCharger
) -> tuple[Any, Any, datetime, datetime]:
    """A booking made and paid through the API, then moved to run now: (booking, payment,
    start, end)."""
    booking = await _book(api, driver, charger)
    paid = await _pay(api, driver, f"/bookings/{booking['id']}/payment")
    start = _this_slot()
    end = start + timedelta(hours=1)
    await _move_booking(pg, booking["id"], start, end)
    return booking, paid, start, end


async def test_extending_a_running_booking_tops_up_and_the_bill_takes_both_payments(
    market_api: Api, pg: PgConnection
) -> None:
    s = market_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    charger = await _charger(pg, host)
    booking, first, start, end = await _running_booking(market_api, pg, driver, charger)
    path = f"/bookings/{booking['id']}/extend"
    new_end = end + timedelta(minutes=30)

    answer = await market_api.client.post(
        path, json={"end": new_end.isoformat()}, headers=driver.headers
    )
    assert answer.status_code == 200, answer.text
    extended = answer.json()
    assert datetime.fromisoformat(extended["end"]) == new_end
    # 30 more minutes at 60.00 an hour, plus GST: the one rule's quote of 90 minutes less
    # that of 60.
    assert extended["extra_paise"] == 3000 + 270 + 270
    assert extended["amount_paise"] == first["amount_paise"] + extended["extra_paise"]
    assert extended["topup_paise"] == extended["extra_paise"]
    assert extended["session_extended"] is False  # no session runs yet: nothing to tell
    # Not paid in full any more: the unlock and the PIN want the top-up (402 with it).
    unpaid = await market_api.client.post(f"/bookings/{booking['id']}/pin", headers=driver.headers)
    assert unpaid.status_code == 402
    assert unpaid.json()["amount_paise"] == extended["topup_paise"]
    topup = await _pay(market_api, driver, f"/bookings/{booking['id']}/payment")
    assert topup["amount_paise"] == extended["topup_paise"]
    assert topup["booking_id"] == booking["id"]
    again = await market_api.client.post(
        f"/bookings/{booking['id']}/payment", headers=driver.headers
    )
    assert again.status_code == 409  # paid in full

    # The session charged 80 minutes (3 kWh), inside the extended booking: no overstay.
    stopped = end + timedelta(minutes=20)
    pk, public_id = await _stopped_session(
        pg, charger, booking["id"], started=start, stopped=stopped
    )
    await _settle(market_api, pk)
    tariff = Tariff(PricingMode.PER_HOUR, 1800, PER_HOUR_PAISE, 0, 0, IDLE_PER_MIN_PAISE, GRACE_MIN)
    bill = price(tariff, Usage(stopped - start, 3000), _rates(market_api))
    assert bill.total_paise > first["amount_paise"]  # the first payment alone is short
    r = (
        await market_api.client.get(f"/sessions/{public_id}/receipt", headers=driver.headers)
    ).json()
    assert r["total_paise"] == bill.total_paise
    assert "idle_fee" not in [line["kind"] for line in r["lines"]]
    assert r["prepaid_paise"] == first["amount_paise"] + topup["amount_paise"]

    async def settled() -> bool:
        statuses = await pg.fetch(
            "SELECT status FROM payments WHERE id = ANY($1::text[])", [first["id"], topup["id"]]
        )
        return {row[0] for row in statuses} <= {"captured", "partially_refunded"}

    await wait_for(settled, "the capture and refund webhooks")
    claimed = await pg.fetch(
        "SELECT id, session_id FROM payments WHERE booking_id = $1", booking["id"]
    )
    assert {row[1] for row in claimed} == {pk}  # both payments pay for the session
    # Per payment and per session, captured - refunded = billed; nothing due, nothing held.
    first_money = await _money_of_payment(pg, first["id"])
    topup_money = await _money_of_payment(pg, topup["id"])
    assert first_money[0] - first_money[1] == first["amount_paise"]  # taken whole
    assert topup_money[0] - topup_money[1] == bill.total_paise - first["amount_paise"]
    receipt = (
        await market_api.client.get(f"/sessions/{public_id}/receipt", headers=driver.headers)
    ).json()
    assert receipt["captured_paise"] - receipt["refunded_paise"] == bill.total_paise
    assert receipt["due_paise"] == 0
    assert await pg.fetchval("SELECT sum(amount_paise) FROM ledger_entries") == 0
    left = await pg.fetchval(
        "SELECT coalesce(sum(amount_paise), 0) FROM ledger_entries WHERE account = $1",
        f"driver:{driver.id}",
    )
    assert left == 0


async def test_an_extension_into_a_taken_slot_is_409_and_changes_nothing(
    market_api: Api, pg: PgConnection
) -> None:
    s = market_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    other = await add_user(pg, s, Role.DRIVER)
    charger = await _charger(pg, host)
    booking, _, _, end = await _running_booking(market_api, pg, driver, charger)
    next_one = await market_api.client.post(
        "/bookings",
        json=booking_body(charger, end, end + timedelta(hours=1)),
        headers=other.headers,
    )
    assert next_one.status_code == 201, next_one.text
    path = f"/bookings/{booking['id']}/extend"
    taken = await market_api.client.post(
        path, json={"end": (end + timedelta(minutes=15)).isoformat()}, headers=driver.headers
    )
    assert taken.status_code == 409, taken.text
    assert taken.json()["type"].endswith("/booking-overlap")
    row = await pg.fetchval("SELECT upper(period) FROM bookings WHERE id = $1", booking["id"])
    assert row == end
    amount = await pg.fetchval("SELECT amount_paise FROM bookings WHERE id = $1", booking["id"])
    assert amount == booking["amount_paise"]

    # The rules: a later end on a 15-minute boundary; only the booking's driver; only while
    # it runs.
    for bad in (end, end + timedelta(minutes=10), end + timedelta(hours=12)):
        refused = await market_api.client.post(
            path, json={"end": bad.isoformat()}, headers=driver.headers
        )
        assert refused.status_code == 422, bad
        assert refused.json()["errors"][0]["field"] == "end"
    later = end + timedelta(hours=2)
    stranger = await market_api.client.post(
        path, json={"end": later.isoformat()}, headers=other.headers
    )
    assert stranger.status_code == 404
    as_host = await market_api.client.post(
        path, json={"end": later.isoformat()}, headers=host.headers
    )
    assert as_host.status_code in {403, 404}
    upcoming = next_one.json()["id"]
    not_running = await market_api.client.post(
        f"/bookings/{upcoming}/extend",
        json={"end": (end + timedelta(hours=2)).isoformat()},
        headers=other.headers,
    )
    assert not_running.status_code == 409
    assert not_running.json()["type"].endswith("/conflict")


async def test_extending_a_running_session_sends_the_charger_an_extend_session_command(
    market_api: Api, pg: PgConnection
) -> None:
    s = market_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    charger = await _charger(pg, host)
    booking, _, start, end = await _running_booking(market_api, pg, driver, charger)
    public_id = new_ulid()
    await pg.execute(
        "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
        "booking_id, credential_kind, credential_ref, state, started_at, meter_start_wh, "
        "meter_stop_wh, energy_wh, last_event_seq, events_received) VALUES ($1, $2, 1, $3, "
        "$4, 'Remote', $5, 'active', $6, 1000, 1000, 0, 1, 1)",
        charger.device_id,
        public_id,
        charger.id,
        booking["id"],
        new_ulid(),
        start,
    )
    new_end = end + timedelta(minutes=45)
    answer = await market_api.client.post(
        f"/bookings/{booking['id']}/extend",
        json={"end": new_end.isoformat()},
        headers=driver.headers,
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["session_extended"] is True
    [command] = await pg.fetch(
        "SELECT name, payload, expires_at FROM device_commands WHERE device_id = $1",
        charger.device_id,
    )
    assert command[0] == "extend_session"
    payload = command[1] if isinstance(command[1], dict) else json.loads(command[1])
    assert payload["session_id"] == public_id
    assert datetime.fromisoformat(payload["until"].replace("Z", "+00:00")) == new_end
    assert command[2] >= new_end - timedelta(seconds=1)


async def _release(api: Api) -> None:
    """The settle job's release step, twice (its next round, a second API process): nothing
    moves twice."""
    state = _state(api)
    assert state.payments is not None
    for _ in range(2):
        await release_cancelled(state.sessions, state.payments, billing=api.settings.billing)


async def test_a_paid_booking_nobody_used_is_a_no_show_charged_the_late_fee(
    market_api: Api, pg: PgConnection
) -> None:
    s = market_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    charger = await add_charger(
        pg, host, price_per_hour_paise=PER_HOUR_PAISE, late_cancel_fee_paise=5000
    )
    after = timedelta(minutes=s.billing.no_show_after_min)
    gone = await _book(market_api, driver, charger)
    paid = await _pay(market_api, driver, f"/bookings/{gone['id']}/payment")
    # Ended long enough ago, never unlocked: a no-show.
    end = _this_slot() - after - timedelta(minutes=15)
    await _move_booking(pg, gone["id"], end - timedelta(hours=1), end)
    # Ended, but within the wait (an overstaying or late-syncing session may still report).
    other = await add_charger(pg, host, price_per_hour_paise=PER_HOUR_PAISE)
    recent = await _book(market_api, driver, other)
    recent_paid = await _pay(market_api, driver, f"/bookings/{recent['id']}/payment")
    recent_end = datetime.now(UTC) - after + timedelta(minutes=10)
    await _move_booking(pg, recent["id"], recent_end - timedelta(hours=1), recent_end)

    await _release(market_api)

    async def refunded() -> bool:
        status = await pg.fetchval("SELECT status FROM payments WHERE id = $1", paid["id"])
        return bool(status == "partially_refunded")

    await wait_for(refunded, "the refund webhook")
    booking = await market_api.client.get(f"/bookings/{gone['id']}", headers=driver.headers)
    assert booking.status_code == 200, booking.text
    assert (booking.json()["status"], booking.json()["cancellation_fee_paise"]) == ("no_show", 5000)
    payment = (
        await market_api.client.get(f"/payments/{paid['id']}", headers=driver.headers)
    ).json()
    assert payment["captured_paise"] == paid["amount_paise"]
    assert payment["refunded_paise"] == paid["amount_paise"] - 5000
    captured, back, billed = await _money_of_payment(pg, paid["id"])
    assert captured - back == billed == 5000
    # Billed to the host like a late cancellation, with its invoice.
    [invoice] = (await market_api.client.get("/invoices", headers=host.headers)).json()["items"]
    assert (invoice["booking_id"], invoice["total_paise"]) == (gone["id"], 5000)
    earnings = (await market_api.client.get("/host/earnings", headers=host.headers)).json()
    assert earnings["earned_paise"] == fee_quote(5000, _rates(market_api)).host_share_paise
    # The recent one is untouched: confirmed, its money still held.
    still = (
        await market_api.client.get(f"/bookings/{recent['id']}", headers=driver.headers)
    ).json()
    assert still["status"] == "confirmed"
    held = await pg.fetchval("SELECT status FROM payments WHERE id = $1", recent_paid["id"])
    assert held == "authorized"
    assert await pg.fetchval("SELECT sum(amount_paise) FROM ledger_entries") == 0


async def test_a_billed_booking_is_completed_and_takes_no_extension_or_top_up(
    market_api: Api, pg: PgConnection
) -> None:
    s = market_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    charger = await _charger(pg, host)
    booking, _, start, end = await _running_booking(market_api, pg, driver, charger)
    pk, _ = await _stopped_session(
        pg, charger, booking["id"], started=start, stopped=datetime.now(UTC)
    )
    await _settle(market_api, pk)  # the session claims the prepayment, completes the booking
    extended = await market_api.client.post(
        f"/bookings/{booking['id']}/extend",
        json={"end": (end + timedelta(minutes=30)).isoformat()},
        headers=driver.headers,
    )
    assert extended.status_code == 409, extended.text
    order = await market_api.client.post(
        f"/bookings/{booking['id']}/payment", headers=driver.headers
    )
    assert order.status_code == 409, order.text
    after = (
        await market_api.client.get(f"/bookings/{booking['id']}", headers=driver.headers)
    ).json()
    assert (after["status"], after["cancellation_fee_paise"]) == ("completed", 0)
    # A release round later refunds nothing and bills no fee: the session paid its bill.
    await _move_booking(pg, booking["id"], start - timedelta(hours=3), start - timedelta(hours=2))
    await _release(market_api)
    assert await pg.fetchval("SELECT sum(amount_paise) FROM ledger_entries") == 0
    fee_invoices = await pg.fetchval(
        "SELECT count(*) FROM invoices WHERE booking_id = $1 AND session_id IS NULL",
        booking["id"],
    )
    assert fee_invoices == 0


async def test_paying_an_amount_due_pays_the_settled_session_not_the_next_one(
    market_api: Api, pg: PgConnection
) -> None:
    s = market_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    charger = await _charger(pg, host)
    booking = await _book(market_api, driver, charger)
    paid = await _pay(market_api, driver, f"/bookings/{booking['id']}/payment")
    end = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=2)
    start = end - timedelta(hours=1)
    await _move_booking(pg, booking["id"], start, end)
    # The overstay leaves an amount due (the test above).
    pk, public_id = await _stopped_session(
        pg, charger, booking["id"], started=start, stopped=end + timedelta(minutes=30)
    )
    await _settle(market_api, pk)
    due = (
        await market_api.client.get(f"/sessions/{public_id}/receipt", headers=driver.headers)
    ).json()["due_paise"]
    assert due > 0
    # A later session of the driver's has stopped but is not billed yet.
    later = await pg.fetchval(
        "INSERT INTO sessions (device_id, device_session_id, connector_number, charger_id, "
        "user_id, credential_kind, credential_ref, state, started_at, stopped_at, "
        "meter_start_wh, meter_stop_wh, energy_wh, last_event_seq, events_received) VALUES "
        "($1, $2, 1, $3, $4, 'Remote', $5, 'stopped', $6, $7, 4000, 5000, 1000, 3, 3) "
        "RETURNING id",
        charger.device_id,
        new_ulid(),
        charger.id,
        driver.id,
        new_ulid(),
        end + timedelta(minutes=40),
        end + timedelta(minutes=50),
    )

    order = await market_api.client.post("/amount-due/payment", headers=driver.headers)
    assert order.status_code == 201, order.text
    answer = await market_api.client.post(
        f"/payments/{order.json()['id']}/verify",
        json={"card_number": CARD},
        headers=driver.headers,
    )
    assert answer.status_code == 200, answer.text
    settled = answer.json()
    assert (settled["amount_paise"], settled["status"]) == (due, "captured")  # taken at once
    assert settled["session_id"] == public_id  # the session that left the debt
    await _settle(market_api, later)
    # The later session's bill takes no prepayment: all of it is due, the debt paid stays paid.
    [row] = await pg.fetch(
        "SELECT session_id, captured_paise FROM payments WHERE id = $1", settled["id"]
    )
    assert (row["session_id"], row["captured_paise"]) == (pk, due)
    bill = await pg.fetchval("SELECT amount_paise FROM sessions WHERE id = $1", later)
    assert bill > 0
    again = await market_api.client.post(
        "/bookings", json=booking_body(charger, *_tomorrow(hours=3)), headers=driver.headers
    )
    assert again.status_code == 402, again.text
    assert again.json()["amount_paise"] == bill  # the later bill only: the debt is paid
    assert paid["session_id"] is None


async def test_a_session_billed_before_its_bookings_end_completes_it_and_frees_the_rest(
    market_api: Api, pg: PgConnection
) -> None:
    s = market_api.settings
    host = await add_user(pg, s, Role.HOST)
    driver, other = await add_user(pg, s, Role.DRIVER), await add_user(pg, s, Role.DRIVER)
    charger = await _charger(pg, host)
    booking = await _book(market_api, driver, charger, hours=2)
    await _pay(market_api, driver, f"/bookings/{booking['id']}/payment")
    start = datetime.fromisoformat(booking["start"])
    await pg.execute(
        "UPDATE bookings SET pin_ref = 'pin-0123456789abcdef0123456789abcdef' WHERE id = $1",
        booking["id"],
    )
    # The driver unplugged after 30 minutes of a two-hour booking; the stop is billed.
    pk, _ = await _stopped_session(
        pg, charger, booking["id"], started=start, stopped=start + timedelta(minutes=30)
    )
    later = booking_body(charger, start + timedelta(hours=1), start + timedelta(hours=2))
    taken = await market_api.client.post("/bookings", json=later, headers=other.headers)
    assert taken.status_code == 409, taken.text  # still held while the stop is unbilled
    await _settle(market_api, pk)

    mine = await market_api.client.get(f"/bookings/{booking['id']}", headers=driver.headers)
    assert mine.json()["status"] == "completed"
    listed = await market_api.client.get(
        "/bookings", params={"status": "confirmed"}, headers=driver.headers
    )
    assert booking["id"] not in [b["id"] for b in listed.json()["items"]]
    # Its PIN is revoked at the charger, recorded with the completion for the republish job.
    revoked = await pg.fetch(
        "SELECT payload, sent_at FROM device_commands WHERE device_id = $1 "
        "AND name = 'revoke_pins'",
        charger.device_id,
    )
    assert [json.loads(r["payload"])["pins"][0]["ref"] for r in revoked] == [
        "pin-0123456789abcdef0123456789abcdef"
    ]
    assert revoked[0]["sent_at"] is None
    # The rest of the window is free for someone else.
    freed = await market_api.client.post("/bookings", json=later, headers=other.headers)
    assert freed.status_code == 201, freed.text
    assert freed.json()["status"] in {"confirmed", "pending"}


async def test_time_is_billed_from_the_agents_monotonic_elapsed_when_its_clock_stepped(
    market_api: Api, pg: PgConnection
) -> None:
    s = market_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    charger = await _charger(pg, host)
    booking = await _book(market_api, driver, charger, hours=2)
    await _pay(market_api, driver, f"/bookings/{booking['id']}/payment")
    start = datetime.fromisoformat(booking["start"])
    # 30 minutes of charging, during which NTP stepped the agent's clock back an hour: its
    # stop reads before its start. The stop event carries the monotonic elapsed seconds.
    pk, public_id = await _stopped_session(
        pg, charger, booking["id"], started=start, stopped=start - timedelta(minutes=30)
    )
    await pg.execute(
        "INSERT INTO session_events (device_id, device_session_id, event_seq, event, msg_id, "
        "seq, payload) VALUES ($1, $2, 3, 'stopped', $3, 3, $4::jsonb)",
        charger.device_id,
        public_id,
        new_ulid(),
        json.dumps({"elapsed_s": 1800.0}),
    )
    await _settle(market_api, pk)
    tariff = Tariff(PricingMode.PER_HOUR, 1800, PER_HOUR_PAISE, 0, 0, IDLE_PER_MIN_PAISE, GRACE_MIN)
    bill = price(tariff, Usage(timedelta(minutes=30), 3000), _rates(market_api))
    receipt = (
        await market_api.client.get(f"/sessions/{public_id}/receipt", headers=driver.headers)
    ).json()
    assert receipt["total_paise"] == bill.total_paise
    assert await pg.fetchval("SELECT amount_paise FROM sessions WHERE id = $1", pk) == (
        bill.total_paise
    )
    # Flagged for the admin: the audit log names the session and both times.
    flagged = await pg.fetch(
        "SELECT actor_kind, data FROM audit_log WHERE action = 'session.clock_stepped' "
        "AND entity = 'session' AND entity_id = $1",
        public_id,
    )
    assert [r["actor_kind"] for r in flagged] == ["system"]
    assert json.loads(flagged[0]["data"])["elapsed_s"] == 1800.0


async def test_a_stopped_unbilled_session_keeps_its_booking_from_starting_another(
    market_api: Api, pg: PgConnection
) -> None:
    """Between a booking's stop and its pricing the prepayment is still unclaimed: a second
    unlock must not run on it (the settlement gives it all to the first session, the second
    would charge on credit). Refused (409) until the stop is billed, which ends the booking."""
    s = market_api.settings
    host, driver = await add_user(pg, s, Role.HOST), await add_user(pg, s, Role.DRIVER)
    charger = await _charger(pg, host)
    booking, _, start, _ = await _running_booking(market_api, pg, driver, charger)
    sessions = _state(market_api).sessions

    async def check() -> None:
        async with sessions() as db:
            row = await db.get(Booking, booking["id"])
            assert row is not None
            await require_booking_paid(db, row)

    await check()  # paid, nothing used: the unlock may go ahead
    pk, _ = await _stopped_session(
        pg, charger, booking["id"], started=start, stopped=datetime.now(UTC)
    )
    with pytest.raises(BookingNotActive, match="stopped session being billed"):
        await check()
    await _settle(market_api, pk)
    status = await pg.fetchval("SELECT status FROM bookings WHERE id = $1", booking["id"])
    assert status == "completed"
