"""The providers behind PaymentProvider, against fake Razorpay and Stripe servers on loopback
that check each API's contract, and the dummy; the pure state rules; the settings' refusals."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator

import pytest
import razorpay  # type: ignore[import-untyped]
import segno
from hypothesis import given
from hypothesis import strategies as st
from razorpay.errors import BadRequestError  # type: ignore[import-untyped]

from cloud.errors import ConfigError, PaymentProviderError, SignatureInvalid
from cloud.payments import transitions
from cloud.payments.dummy import CARD_DECLINED, CARD_SUCCEEDS, DummyProvider
from cloud.payments.models import PaymentStatus, PayoutAccountKind
from cloud.payments.provider import (
    CheckoutResult,
    DestinationRefs,
    EventKind,
    OrderRequest,
    PayoutDestination,
    PayoutRequest,
    upi_checkout,
    upi_intent_link,
)
from cloud.payments.razorpay_provider import RazorpayProvider
from cloud.payments.stripe_provider import StripeProvider
from cloud.payouts import rules
from cloud.settings import Environment, load_settings
from tests.support import fake_razorpay, fake_stripe
from tests.support.fake_razorpay import FakeRazorpay
from tests.support.fake_stripe import FakeStripe


@pytest.fixture
def rzp() -> Iterator[FakeRazorpay]:
    with fake_razorpay.fake_razorpay() as fake:
        yield fake


@pytest.fixture
def stp() -> Iterator[FakeStripe]:
    with fake_stripe.fake_stripe() as fake:
        yield fake


def razorpay_provider(fake: FakeRazorpay) -> RazorpayProvider:
    return RazorpayProvider(
        key_id=fake_razorpay.KEY_ID,
        key_secret=fake_razorpay.KEY_SECRET,
        webhook_secret=fake_razorpay.WEBHOOK_SECRET,
        base_url=fake.url,
        timeout_s=5,
    )


# --- Razorpay ---------------------------------------------------------------------------------


async def test_razorpay_order_sends_what_the_api_requires(rzp: FakeRazorpay) -> None:
    provider = razorpay_provider(rzp)
    order = await provider.create_order(OrderRequest(receipt="PAY01", amount_paise=25_000))
    sent = rzp.seen[-1]
    user, _, secret = base64.b64decode(sent.headers["authorization"][6:]).decode().partition(":")
    assert (user, secret) == (fake_razorpay.KEY_ID, fake_razorpay.KEY_SECRET)
    body = json.loads(sent.body)
    assert body["amount"] == 25_000
    assert type(body["amount"]) is int
    assert body["currency"] == "INR"
    assert body["receipt"] == "PAY01"
    assert body["payment"]["capture"] == "manual"
    assert order.order_ref in rzp.orders
    assert order.amount_paise == 25_000
    # Checkout opens with these two and offers UPI for this order; no link of ours (a
    # hand-built upi://pay would pay our VPA outside the order).
    assert order.checkout == {"key_id": fake_razorpay.KEY_ID, "order_id": order.order_ref}
    # A receipt is never reused: the second order for it is refused, not duplicated.
    with pytest.raises(PaymentProviderError):
        await provider.create_order(OrderRequest(receipt="PAY01", amount_paise=25_000))
    assert len(rzp.orders) == 1


async def test_razorpay_checkout_is_checked_against_our_order_id(rzp: FakeRazorpay) -> None:
    provider = razorpay_provider(rzp)
    ours = await provider.create_order(OrderRequest(receipt="A", amount_paise=10_000))
    theirs = await provider.create_order(OrderRequest(receipt="B", amount_paise=100))
    pay_ours, sig_ours = rzp.authorize(ours.order_ref)
    pay_theirs, sig_theirs = rzp.authorize(theirs.order_ref)
    state = await provider.verify_checkout(ours.order_ref, CheckoutResult(pay_ours, sig_ours))
    assert (state.status, state.amount_paise) == ("authorized", 10_000)
    # A genuine signature for another (cheaper) order does not verify against ours.
    with pytest.raises(SignatureInvalid):
        await provider.verify_checkout(ours.order_ref, CheckoutResult(pay_theirs, sig_theirs))
    with pytest.raises(SignatureInvalid):
        await provider.verify_checkout(ours.order_ref, CheckoutResult(pay_ours, "0" * 64))


async def test_razorpay_captures_in_full_and_refunds_once_per_key(rzp: FakeRazorpay) -> None:
    provider = razorpay_provider(rzp)
    order = await provider.create_order(OrderRequest(receipt="C", amount_paise=50_000))
    payment_id, _ = rzp.authorize(order.order_ref)
    # The real API refuses a partial capture; so does the fake (through the SDK itself).
    client = razorpay.Client(
        auth=(fake_razorpay.KEY_ID, fake_razorpay.KEY_SECRET), base_url=rzp.url
    )
    with pytest.raises(BadRequestError, match="equal to the amount authorized"):
        client.payment.capture(payment_id, 30_000, {"currency": "INR"})
    plan = transitions.settlement(
        authorized_paise=50_000, billed_paise=30_000, partial_capture=provider.partial_capture
    )
    assert (plan.capture_paise, plan.refund_paise, plan.due_paise) == (50_000, 20_000, 0)
    state = await provider.capture(
        payment_id, amount_paise=plan.capture_paise, currency="INR", idempotency_key="P1"
    )
    assert (state.status, state.captured_paise) == ("captured", 50_000)
    # A retried capture (the first answer lost) is not an error.
    again = await provider.capture(
        payment_id, amount_paise=50_000, currency="INR", idempotency_key="P1"
    )
    assert again.status == "captured"
    first = await provider.refund(
        payment_id, amount_paise=plan.refund_paise, idempotency_key="R1", reason="unused"
    )
    second = await provider.refund(
        payment_id, amount_paise=plan.refund_paise, idempotency_key="R1", reason="unused"
    )
    assert first.refund_ref == second.refund_ref
    assert rzp.payments[payment_id]["amount_refunded"] == 20_000
    refunds = [s for s in rzp.seen if s.path.endswith("/refund")]
    assert {s.headers["x-refund-idempotency"] for s in refunds} == {"R1"}
    await provider.aclose()


def test_razorpay_webhook_is_verified_over_the_raw_body(rzp: FakeRazorpay) -> None:
    provider = razorpay_provider(rzp)
    rzp.orders["order_x"] = {"amount": 100, "currency": "INR", "status": "created"}
    payment_id, _ = rzp.authorize("order_x")
    body, headers = rzp.webhook("payment.captured", payment_id=payment_id, status="captured")
    event = provider.parse_webhook(body, headers)
    assert event.kind is EventKind.PAYMENT_CAPTURED
    assert (event.order_ref, event.payment_ref) == ("order_x", payment_id)
    assert event.event_id == headers["x-razorpay-event-id"]
    # The same JSON re-serialised (spaces) is not what was signed.
    reformatted = json.dumps(json.loads(body), indent=1).encode()
    with pytest.raises(SignatureInvalid):
        provider.parse_webhook(reformatted, headers)
    with pytest.raises(SignatureInvalid):
        provider.parse_webhook(body, {**headers, "x-razorpay-signature": "f" * 64})
    with pytest.raises(SignatureInvalid):
        provider.parse_webhook(body, {"x-razorpay-event-id": "evt_1"})


# --- Stripe -----------------------------------------------------------------------------------


async def test_stripe_captures_part_of_an_intent_with_idempotency_keys(stp: FakeStripe) -> None:
    provider = StripeProvider(
        secret_key=fake_stripe.SECRET_KEY,
        webhook_secret=fake_stripe.WEBHOOK_SECRET,
        base_url=stp.url,
        timeout_s=5,
    )
    try:
        order = await provider.create_order(OrderRequest(receipt="PAY9", amount_paise=40_000))
        intent = stp.intents[order.order_ref]
        assert (intent["amount"], intent["currency"]) == (40_000, "inr")
        assert intent["metadata"]["receipt"] == "PAY9"
        assert order.checkout["client_secret"] == intent["client_secret"]
        stp.authorize(order.order_ref)
        state = await provider.verify_checkout(order.order_ref, CheckoutResult(order.order_ref))
        assert state.status == "authorized"
        with pytest.raises(SignatureInvalid):
            await provider.verify_checkout(order.order_ref, CheckoutResult("pi_someone_else"))
        plan = transitions.settlement(
            authorized_paise=40_000, billed_paise=12_345, partial_capture=True
        )
        assert (plan.capture_paise, plan.refund_paise) == (12_345, 0)
        captured = await provider.capture(
            order.order_ref, amount_paise=12_345, currency="INR", idempotency_key="P9"
        )
        assert (captured.status, captured.captured_paise) == ("captured", 12_345)
        one = await provider.refund(
            order.order_ref, amount_paise=345, idempotency_key="R9", reason="goodwill"
        )
        two = await provider.refund(
            order.order_ref, amount_paise=345, idempotency_key="R9", reason="goodwill"
        )
        assert one.refund_ref == two.refund_ref
        assert len(stp.refunds) == 1
        assert all("idempotency-key" in s.headers for s in stp.seen if s.method == "POST")
        body, headers = stp.webhook("payment_intent.succeeded", stp.intents[order.order_ref])
        event = provider.parse_webhook(body, headers)
        assert (event.kind, event.amount_paise) == (EventKind.PAYMENT_CAPTURED, 12_345)
        with pytest.raises(SignatureInvalid):
            provider.parse_webhook(body + b" ", headers)
    finally:
        await provider.aclose()


async def test_stripe_transfers_pay_a_connected_account_once(stp: FakeStripe) -> None:
    """A payout is a Connect transfer keyed on our payout id: asked twice, one transfer; an
    account Stripe refuses is a definite refusal (``rejected``); a bank account is not a
    destination Stripe can pay."""
    provider = StripeProvider(
        secret_key=fake_stripe.SECRET_KEY,
        webhook_secret=fake_stripe.WEBHOOK_SECRET,
        base_url=stp.url,
        timeout_s=5,
    )
    stp.accounts.add("acct_1HostA")
    try:
        refs = await provider.payout_destination(
            PayoutDestination(
                "H1", PayoutAccountKind.STRIPE_ACCOUNT, "Asha Rao", stripe_account_id="acct_1HostA"
            )
        )
        assert refs == DestinationRefs(contact_ref=None, destination_ref="acct_1HostA")
        with pytest.raises(PaymentProviderError) as kind:
            await provider.payout_destination(
                PayoutDestination("H1", PayoutAccountKind.VPA, "Asha Rao", vpa="a@okhdfc")
            )
        assert kind.value.code == "invalid-destination"
        request = PayoutRequest("POUT1", 123_456, "acct_1HostA")
        first, again = await provider.payout(request), await provider.payout(request)
        assert first == again
        assert first.status == "paid"
        (transfer,) = stp.transfers.values()
        assert (transfer["amount"], transfer["currency"], transfer["destination"]) == (
            123_456,
            "inr",
            "acct_1HostA",
        )
        assert (transfer["transfer_group"], transfer["metadata"]) == (
            "payout-POUT1",
            {"payout_id": "POUT1"},
        )
        with pytest.raises(PaymentProviderError) as refused:
            await provider.payout(PayoutRequest("POUT2", 100, "acct_1Unknown"))
        assert refused.value.code == "rejected"
        assert refused.value.code in rules.DEFINITE_FAILURES
    finally:
        await provider.aclose()


# --- RazorpayX --------------------------------------------------------------------------------


async def test_razorpayx_registers_once_and_refuses_a_changed_body_under_one_key(
    rzp: FakeRazorpay,
) -> None:
    """The contact is reused for a host's second fund account; a payout asked again with
    the same key answers the same payout, with another amount under the same key it is
    refused (a definite refusal); an amount above IMPS's limit goes by NEFT; without the
    platform's RazorpayX account nothing is sent."""
    provider = RazorpayProvider(
        key_id=fake_razorpay.KEY_ID,
        key_secret=fake_razorpay.KEY_SECRET,
        webhook_secret=fake_razorpay.WEBHOOK_SECRET,
        base_url=rzp.url,
        timeout_s=5,
        payout_account_number=fake_razorpay.PLATFORM_ACCOUNT,
    )
    try:
        bank = PayoutDestination(
            "H1",
            PayoutAccountKind.BANK_ACCOUNT,
            "Asha Rao",
            ifsc="SBIN0000001",
            account_number="123456789012",
        )
        refs = await provider.payout_destination(bank)
        assert refs.contact_ref in rzp.contacts
        vpa = PayoutDestination(
            "H1", PayoutAccountKind.VPA, "Asha Rao", vpa="asha@okaxis", contact_ref=refs.contact_ref
        )
        upi = await provider.payout_destination(vpa)
        assert (upi.contact_ref, len(rzp.contacts), len(rzp.fund_accounts)) == (
            refs.contact_ref,
            1,
            2,
        )
        request = PayoutRequest(
            "POUT1", 60_000_000, refs.destination_ref, kind=PayoutAccountKind.BANK_ACCOUNT
        )
        first, again = await provider.payout(request), await provider.payout(request)
        assert first == again
        assert rzp.payouts[first.payout_ref]["mode"] == "NEFT"  # above ₹5 lakh
        changed = PayoutRequest(
            "POUT1", 50_000, refs.destination_ref, kind=PayoutAccountKind.BANK_ACCOUNT
        )
        with pytest.raises(PaymentProviderError) as refused:
            await provider.payout(changed)
        assert refused.value.code == "rejected"
        assert len(rzp.payouts) == 1
        with pytest.raises(PaymentProviderError) as bad:
            await provider.payout_destination(
                PayoutDestination(
                    "H2",
                    PayoutAccountKind.BANK_ACCOUNT,
                    "Ravi K",
                    ifsc="SBIN0000001",
                    account_number="12",
                )
            )
        assert bad.value.code == "invalid-destination"
        body, headers = rzp.payout_webhook("payout.processed", first.payout_ref)
        event = provider.parse_webhook(body, headers)
        assert (event.kind, event.payout_ref, event.payout_receipt, event.amount_paise) == (
            EventKind.PAYOUT_PROCESSED,
            first.payout_ref,
            "POUT1",
            60_000_000,
        )
    finally:
        await provider.aclose()
    unconfigured = razorpay_provider(rzp)
    try:
        with pytest.raises(PaymentProviderError) as off:
            await unconfigured.payout(request)
        assert off.value.code == "not-supported"
    finally:
        await unconfigured.aclose()


