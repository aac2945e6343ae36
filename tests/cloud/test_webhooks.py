"""Webhook routes against the real database: a signed event is stored once and applied
forward only, in one transaction; a bad signature is a 400 problem and changes nothing.

The events are made by the fake providers (tests/support/fake_razorpay.py, fake_stripe.py) with
each provider's exact signature scheme, and posted to the API's real routes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from cloud.accounts.models import Role
from cloud.app import create_app
from cloud.pg import PgConnection
from cloud.state import AppState
from tests.support import fake_razorpay, fake_stripe
from tests.support.bookings_fixtures import add_charger, booking_body, next_slot
from tests.support.fake_razorpay import FakeRazorpay
from tests.support.fake_stripe import FakeStripe
from tests.support.market import add_user
from tests.support.mosquitto import Broker

pytestmark = pytest.mark.integration


@dataclass(frozen=True, slots=True)
class PayApi:
    client: httpx.AsyncClient
    state: AppState


@pytest.fixture
def rzp() -> object:
    with fake_razorpay.fake_razorpay() as fake:
        yield fake


@pytest.fixture
def stp() -> object:
    with fake_stripe.fake_stripe() as fake:
        yield fake


async def _api(
    db_url: str, broker: Broker, password: str, env: dict[str, str]
) -> AsyncIterator[PayApi]:
    from tests.support.cloud_env import make_settings

    settings = make_settings(db_url, broker, password, username="cloud-api", **env)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield PayApi(client, app.state.cloud)


@pytest.fixture
async def razorpay_api(
    db_url: str, broker: Broker, service_passwords: dict[str, str], rzp: FakeRazorpay
) -> AsyncIterator[PayApi]:
    env = {
        "CHARGEMITRA_PAYMENTS_PROVIDER": "razorpay",
        "CHARGEMITRA_PAYMENTS_RAZORPAY_KEY_ID": fake_razorpay.KEY_ID,
        "CHARGEMITRA_PAYMENTS_RAZORPAY_KEY_SECRET": fake_razorpay.KEY_SECRET,
        "CHARGEMITRA_PAYMENTS_RAZORPAY_WEBHOOK_SECRET": fake_razorpay.WEBHOOK_SECRET,
        "CHARGEMITRA_PAYMENTS_RAZORPAY_BASE_URL": rzp.url,
    }
    async for api in _api(db_url, broker, service_passwords["cloud-api"], env):
        yield api


@pytest.fixture
async def stripe_api(
    db_url: str, broker: Broker, service_passwords: dict[str, str], stp: FakeStripe
) -> AsyncIterator[PayApi]:
    env = {
        "CHARGEMITRA_PAYMENTS_PROVIDER": "stripe",
        "CHARGEMITRA_PAYMENTS_STRIPE_SECRET_KEY": fake_stripe.SECRET_KEY,
        "CHARGEMITRA_PAYMENTS_STRIPE_WEBHOOK_SECRET": fake_stripe.WEBHOOK_SECRET,
        "CHARGEMITRA_PAYMENTS_STRIPE_BASE_URL": stp.url,
    }
    async for api in _api(db_url, broker, service_passwords["cloud-api"], env):
        yield api


async def _new_payment(api: PayApi, pg: PgConnection, amount_paise: int) -> tuple[str, str]:
    """A payment row and its provider order, as the pay route makes them: (id, order id)."""
    from cloud.payments.service import open_order

    user = await add_user(pg, api.state.settings)
    assert api.state.payments is not None
    payment, order = await open_order(
        api.state.sessions, api.state.payments, user_id=user.id, amount_paise=amount_paise
    )
    return payment.id, order.order_ref


async def _payment(pg: PgConnection, payment_id: str) -> tuple[str, int, str | None]:
    rows = await pg.fetch(
        "SELECT status, captured_paise, provider_payment_id FROM payments WHERE id = $1",
        payment_id,
    )
    (row,) = rows
    return row["status"], row["captured_paise"], row["provider_payment_id"]


async def _events(pg: PgConnection) -> int:
    count = await pg.fetchval("SELECT count(*) FROM provider_events")
    assert isinstance(count, int)
    return count


async def test_bad_signature_is_a_400_problem_and_changes_nothing(
    razorpay_api: PayApi, rzp: FakeRazorpay, pg: PgConnection
) -> None:
    payment_id, order_id = await _new_payment(razorpay_api, pg, 10_000)
    pay_id, _ = rzp.authorize(order_id)
    body, headers = rzp.webhook("payment.captured", payment_id=pay_id, status="captured")
    forged = [
        {**headers, "x-razorpay-signature": "0" * 64},  # wrong signature
        {k: v for k, v in headers.items() if k != "x-razorpay-signature"},  # none
    ]
    for bad_headers in forged:
        answer = await razorpay_api.client.post(
            "/webhooks/razorpay", content=body, headers=bad_headers
        )
        assert answer.status_code == 400, answer.text
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["type"].endswith("/signature-invalid")
    # The right signature over a body changed after signing (amount doubled) fails too.
    tampered = body.replace(b'"amount": 10000', b'"amount": 20000')
    assert tampered != body
    answer = await razorpay_api.client.post("/webhooks/razorpay", content=tampered, headers=headers)
    assert answer.status_code == 400
    assert await _payment(pg, payment_id) == ("created", 0, None)
    assert await _events(pg) == 0
    # Only the configured provider's route takes events.
    other = await razorpay_api.client.post("/webhooks/stripe", content=body, headers=headers)
    assert other.status_code == 404


async def test_the_same_event_twice_changes_once(
    razorpay_api: PayApi, rzp: FakeRazorpay, pg: PgConnection
) -> None:
    payment_id, order_id = await _new_payment(razorpay_api, pg, 10_000)
    pay_id, _ = rzp.authorize(order_id)
    body, headers = rzp.webhook("payment.captured", payment_id=pay_id, status="captured")
    # Eight deliveries of one event at once (Razorpay retries overlap a slow answer).
    answers = await asyncio.gather(
        *(
            razorpay_api.client.post("/webhooks/razorpay", content=body, headers=headers)
            for _ in range(8)
        )
    )
    assert [a.status_code for a in answers] == [200] * 8
    outcomes = sorted(a.json()["outcome"] for a in answers)
    assert outcomes == ["applied"] + ["duplicate"] * 7
    assert await _payment(pg, payment_id) == ("captured", 10_000, pay_id)
    assert await _events(pg) == 1


async def test_failed_then_captured_is_captured(
    razorpay_api: PayApi, rzp: FakeRazorpay, pg: PgConnection
) -> None:
    """One UPI payment: the bank timed out (failed), then its late success (captured)."""
    payment_id, order_id = await _new_payment(razorpay_api, pg, 25_000)
    pay_id, _ = rzp.authorize(order_id)

    async def deliver(event: str, status: str) -> str:
        body, headers = rzp.webhook(event, payment_id=pay_id, status=status)
        answer = await razorpay_api.client.post("/webhooks/razorpay", content=body, headers=headers)
        assert answer.status_code == 200, answer.text
        outcome = answer.json()["outcome"]
        assert isinstance(outcome, str)
        return outcome

    assert await deliver("payment.failed", "failed") == "applied"
    assert (await _payment(pg, payment_id))[0] == "failed"
    assert await deliver("payment.captured", "captured") == "applied"
    assert await _payment(pg, payment_id) == ("captured", 25_000, pay_id)
    # Late and out of order: an authorization and another failure report change nothing.
    assert await deliver("payment.authorized", "authorized") == "stale"
    assert await deliver("payment.failed", "failed") == "stale"
    assert await _payment(pg, payment_id) == ("captured", 25_000, pay_id)
    assert await _events(pg) == 4


async def test_order_paid_is_the_fulfilment_event(
    razorpay_api: PayApi, rzp: FakeRazorpay, pg: PgConnection
) -> None:
    payment_id, order_id = await _new_payment(razorpay_api, pg, 15_000)
    pay_id, _ = rzp.authorize(order_id)
    body, headers = rzp.webhook("order.paid", payment_id=pay_id, status="captured")
    answer = await razorpay_api.client.post("/webhooks/razorpay", content=body, headers=headers)
    assert answer.json()["outcome"] == "applied"
    assert await _payment(pg, payment_id) == ("captured", 15_000, pay_id)


async def test_razorpay_settlement_captures_in_full_and_refunds_the_rest(
    razorpay_api: PayApi, rzp: FakeRazorpay, pg: PgConnection
) -> None:
    from cloud.payments.provider import CheckoutResult
    from cloud.payments.service import confirm_checkout, settle

    state = razorpay_api.state
    assert state.payments is not None
    payment_id, order_id = await _new_payment(razorpay_api, pg, 50_000)
    user_id = await pg.fetchval("SELECT user_id FROM payments WHERE id = $1", payment_id)
    pay_id, signature = rzp.authorize(order_id)
    await confirm_checkout(
        state.sessions,
        state.payments,
        payment_id=payment_id,
        user_id=user_id,
        result=CheckoutResult(pay_id, signature),
    )
    assert await _payment(pg, payment_id) == ("authorized", 0, pay_id)
    settled = await settle(
        state.sessions, state.payments, payment_id=payment_id, billed_paise=32_100
    )
    assert settled.captured_paise == 50_000
    assert settled.refund is not None
    assert settled.refund.amount_paise == 17_900
    assert rzp.payments[pay_id]["amount_refunded"] == 17_900
    # Settling again (a retry after a crash) neither captures nor refunds twice.
    await settle(state.sessions, state.payments, payment_id=payment_id, billed_paise=32_100)
    assert rzp.payments[pay_id]["amount_refunded"] == 17_900
    refunds = await pg.fetch("SELECT id, amount_paise, status FROM refunds")
    assert [(r["amount_paise"], r["status"]) for r in refunds] == [(17_900, "pending")]
    # refund.processed arrives: the refund is final and the payment partially refunded.
    refund_ref = settled.refund.provider_refund_id
    assert refund_ref is not None
    rzp.refunds[refund_ref]["status"] = "processed"
    body, headers = rzp.webhook("refund.processed", payment_id=pay_id, refund_id=refund_ref)
    answer = await razorpay_api.client.post("/webhooks/razorpay", content=body, headers=headers)
    assert answer.json()["outcome"] == "applied"
    assert await pg.fetchval("SELECT status FROM refunds") == "processed"
    assert (await _payment(pg, payment_id))[0] == "partially_refunded"
    # A settler that read the payment before all this (racing the one above) settles it
    # once more: nothing is repeated, and its settlement is not refused as "not authorized".
    again = await settle(state.sessions, state.payments, payment_id=payment_id, billed_paise=32_100)
    assert again.refund is not None
    assert again.refund.id == settled.refund.id
    assert rzp.payments[pay_id]["amount_refunded"] == 17_900
    assert await pg.fetchval("SELECT count(*) FROM refunds") == 1
    # The ledger booked the capture and the refund once each, balanced.
    sources = await pg.fetch(
        "SELECT source, sum(amount_paise) AS total FROM ledger_entries "
        "WHERE account = 'provider_clearing' GROUP BY source ORDER BY source"
    )
    assert [(r["source"], r["total"]) for r in sources] == [
        ("capture", 50_000),
        ("refund", -17_900),
    ]
    assert await pg.fetchval("SELECT sum(amount_paise) FROM ledger_entries") == 0


async def test_stripe_webhooks_are_verified_and_applied(
    stripe_api: PayApi, stp: FakeStripe, pg: PgConnection
) -> None:
    payment_id, intent_id = await _new_payment(stripe_api, pg, 40_000)
    stp.authorize(intent_id)
    body, headers = stp.webhook("payment_intent.amount_capturable_updated", stp.intents[intent_id])
    bad = {**headers, "stripe-signature": headers["stripe-signature"][:-4] + "0000"}
    answer = await stripe_api.client.post("/webhooks/stripe", content=body, headers=bad)
    assert answer.status_code == 400
    assert (await _payment(pg, payment_id))[0] == "created"
    for expected in ("applied", "duplicate"):
        answer = await stripe_api.client.post("/webhooks/stripe", content=body, headers=headers)
        assert answer.json()["outcome"] == expected
    assert await _payment(pg, payment_id) == ("authorized", 0, intent_id)


async def test_dummy_webhooks_late_and_twice_through_the_real_route(
    db_url: str, broker: Broker, service_passwords: dict[str, str], pg: PgConnection
) -> None:
    """The dummy with its duplicate and late switches on: its webhooks go through the same
    verification and store, and each event still changes the payment once."""
    from cloud.payments.dummy import CARD_SUCCEEDS, DummyProvider
    from cloud.payments.service import settle

    env = {
        "CHARGEMITRA_PAYMENTS_DUMMY_DUPLICATE_WEBHOOKS": "true",
        "CHARGEMITRA_PAYMENTS_DUMMY_WEBHOOK_DELAY_S": "0.2",
    }
    async for api in _api(db_url, broker, service_passwords["cloud-api"], env):
        dummy = api.state.payments
        assert isinstance(dummy, DummyProvider)
        payment_id, order_id = await _new_payment(api, pg, 10_000)
        await dummy.pay(order_id, CARD_SUCCEEDS)
        await _until(pg, "SELECT count(*) = 1 FROM provider_events")
        assert (await _payment(pg, payment_id))[0] == "authorized"
        await settle(api.state.sessions, dummy, payment_id=payment_id, billed_paise=6_000)
        # capture + refund: two more events, each delivered twice, each stored once.
        await _until(pg, "SELECT count(*) = 3 FROM provider_events")
        await _until(pg, "SELECT bool_and(status = 'processed') FROM refunds")
        assert len(dummy.sent) == 6
        assert (await _payment(pg, payment_id))[:2] == ("partially_refunded", 10_000)
        types = await pg.fetch("SELECT event_type FROM provider_events ORDER BY event_type")
        assert [r["event_type"] for r in types] == [
            "payment_authorized",
            "payment_captured",
            "refund_processed",
        ]
        body = json.loads(dummy.sent[0])
        assert body["payment_ref"].startswith("pay_dummy")


async def _until(pg: PgConnection, query: str) -> None:
    """Wait (bounded) until ``query`` is true: webhooks arrive on their own schedule."""
    for _ in range(200):
        if await pg.fetchval(query):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never true: {query}")


async def test_one_batch_applies_its_events_in_order_and_a_bad_one_fails_alone(
    razorpay_api: PayApi, rzp: FakeRazorpay, pg: PgConnection
) -> None:
    """The group commit (cloud/payments/webhooks.py): events gathered into one transaction
    give what they give one at a time, in arrival order — and an event that cannot be
    stored fails only its own delivery, its neighbours are applied one by one."""
    from cloud.payments.provider import EventKind, WebhookEvent
    from cloud.payments.webhooks import WebhookBatcher, WebhookOutcome

    assert razorpay_api.state.payments is not None
    provider = razorpay_api.state.payments
    one_id, one_order = await _new_payment(razorpay_api, pg, 25_000)
    two_id, two_order = await _new_payment(razorpay_api, pg, 12_000)
    one_pay, _ = rzp.authorize(one_order)
    two_pay, _ = rzp.authorize(two_order)

    def event(name: str, pay_id: str, status: str) -> WebhookEvent:
        return provider.parse_webhook(*rzp.webhook(name, payment_id=pay_id, status=status))

    failed = event("payment.failed", one_pay, "failed")
    captured = event("payment.captured", one_pay, "captured")
    other = event("payment.captured", two_pay, "captured")
    stranger = WebhookEvent(
        provider="razorpay",
        event_id="evt_stranger",
        event_type="payment.captured",
        kind=EventKind.PAYMENT_CAPTURED,
        payload={},
        payment_ref="pay_nobody",
    )
    batcher = WebhookBatcher(razorpay_api.state.sessions, in_flight=1)
    # All queued before the first batch runs: one transaction for the lot.
    outcomes = await asyncio.gather(
        *(batcher.apply(e) for e in (failed, captured, captured, other, stranger))
    )
    assert outcomes == [
        WebhookOutcome.APPLIED,  # failed first ...
        WebhookOutcome.APPLIED,  # ... then the bank's late success wins
        WebhookOutcome.DUPLICATE,
        WebhookOutcome.APPLIED,
        WebhookOutcome.UNMATCHED,
    ]
    assert await _payment(pg, one_id) == ("captured", 25_000, one_pay)
    assert await _payment(pg, two_id) == ("captured", 12_000, two_pay)
    captures = await pg.fetchval(
        "SELECT count(DISTINCT txn_id) FROM ledger_entries WHERE source = 'capture'"
    )
    assert captures == 2  # one per payment, whatever the events
    assert await _events(pg) == 4

    # An event id too long for provider_events fails the batch's statement: that delivery
    # alone gets the error, the other event of its batch is applied by itself.
    three_id, three_order = await _new_payment(razorpay_api, pg, 9_000)
    three_pay, _ = rzp.authorize(three_order)
    good = event("payment.captured", three_pay, "captured")
    bad = WebhookEvent(
        provider="razorpay",
        event_id="e" * 65,
        event_type="payment.captured",
        kind=EventKind.PAYMENT_CAPTURED,
        payload={},
        payment_ref=three_pay,
    )
    answers = await asyncio.gather(batcher.apply(bad), batcher.apply(good), return_exceptions=True)
    assert isinstance(answers[0], Exception)
    assert answers[1] == WebhookOutcome.APPLIED
    assert await _payment(pg, three_id) == ("captured", 9_000, three_pay)


async def test_a_razorpay_checkout_answer_carries_no_upi_link_of_ours(
    razorpay_api: PayApi, rzp: FakeRazorpay, pg: PgConnection
) -> None:
    """A hand-built ``upi://pay?pa=<our VPA>&tr=<order>`` pays the VPA outside the Razorpay
    order (nothing would ever authorize it); Checkout, opened with the key and the order id,
    offers UPI for the order itself."""
    settings = razorpay_api.state.settings
    host = await add_user(pg, settings, Role.HOST)
    driver = await add_user(pg, settings, Role.DRIVER)
    charger = await add_charger(pg, host)
    start = next_slot(datetime.now(UTC))
    booked = await razorpay_api.client.post(
        "/bookings",
        json=booking_body(charger, start, start + timedelta(hours=1)),
        headers=driver.headers,
    )
    assert booked.status_code == 201, booked.text
    order = await razorpay_api.client.post(
        f"/bookings/{booked.json()['id']}/payment", headers=driver.headers
    )
    assert order.status_code == 201, order.text
    answer = order.json()
    assert answer["order_id"] in rzp.orders
    assert answer["checkout"] == {"key_id": fake_razorpay.KEY_ID, "order_id": answer["order_id"]}


async def test_a_signature_with_non_ascii_characters_is_refused_not_a_500(
    razorpay_api: PayApi, rzp: FakeRazorpay, pg: PgConnection
) -> None:
    """``hmac.compare_digest`` (ours and the Razorpay SDK's) raises TypeError on non-ASCII
    text; a header or Checkout signature like that is simply not the provider's
    (cloud/constant_time.py). Found by schemathesis as a 500 on the verify route."""
    from cloud.errors import SignatureInvalid
    from cloud.payments.dummy import SIGNATURE_HEADER, DummyProvider
    from cloud.payments.provider import CheckoutResult
    from cloud.settings import Environment

    payment_id, order_id = await _new_payment(razorpay_api, pg, 10_000)
    pay_id, _ = rzp.authorize(order_id)
    body, headers = rzp.webhook("payment.captured", payment_id=pay_id, status="captured")
    # A header value is latin-1 on the wire: "é" arrives as a non-ASCII str.
    forged = {k.encode(): v.encode() for k, v in headers.items()}
    forged[b"x-razorpay-signature"] = "é".encode("latin-1") * 64
    answer = await razorpay_api.client.post("/webhooks/razorpay", content=body, headers=forged)
    assert answer.status_code == 400, answer.text
    assert answer.json()["type"].endswith("/signature-invalid")
    assert await _payment(pg, payment_id) == ("created", 0, None)
    provider = razorpay_api.state.payments
    assert provider is not None
    with pytest.raises(SignatureInvalid):
        await provider.verify_checkout(order_id, CheckoutResult(pay_id, "^\u00f9"))
    dummy = DummyProvider(env=Environment.TEST, webhook_secret="k" * 32)
    with pytest.raises(SignatureInvalid):
        await dummy.verify_checkout("order_x", CheckoutResult("pay_x", "^\u00f9"))
    with pytest.raises(SignatureInvalid):
        dummy.parse_webhook(b"{}", {SIGNATURE_HEADER: "é"})
