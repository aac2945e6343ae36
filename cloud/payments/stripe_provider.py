"""Stripe behind :class:`~cloud.payments.provider.PaymentProvider` (the brief's
international fallback), with the official ``stripe`` SDK's async client (httpx).

- A payment is a PaymentIntent with ``capture_method=manual``: Checkout authorizes, the bill is
  captured after the session — and Stripe *can* capture less than it authorized
  (``amount_to_capture``), so :attr:`partial_capture` is True and nothing is refunded for the
  unused part.
- Every write carries an ``Idempotency-Key`` (our payment or refund id), so a retry after a
  lost answer does the work once.
- Webhooks are verified with ``stripe.Webhook.construct_event`` over the raw body and the
  ``Stripe-Signature`` header (``t=…,v1=HMAC-SHA256(secret, "t.body")``, 5 minutes' tolerance);
  the event's ``id`` de-duplicates it.
- Host payouts are Connect transfers (``POST /v1/transfers``) from the platform's balance to
  the host's connected account (``acct_…``, the destination itself: nothing to register),
  keyed on our payout id (``Idempotency-Key: payout-<id>``) and grouped under it
  (``transfer_group``). A created transfer has moved the money: it is ``paid``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar

import stripe

from cloud.errors import PaymentProviderError, SignatureInvalid
from cloud.payments.models import PayoutAccountKind
from cloud.payments.provider import (
    CheckoutResult,
    DestinationRefs,
    EventKind,
    Order,
    OrderRequest,
    PaymentState,
    PayoutDestination,
    PayoutRequest,
    PayoutResult,
    RefundResult,
    WebhookEvent,
)

log = logging.getLogger(__name__)

NAME = "stripe"
SIGNATURE_HEADER = "stripe-signature"

#: PaymentIntent statuses in our words.
_INTENT_STATUS = {
    "requires_capture": "authorized",
    "succeeded": "captured",
    "canceled": "failed",
    "requires_payment_method": "failed",
}

T = TypeVar("T")


class _HTTPXClient(stripe.HTTPXClient):
    """The SDK's httpx client, handing its encoded body to httpx as ``content=``: it passes
    bytes as ``data=``, which httpx deprecates (a DeprecationWarning on every POST, and an
    error once httpx drops it)."""

    def _get_request_args_kwargs(  # type: ignore[no-untyped-def]  # the SDK's signature
        self, method: str, url: str, headers: Mapping[str, str], post_data
    ):
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        data = kwargs.pop("data", None)
        if data:
            kwargs["content"] = data
        return args, kwargs


class StripeProvider:
    """PaymentIntents (manual capture), refunds and webhooks through the SDK."""

    name = NAME
    partial_capture = True

    def __init__(
        self,
        *,
        secret_key: str,
        webhook_secret: str,
        base_url: str = "https://api.stripe.com",
        timeout_s: float = 15.0,
    ) -> None:
        self._http = _HTTPXClient(timeout=timeout_s)
        self._client = stripe.StripeClient(
            secret_key,
            base_addresses={"api": base_url.rstrip("/")},
            http_client=self._http,
            # Retries reuse our Idempotency-Key, so one retry of a lost answer is safe.
            max_network_retries=1,
        )
        self._webhook_secret = webhook_secret

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]  # untyped in the SDK

    async def _call(self, operation: str, call: Awaitable[T]) -> T:
        try:
            return await call
        except stripe.InvalidRequestError as exc:
            log.warning("stripe %s refused: %s", operation, exc.user_message or exc)
            raise PaymentProviderError(NAME, operation, code="bad-request") from exc
        except stripe.CardError as exc:
            raise PaymentProviderError(NAME, operation, code="card-declined") from exc
        except stripe.APIConnectionError as exc:
            log.error("stripe %s unreachable: %s", operation, exc)
            raise PaymentProviderError(NAME, operation, code="unreachable") from exc
        except stripe.StripeError as exc:
            log.error("stripe %s failed: %s", operation, exc)
            raise PaymentProviderError(NAME, operation, code="server-error") from exc

    async def create_order(self, request: OrderRequest) -> Order:
        intent = await self._call(
            "create payment intent",
            self._client.v1.payment_intents.create_async(
                params={
                    "amount": request.amount_paise,
                    "currency": request.currency.lower(),
                    "capture_method": "manual",
                    "metadata": {"receipt": request.receipt, **request.notes},
                },
                options={"idempotency_key": f"order-{request.receipt}"},
            ),
        )
        return Order(
            provider=NAME,
            order_ref=intent.id,
            amount_paise=intent.amount,
            currency=intent.currency.upper(),
            checkout={"client_secret": intent.client_secret or "", "payment_intent": intent.id},
        )

    async def verify_checkout(self, order_ref: str, result: CheckoutResult) -> PaymentState:
        # Stripe's Checkout hands back the PaymentIntent id, unsigned: what counts is the
        # intent's state at Stripe, read with our secret key, and that it is *our* order's.
        if result.payment_ref != order_ref:
            raise SignatureInvalid(NAME, "checkout")
        intent = await self._call(
            "retrieve payment intent", self._client.v1.payment_intents.retrieve_async(order_ref)
        )
        return _intent_state(intent)

    async def capture(
        self, payment_ref: str, *, amount_paise: int, currency: str, idempotency_key: str
    ) -> PaymentState:
        intent = await self._call(
            "capture",
            self._client.v1.payment_intents.capture_async(
                payment_ref,
                params={"amount_to_capture": amount_paise},
                options={"idempotency_key": f"capture-{idempotency_key}"},
            ),
        )
        return _intent_state(intent)

    async def refund(
        self, payment_ref: str, *, amount_paise: int, idempotency_key: str, reason: str
    ) -> RefundResult:
        refund = await self._call(
            "refund",
            self._client.v1.refunds.create_async(
                params={
                    "payment_intent": payment_ref,
                    "amount": amount_paise,
                    "metadata": {"reason": reason[:500], "refund_id": idempotency_key},
                },
                options={"idempotency_key": f"refund-{idempotency_key}"},
            ),
        )
        return RefundResult(
            refund_ref=refund.id,
            amount_paise=refund.amount,
            status="processed" if refund.status == "succeeded" else "pending",
        )

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        lowered = {k.lower(): v for k, v in headers.items()}
        try:
            text = body.decode("utf-8")
            stripe.Webhook.construct_event(
                text, lowered.get(SIGNATURE_HEADER), self._webhook_secret
            )
            event = json.loads(text)
            event_id = str(event["id"])
            event_type = str(event["type"])
            obj = event["data"]["object"]
        except (UnicodeDecodeError, stripe.SignatureVerificationError) as exc:
            raise SignatureInvalid(NAME, "webhook") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise SignatureInvalid(NAME, "webhook") from exc
        return _read_event(event_id, event_type, obj if isinstance(obj, dict) else {}, event)

    async def payout_destination(self, destination: PayoutDestination) -> DestinationRefs:
        if destination.kind is not PayoutAccountKind.STRIPE_ACCOUNT or not (
            destination.stripe_account_id
        ):
            raise PaymentProviderError(NAME, "transfer", code="invalid-destination")
        return DestinationRefs(contact_ref=None, destination_ref=destination.stripe_account_id)

    async def payout(self, request: PayoutRequest) -> PayoutResult:
        if not request.destination.startswith("acct_"):
            raise PaymentProviderError(NAME, "transfer", code="invalid-destination")
        try:
            transfer = await self._call(
                "transfer",
                self._client.v1.transfers.create_async(
                    params={
                        "amount": request.amount_paise,
                        "currency": request.currency.lower(),
                        "destination": request.destination,
                        "transfer_group": f"payout-{request.reference}",
                        "metadata": {"payout_id": request.reference},
                    },
                    options={"idempotency_key": f"payout-{request.reference}"},
                ),
            )
        except PaymentProviderError as exc:
            if exc.code == "bad-request":
                # Stripe refused the transfer (an account that cannot receive, a short
                # balance): nothing moved.
                raise PaymentProviderError(NAME, "transfer", code="rejected") from exc
            raise
        return PayoutResult(payout_ref=transfer.id, status="paid")


def _intent_state(intent: Any) -> PaymentState:
    status = _INTENT_STATUS.get(str(intent.status), str(intent.status))
    return PaymentState(
        payment_ref=str(intent.id),
        status=status,
        amount_paise=int(intent.amount),
        captured_paise=int(intent.amount_received or 0),
    )


def _read_event(
    event_id: str, event_type: str, obj: dict[str, Any], raw: dict[str, Any]
) -> WebhookEvent:
    kind = EventKind.IGNORED
    amount: object = None
    intent_id: object = None
    refund_id: object = None
    receipt: object = None
    transfer_ref: str | None = None
    payout_receipt: str | None = None
    if event_type.startswith("payment_intent."):
        intent_id = obj.get("id")
        kind = {
            "payment_intent.amount_capturable_updated": EventKind.PAYMENT_AUTHORIZED,
            "payment_intent.succeeded": EventKind.PAYMENT_CAPTURED,
            "payment_intent.payment_failed": EventKind.PAYMENT_FAILED,
        }.get(event_type, EventKind.IGNORED)
        amount = obj.get("amount_received") if kind is EventKind.PAYMENT_CAPTURED else None
        amount = amount if amount is not None else obj.get("amount")
    elif event_type in {"refund.created", "refund.updated", "refund.failed"}:
        intent_id, refund_id, amount = obj.get("payment_intent"), obj.get("id"), obj.get("amount")
        metadata = obj.get("metadata")
        receipt = metadata.get("refund_id") if isinstance(metadata, dict) else None
        status = obj.get("status")
        if status == "succeeded":
            kind = EventKind.REFUND_PROCESSED
        elif status in {"failed", "canceled"}:
            kind = EventKind.REFUND_FAILED
    elif event_type == "transfer.reversed":
        # A Connect transfer (one payout of ours) pulled back, in part or whole; the
        # amount is the reversed total so far, so a late or repeated event moves nothing.
        kind, amount = EventKind.PAYOUT_REVERSED, obj.get("amount_reversed")
        transfer_id = obj.get("id")
        metadata = obj.get("metadata")
        payout_id = metadata.get("payout_id") if isinstance(metadata, dict) else None
        transfer_ref = transfer_id if isinstance(transfer_id, str) and transfer_id else None
        payout_receipt = payout_id if isinstance(payout_id, str) and payout_id else None
    ref = intent_id if isinstance(intent_id, str) and intent_id else None
    return WebhookEvent(
        provider=NAME,
        event_id=event_id[:64],
        event_type=event_type,
        kind=kind,
        payload=raw,
        # A PaymentIntent is both the order and the payment.
        order_ref=ref,
        payment_ref=ref,
        refund_ref=refund_id if isinstance(refund_id, str) and refund_id else None,
        refund_receipt=receipt if isinstance(receipt, str) and receipt else None,
        payout_ref=transfer_ref,
        payout_receipt=payout_receipt,
        amount_paise=amount if type(amount) is int else None,
    )