# --- the dummy --------------------------------------------------------------------------------


async def test_dummy_follows_the_briefs_test_cards() -> None:
    async with DummyProvider(env=Environment.DEVELOPMENT, webhook_secret="s") as dummy:
        order = await dummy.create_order(OrderRequest(receipt="D1", amount_paise=5_000))
        good = await dummy.pay(order.order_ref, "4111 1111 1111 1111")
        state = await dummy.verify_checkout(order.order_ref, good)
        assert state.status == "authorized"
        order2 = await dummy.create_order(OrderRequest(receipt="D2", amount_paise=5_000))
        bad = await dummy.pay(order2.order_ref, CARD_DECLINED)
        with pytest.raises(SignatureInvalid):
            await dummy.verify_checkout(order2.order_ref, bad)
        events = [dummy.parse_webhook(b, {"x-dummy-signature": dummy.sign(b)}) for b in dummy.sent]
        assert [e.kind for e in events] == [
            EventKind.PAYMENT_AUTHORIZED,
            EventKind.PAYMENT_FAILED,
        ]
        with pytest.raises(PaymentProviderError):  # like Razorpay: capture all or nothing
            await dummy.capture(
                good.payment_ref, amount_paise=10, currency="INR", idempotency_key="x"
            )
    assert CARD_SUCCEEDS == "4111111111111111"


