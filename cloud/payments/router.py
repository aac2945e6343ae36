"""Payment routes: the driver's prepayments, their verification, payments and receipts
(:mod:`cloud.payments.checkout`, :mod:`cloud.payments.receipts`); and the webhook routes,
one per provider: ``POST /webhooks/razorpay``, ``/webhooks/stripe`` and ``/webhooks/dummy``.

They take no bearer token: a provider's servers call them, and the caller is authenticated by
the signature over the raw body instead (:meth:`PaymentProvider.parse_webhook`). A body whose
signature does not verify is a 400 ``signature-invalid`` problem and changes nothing. Only the
configured provider's route accepts events (the others answer 404: we hold no secret to check
them with). A verified event is stored and applied in one transaction — with the other
deliveries arriving meanwhile (:class:`cloud.payments.webhooks.WebhookBatcher`) — and
answered 200, also when it is a duplicate or stale, so the provider stops retrying it — except
a Stripe ``transfer.reversed`` for a payout still ``processing``: a 409, not stored, so Stripe
delivers it again once the payout is paid (cloud/payouts/service.py ``_reverse``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from cloud.accounts.models import Role
from cloud.accounts.tokens import Principal
from cloud.deps import CurrentUser, Db, State, require_roles
from cloud.errors import NotFound, PayloadTooLarge
from cloud.openapi import links, problems
from cloud.payments import checkout, receipts
from cloud.payments.provider import PaymentProvider
from cloud.payments.schemas import (
    CheckoutAnswer,
    OrderOut,
    PaymentOut,
    PaymentPage,
    ReceiptOut,
    WalkUpPayment,
)
from cloud.payments.service import record_webhook
from cloud.payments.webhooks import WebhookOutcome
from cloud.problems import MEDIA_TYPE
from cloud.schemas import PathId
from cloud.state import AppState

router = APIRouter(tags=["payments"])
#: The provider webhook routes, on a router of their own that the app includes first: FastAPI
#: matches a request against the routes in order at a few microseconds each, and a provider's
#: burst of deliveries should not pay for walking the ~200 routes of the pages and the API
#: before reaching its own (bench.payments webhook_p99_ms; docs/decisions.md).
webhook_router = APIRouter(tags=["payments"])

#: Razorpay's and Stripe's events are a few KiB; anything this big is not one of theirs.
WEBHOOK_MAX_BYTES = 256 * 1024


class WebhookAck(BaseModel):
    event_id: str
    outcome: WebhookOutcome


async def receive_webhook(
    state: AppState, name: str, body: bytes, headers: Mapping[str, str]
) -> WebhookAck:
    """Verify, store and apply one delivery for provider ``name`` (also the dummy's sink)."""
    provider: PaymentProvider | None = state.payments
    if provider is None or provider.name != name:
        raise NotFound("webhook", name)
    event = provider.parse_webhook(body, headers)
    if state.webhooks is not None:
        # Group commit with the deliveries arriving meanwhile (cloud/payments/webhooks.py).
        outcome = await state.webhooks.apply(event)
    else:
        async with state.sessions() as db, db.begin():
            outcome = await record_webhook(db, event)
    return WebhookAck(event_id=event.event_id, outcome=outcome)


async def _read_body(request: Request) -> bytes:
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > WEBHOOK_MAX_BYTES:
            raise PayloadTooLarge(
                "webhook body too large", field="body", max_bytes=WEBHOOK_MAX_BYTES
            )
    return bytes(body)


#: The problem answers these routes give (RFC 9457 documents, cloud/problems.py).
_ANSWERS: dict[int | str, dict[str, object]] = {
    status: {"description": why, "content": {MEDIA_TYPE: {}}}
    for status, why in (
        (400, "signature-invalid: the signature does not verify over the raw body"),
        (404, "not-found: this provider is not the one configured"),
        (413, "content-too-large: the body exceeds 256 KiB"),
        (409, "conflict: a payout reversal for a payout still processing (not stored: retry)"),
    )
}


@webhook_router.post("/webhooks/razorpay", responses=_ANSWERS)
async def razorpay_webhook(request: Request, state: State) -> WebhookAck:
    """A Razorpay event, verified with ``X-Razorpay-Signature`` (HMAC-SHA256 of the raw body
    with the webhook secret) and de-duplicated on ``X-Razorpay-Event-Id``."""
    return await receive_webhook(state, "razorpay", await _read_body(request), request.headers)


@webhook_router.post("/webhooks/stripe", responses=_ANSWERS)
async def stripe_webhook(request: Request, state: State) -> WebhookAck:
    """A Stripe event, verified with ``Stripe-Signature`` and de-duplicated on its ``id``."""
    return await receive_webhook(state, "stripe", await _read_body(request), request.headers)


@webhook_router.post("/webhooks/dummy", responses=_ANSWERS)
async def dummy_webhook(request: Request, state: State) -> WebhookAck:
    """The dummy provider's events (development and tests), signed like Razorpay's."""
    return await receive_webhook(state, "dummy", await _read_body(request), request.headers)


# --- the driver's payments (cloud/payments/checkout.py) and receipts ----------------------

DriverUser = Annotated[Principal, Depends(require_roles(Role.DRIVER))]


@router.post(
    "/bookings/{booking_id}/payment",
    status_code=201,
    responses=problems(409, 502),
    openapi_extra=links(
        201,
        verify_payment={"payment_id": "$response.body#/id"},
        get_payment={"payment_id": "$response.body#/id"},
    ),
)
async def pay_booking(booking_id: PathId, state: State, driver: DriverUser) -> OrderOut:
    """Open the prepayment of the caller's booking: its ``amount_paise`` (the most any
    session in its window is billed, GST included). The answer carries what the provider's
    Checkout needs; ``POST /payments/{id}/verify`` records Checkout's answer. 409 when the
    booking is not pending or confirmed, costs nothing, or is already paid."""
    return await checkout.pay_booking(state, driver, booking_id)


@router.post(
    "/payments",
    status_code=201,
    responses=problems(402, 404, 502),
    openapi_extra=links(
        201,
        verify_payment={"payment_id": "$response.body#/id"},
        get_payment={"payment_id": "$response.body#/id"},
    ),
)
async def pay_walkup(body: WalkUpPayment, state: State, driver: DriverUser) -> OrderOut:
    """Open a walk-up prepayment: the quote (``POST /quotes``'s rule) of ``duration_min`` at
    the connector's full power, or of ``energy_wh`` (per-kWh chargers only, else 422). An
    unlock without a booking needs it. 402 while an amount is due; 404 for a charger that is
    not listed."""
    return await checkout.pay_walkup(state, driver, body, now=datetime.now(UTC))


@router.post(
    "/amount-due/payment",
    status_code=201,
    responses=problems(409, 502),
    openapi_extra=links(
        201,
        verify_payment={"payment_id": "$response.body#/id"},
        get_payment={"payment_id": "$response.body#/id"},
    ),
)
async def pay_due(state: State, driver: DriverUser) -> OrderOut:
    """Open a payment of the amount the caller owes (a bill beyond its prepayment); it is
    captured when verified, and the caller may book again. 409 when nothing is due."""
    return await checkout.pay_due(state, driver)


@router.post("/payments/{payment_id}/verify", responses=problems(400, 402, 502))
async def verify_payment(
    payment_id: PathId, body: CheckoutAnswer, state: State, driver: DriverUser
) -> PaymentOut:
    """Record Checkout's answer for the caller's payment: ``provider_payment_id`` and
    ``signature`` (verified against the order id we stored; 400 ``signature-invalid``), or
    with the dummy provider a test ``card_number`` (422 with any other provider). A declined
    card is a 402 ``payment-required`` (the payment becomes ``failed`` with the provider's
    webhook); open another payment to try again."""
    return await checkout.verify(state, driver, payment_id, body)


@router.get("/payments/{payment_id}", responses=problems(404))
async def get_payment(payment_id: PathId, db: Db, principal: CurrentUser) -> PaymentOut:
    """The caller's own payment (anyone else's is a 404)."""
    return await checkout.get_payment(db, principal, payment_id)


@router.get("/payments")
async def list_payments(
    db: Db,
    principal: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> PaymentPage:
    """The caller's own payments, newest first."""
    items = await checkout.list_payments(db, principal, limit=limit, offset=offset)
    return PaymentPage(items=items, limit=limit, offset=offset)


@router.get("/sessions/{session_id}/receipt", responses=problems(404, 409))
async def get_receipt(
    session_id: PathId, db: Db, state: State, principal: CurrentUser
) -> ReceiptOut:
    """A stopped session's receipt (its driver, the charger's host, an admin): the bill line
    by line by the one pricing rule, the prepayment, what was captured and refunded, and
    what is still due. 409 while the session has not stopped."""
    return await receipts.receipt(db, principal, session_id, state.settings.billing)
