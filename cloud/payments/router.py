"""Webhook routes, one per provider: ``POST /webhooks/razorpay``, ``/webhooks/stripe`` and
``/webhooks/dummy``.

They take no bearer token: a provider's servers call them, and the caller is authenticated by
the signature over the raw body instead (:meth:`PaymentProvider.parse_webhook`). A body whose
signature does not verify is a 400 ``signature-invalid`` problem and changes nothing. Only the
configured provider's route accepts events (the others answer 404: we hold no secret to check
them with). A verified event is stored and applied in one transaction
(:func:`cloud.payments.service.record_webhook`) and answered 200 — also when it is a
duplicate or stale, so the provider stops retrying it.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import APIRouter, Request
from pydantic import BaseModel

from cloud.deps import State
from cloud.errors import NotFound, PayloadTooLarge
from cloud.payments.provider import PaymentProvider
from cloud.payments.service import WebhookOutcome, record_webhook
from cloud.problems import MEDIA_TYPE
from cloud.state import AppState

router = APIRouter(tags=["payments"])

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
    )
}


@router.post("/webhooks/razorpay", responses=_ANSWERS)
async def razorpay_webhook(request: Request, state: State) -> WebhookAck:
    """A Razorpay event, verified with ``X-Razorpay-Signature`` (HMAC-SHA256 of the raw body
    with the webhook secret) and de-duplicated on ``X-Razorpay-Event-Id``."""
    return await receive_webhook(state, "razorpay", await _read_body(request), request.headers)


@router.post("/webhooks/stripe", responses=_ANSWERS)
async def stripe_webhook(request: Request, state: State) -> WebhookAck:
    """A Stripe event, verified with ``Stripe-Signature`` and de-duplicated on its ``id``."""
    return await receive_webhook(state, "stripe", await _read_body(request), request.headers)


@router.post("/webhooks/dummy", responses=_ANSWERS)
async def dummy_webhook(request: Request, state: State) -> WebhookAck:
    """The dummy provider's events (development and tests), signed like Razorpay's."""
    return await receive_webhook(state, "dummy", await _read_body(request), request.headers)