def test_dummy_refuses_production() -> None:
    with pytest.raises(ConfigError) as caught:
        DummyProvider(env=Environment.PRODUCTION, webhook_secret="s")
    assert caught.value.variable == "CHARGEMITRA_PAYMENTS_PROVIDER"


# --- settings ---------------------------------------------------------------------------------

_REAL = {
    "CHARGEMITRA_APP_ENV": "production",
    "CHARGEMITRA_APP_SECRET_KEY": "k" * 40,
    "CHARGEMITRA_MQTT_PASSWORD": "p" * 40,
    # Production refuses the sample platform GSTIN (tests/cloud/test_settings.py).
    "CHARGEMITRA_BILLING_SUPPLIER_GSTIN": "27AAECC1234F1Z4",
}


@pytest.mark.parametrize(
    ("provider", "variable", "value"),
    [
        ("razorpay", "CHARGEMITRA_PAYMENTS_RAZORPAY_KEY_ID", "rzp_test_xxxxxxxxxxxxxx"),
        ("razorpay", "CHARGEMITRA_PAYMENTS_RAZORPAY_KEY_SECRET", "changeme"),
        ("razorpay", "CHARGEMITRA_PAYMENTS_RAZORPAY_WEBHOOK_SECRET", "your_webhook_secret"),
        ("stripe", "CHARGEMITRA_PAYMENTS_STRIPE_SECRET_KEY", "sk_test_changeme"),
        ("stripe", "CHARGEMITRA_PAYMENTS_STRIPE_WEBHOOK_SECRET", "whsec_..."),
    ],
)
def test_placeholder_provider_keys_refused_outside_development(
    provider: str, variable: str, value: str
) -> None:
    env = {
        **_REAL,
        "CHARGEMITRA_PAYMENTS_PROVIDER": provider,
        "CHARGEMITRA_PAYMENTS_RAZORPAY_KEY_ID": "rzp_live_Q8v2kXhT4mZp1a",
        "CHARGEMITRA_PAYMENTS_RAZORPAY_KEY_SECRET": "Zt4rQm9vX2kP8sLw1nB6cD3f",
        "CHARGEMITRA_PAYMENTS_RAZORPAY_WEBHOOK_SECRET": "h7Gk2pQz9vLm4xRt",
        "CHARGEMITRA_PAYMENTS_STRIPE_SECRET_KEY": "sk_live_51Hq2kR8vTz3mXp9LwQ",
        "CHARGEMITRA_PAYMENTS_STRIPE_WEBHOOK_SECRET": "whsec_9fK2mQ7vRt4xZp1L",
    }
    assert load_settings(env).payments.provider.value == provider  # real keys pass
    with pytest.raises(ConfigError) as caught:
        load_settings({**env, variable: value})
    assert caught.value.variable == variable
    # In development the same sample keys are fine.
    load_settings({**env, variable: value, "CHARGEMITRA_APP_ENV": "development"})


# --- pure rules -------------------------------------------------------------------------------


def test_payment_states_only_move_forward() -> None:
    failed = transitions.advance(PaymentStatus.CREATED, PaymentStatus.FAILED)
    assert failed is PaymentStatus.FAILED
    # UPI: failed, then the bank's late success: captured wins.
    assert transitions.advance(failed, PaymentStatus.CAPTURED) is PaymentStatus.CAPTURED
    # Once captured, a late failure or authorization changes nothing.
    assert transitions.advance(PaymentStatus.CAPTURED, PaymentStatus.FAILED) is None
    assert transitions.advance(PaymentStatus.CAPTURED, PaymentStatus.AUTHORIZED) is None
    assert transitions.advance(PaymentStatus.CAPTURED, PaymentStatus.CAPTURED) is None


@pytest.mark.parametrize("partial", [True, False])
@pytest.mark.parametrize(("authorized", "billed"), [(10_000, 0), (10_000, 7_001), (10_000, 12_000)])
def test_settlement_takes_the_bill_and_no_more(partial: bool, authorized: int, billed: int) -> None:
    plan = transitions.settlement(
        authorized_paise=authorized, billed_paise=billed, partial_capture=partial
    )
    assert plan.capture_paise - plan.refund_paise == min(billed, authorized)
    assert plan.due_paise == max(0, billed - authorized)
    assert 0 <= plan.refund_paise <= plan.capture_paise <= authorized
    if not partial:
        assert plan.capture_paise == authorized


def test_upi_link_carries_rupees_from_integer_paise() -> None:
    link = upi_intent_link(vpa="cm@okaxis", payee_name="CM", amount_paise=12_305, reference="o1")
    assert link == "upi://pay?pa=cm%40okaxis&pn=CM&tr=o1&am=123.05&cu=INR"
    for paise, rupees in ((5, "0.05"), (100, "1.00"), (1_00_000_00, "100000.00")):
        assert f"&am={rupees}&" in upi_intent_link(
            vpa="cm@okaxis", payee_name="CM", amount_paise=paise, reference="o1"
        )
    # A space is %20, not "+" (which some UPI apps print as it is); the note is ``tn``.
    named = upi_intent_link(
        vpa="cm@okaxis",
        payee_name="Charge Mitra",
        amount_paise=100,
        reference="o1",
        note="EV charging",
    )
    assert "pn=Charge%20Mitra" in named
    assert named.endswith("&tn=EV%20charging")
    # Never a float, a bool, nothing, or a reference longer than NPCI's 35 characters.
    for bad in (123.05, True, 0, -100):
        with pytest.raises(ValueError, match="amount_paise"):
            upi_intent_link(vpa="cm@okaxis", payee_name="CM", amount_paise=bad, reference="o1")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reference"):
        upi_intent_link(vpa="cm@okaxis", payee_name="CM", amount_paise=100, reference="r" * 36)


def test_upi_checkout_carries_the_link_and_its_qr() -> None:
    checkout = upi_checkout(vpa="cm@okaxis", payee_name="CM", amount_paise=25_000, reference="o9")
    link = checkout["upi_link"]
    assert link == "upi://pay?pa=cm%40okaxis&pn=CM&tr=o9&am=250.00&cu=INR"
    prefix = "data:image/svg+xml;base64,"
    assert checkout["upi_qr"].startswith(prefix)
    svg = base64.b64decode(checkout["upi_qr"].removeprefix(prefix))
    assert svg.startswith(b"<?xml")
    assert b"<svg" in svg
    # The symbol is the link's (error correction M), not another amount's.
    expected = io.BytesIO()
    segno.make_qr(link, error="m", boost_error=False).save(expected, kind="svg", border=4)
    assert svg == expected.getvalue()
    other = upi_checkout(vpa="cm@okaxis", payee_name="CM", amount_paise=25_001, reference="o9")
    assert other["upi_qr"] != checkout["upi_qr"]


async def test_dummy_switches_fail_every_payment_and_slow_every_call() -> None:
    from cloud.payments.dummy import DummySwitches

    switches = DummySwitches(fail=True, latency_s=0.01)
    async with DummyProvider(env=Environment.TEST, webhook_secret="s", switches=switches) as dummy:
        order = await dummy.create_order(OrderRequest(receipt="F1", amount_paise=5_000))
        # Even the good card fails while the switch is on.
        result = await dummy.pay(order.order_ref, CARD_SUCCEEDS)
        with pytest.raises(SignatureInvalid):
            await dummy.verify_checkout(order.order_ref, result)
        assert json.loads(dummy.sent[-1])["type"] == EventKind.PAYMENT_FAILED.value


async def test_the_api_does_not_start_with_the_dummy_in_production() -> None:
    from cloud.payments.factory import open_provider

    settings = load_settings(_REAL)  # provider left at its default, the dummy
    with pytest.raises(ConfigError):
        async with open_provider(settings):
            pass


@given(
    st.lists(
        st.sampled_from(
            [
                EventKind.PAYMENT_FAILED,
                EventKind.PAYMENT_AUTHORIZED,
                EventKind.PAYMENT_CAPTURED,
                EventKind.ORDER_PAID,
            ]
        ),
        max_size=12,
    )
)
def test_any_order_of_reports_ends_at_the_furthest_one(kinds: list[EventKind]) -> None:
    """Webhooks duplicated and reordered: the state is the furthest one reported, whatever
    the order, and a capture is never undone."""
    status = PaymentStatus.CREATED
    captured = False
    for kind in kinds:
        target = transitions.payment_target(kind)
        assert target is not None
        status = transitions.advance(status, target) or status
        captured = captured or status is PaymentStatus.CAPTURED
        assert not captured or status is PaymentStatus.CAPTURED
    targets = {transitions.payment_target(k) for k in kinds}
    furthest = max(
        (t for t in targets if t is not None),
        key=transitions.PAYMENT_ORDER.index,
        default=PaymentStatus.CREATED,
    )
    assert status is furthest
