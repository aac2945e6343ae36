"""Razorpay behind :class:`~cloud.payments.provider.PaymentProvider`, with the official SDK.

The ``razorpay`` SDK is synchronous (``requests``): every call runs in a worker thread so the
event loop never waits on Razorpay. Its calls carry no timeout of their own, so the session we
hand it adds one (a hung connection would otherwise hold a thread forever).

What Razorpay requires and this module does (DESIGN.md §8):
- orders carry a unique ``receipt`` (our payment id) and ask for manual capture, so a
  session's bill is taken after it stops;
- Checkout's ``razorpay_signature`` is HMAC-SHA256(key_secret, ``order_id|payment_id``), checked
  against the order id from *our* database;
- webhooks are HMAC-SHA256(webhook_secret, raw body), checked over the exact bytes received,
  decoded to ``str`` as the SDK wants; ``x-razorpay-event-id`` names the delivery;
- a capture must equal the authorized amount (no partial capture): :attr:`partial_capture`
  is False and settlement refunds the difference;
- refunds send ``X-Refund-Idempotency`` (our refund id), so a retried refund refunds once;
- host payouts go through RazorpayX (:mod:`cloud.payments.razorpayx`: contacts, fund
  accounts, payouts with ``X-Payout-Idempotency``), which the SDK does not cover, and its
  ``payout.processed`` / ``payout.reversed`` / ``payout.failed`` webhooks, signed like the
  others, carry our payout id as ``reference_id``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import razorpay  # type: ignore[import-untyped]  # the SDK ships no type information
import requests
from razorpay.errors import (  # type: ignore[import-untyped]
    BadRequestError,
    GatewayError,
    ServerError,
    SignatureVerificationError,
)

from cloud.errors import PaymentProviderError, SignatureInvalid
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
from cloud.payments.razorpayx import RazorpayX

log = logging.getLogger(__name__)

NAME = "razorpay"
SIGNATURE_HEADER = "x-razorpay-signature"
EVENT_ID_HEADER = "x-razorpay-event-id"
#: Razorpay keeps a manually captured authorization this long (seconds) before it lapses.
MANUAL_EXPIRY_S = 7200

_EVENT_KINDS = {
    "payment.authorized": EventKind.PAYMENT_AUTHORIZED,
    "payment.captured": EventKind.PAYMENT_CAPTURED,
    "payment.failed": EventKind.PAYMENT_FAILED,
    "order.paid": EventKind.ORDER_PAID,
    "refund.processed": EventKind.REFUND_PROCESSED,
    "refund.failed": EventKind.REFUND_FAILED,
    "payout.processed": EventKind.PAYOUT_PROCESSED,
    "payout.reversed": EventKind.PAYOUT_FAILED,
    "payout.failed": EventKind.PAYOUT_FAILED,
    "payout.rejected": EventKind.PAYOUT_FAILED,
}

T = TypeVar("T")


class _TimeoutSession(requests.Session):
    """A requests session whose calls time out (the SDK passes no ``timeout``)."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self._timeout_s = timeout_s

    def request(self, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout_s)
        return super().request(*args, **kwargs)


class RazorpayProvider:
    """Orders, Checkout verification, capture, refunds and webhooks through the SDK."""

    name = NAME
    partial_capture = False

    def __init__(
        self,
        *,
        key_id: str,
        key_secret: str,
        webhook_secret: str,
        base_url: str = "https://api.razorpay.com",
        timeout_s: float = 15.0,
        payout_account_number: str = "",
    ) -> None:
        self._session = _TimeoutSession(timeout_s)
        self._x = RazorpayX(
            key_id=key_id,
            key_secret=key_secret,
            account_number=payout_account_number,
            base_url=base_url,
            timeout_s=timeout_s,
        )
        self._client = razorpay.Client(
            session=self._session, auth=(key_id, key_secret), base_url=base_url.rstrip("/")
        )
        self._client.set_app_details({"title": "ChargeMitra", "version": "1"})
        self._key_id = key_id
        self._webhook_secret = webhook_secret

    async def aclose(self) -> None:
        self._session.close()
        await self._x.aclose()

    async def _call(self, operation: str, fn: Callable[[], T]) -> T:
        """Run one SDK call in a thread; its errors leave as PaymentProviderError."""
        try:
            return await asyncio.to_thread(fn)
        except BadRequestError as exc:
            log.warning("razorpay %s refused: %s", operation, exc)
            raise PaymentProviderError(NAME, operation, code="bad-request") from exc
        except (GatewayError, ServerError) as exc:
            log.error("razorpay %s failed: %s", operation, exc)
            raise PaymentProviderError(NAME, operation, code="server-error") from exc
        except (requests.RequestException, ValueError) as exc:
            # ValueError: an answer that is not JSON (a proxy's HTML error page).
            log.error("razorpay %s unreachable: %s", operation, exc)
            raise PaymentProviderError(NAME, operation, code="unreachable") from exc

    async def create_order(self, request: OrderRequest) -> Order:
        data = {
            "amount": request.amount_paise,
            "currency": request.currency,
            "receipt": request.receipt,
            "notes": dict(request.notes),
            "payment": {
                "capture": "manual",
                "capture_options": {
                    "manual_expiry_period": MANUAL_EXPIRY_S,
                    "refund_speed": "normal",
                },
            },
        }
        # A fresh dict every call: the SDK's methods default ``data={}`` and mutate it.
        order = await self._call("create order", lambda: self._client.order.create(data))
        order_id = str(order["id"])
        return Order(
            provider=NAME,
            order_ref=order_id,
            amount_paise=int(order["amount"]),
            currency=str(order["currency"]),
            # No ``upi_link`` of our own: a hand-built ``upi://pay?pa=<our VPA>&tr=<order>``
            # pays the VPA directly, and Razorpay never ties that money to the order (it
            # links a UPI intent to an order only through the intent URL its own API returns,
            # not to be altered). Razorpay Checkout, opened with these two, offers UPI (the
            # app intent on a phone, its QR code on a desktop) for this very order.
            checkout={"key_id": self._key_id, "order_id": order_id},
        )

    async def verify_checkout(self, order_ref: str, result: CheckoutResult) -> PaymentState:
        params = {
            "razorpay_order_id": order_ref,
            "razorpay_payment_id": result.payment_ref,
            "razorpay_signature": result.signature,
        }
        if not result.signature or not result.signature.isascii():
            # The SDK's hmac.compare_digest raises TypeError on non-ASCII text
            # (cloud/constant_time.py): such a signature is not Razorpay's.
            raise SignatureInvalid(NAME, "checkout")
        try:
            self._client.utility.verify_payment_signature(params)
        except SignatureVerificationError as exc:
            raise SignatureInvalid(NAME, "checkout") from exc
        payment = await self._call(
            "fetch payment", lambda: self._client.payment.fetch(result.payment_ref, {})
        )
        if payment.get("order_id") != order_ref:
            # A signature can only match its own order, so this is Razorpay contradicting
            # itself: refuse rather than attach a foreign payment to our order.
            raise SignatureInvalid(NAME, "checkout")
        return _payment_state(payment)

    async def capture(
        self, payment_ref: str, *, amount_paise: int, currency: str, idempotency_key: str
    ) -> PaymentState:
        data = {"currency": currency}
        try:
            payment = await self._call(
                "capture",
                lambda: self._client.payment.capture(payment_ref, amount_paise, dict(data)),
            )
        except PaymentProviderError as exc:
            if exc.code != "bad-request":
                raise
            # A retried capture after a lost answer: Razorpay refuses to capture twice.
            # What it holds now decides.
            payment = await self._call(
                "fetch payment", lambda: self._client.payment.fetch(payment_ref, {})
            )
            if payment.get("status") != "captured" or int(payment["amount"]) != amount_paise:
                raise
        return _payment_state(payment)

    async def refund(
        self, payment_ref: str, *, amount_paise: int, idempotency_key: str, reason: str
    ) -> RefundResult:
        data = {
            "amount": amount_paise,
            "speed": "normal",
            "receipt": idempotency_key,
            "notes": {"reason": reason[:250]},
        }
        headers = {"X-Refund-Idempotency": idempotency_key}
        refund = await self._call(
            "refund",
            lambda: self._client.payment.refund(payment_ref, dict(data), headers=dict(headers)),
        )
        return RefundResult(
            refund_ref=str(refund["id"]),
            amount_paise=int(refund["amount"]),
            status="processed" if refund.get("status") == "processed" else "pending",
        )

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        lowered = {k.lower(): v for k, v in headers.items()}
        signature = lowered.get(SIGNATURE_HEADER, "")
        if not signature.isascii():
            # As for Checkout: the SDK's compare_digest would raise TypeError.
            raise SignatureInvalid(NAME, "webhook")
        try:
            # The signature covers the raw bytes; the SDK wants them as str (DESIGN.md §8).
            text = body.decode("utf-8")
            self._client.utility.verify_webhook_signature(text, signature, self._webhook_secret)
        except (UnicodeDecodeError, SignatureVerificationError) as exc:
            raise SignatureInvalid(NAME, "webhook") from exc
        try:
            event = json.loads(text)
            event_type = str(event["event"])
            payload = event.get("payload") or {}
        except (ValueError, KeyError, TypeError) as exc:
            # Signed by Razorpay but unreadable: refuse like a bad signature (it changes
            # nothing, and Razorpay's retry will show up in its dashboard).
            raise SignatureInvalid(NAME, "webhook") from exc
        # Razorpay sends the event id in a header; a signed body without it is still
        # de-duplicated, on the body's hash (a retry re-sends the same body).
        event_id = lowered.get(EVENT_ID_HEADER) or "sha256:" + hashlib.sha256(body).hexdigest()
        return _read_event(event_id[:64], event_type, payload, event)

    async def payout_destination(self, destination: PayoutDestination) -> DestinationRefs:
        return await self._x.destination(destination)

    async def payout(self, request: PayoutRequest) -> PayoutResult:
        return await self._x.payout(request)


def _payment_state(payment: Mapping[str, Any]) -> PaymentState:
    status = str(payment.get("status", ""))
    amount = int(payment["amount"])
    return PaymentState(
        payment_ref=str(payment["id"]),
        status=status,
        amount_paise=amount,
        captured_paise=amount if status in {"captured", "refunded"} else 0,
    )


def _entity(payload: Mapping[str, Any], name: str) -> dict[str, Any]:
    wrapper = payload.get(name)
    entity = wrapper.get("entity") if isinstance(wrapper, dict) else None
    return entity if isinstance(entity, dict) else {}


def _read_event(
    event_id: str, event_type: str, payload: Mapping[str, Any], raw: dict[str, Any]
) -> WebhookEvent:
    kind = _EVENT_KINDS.get(event_type, EventKind.IGNORED)
    payment = _entity(payload, "payment")
    order = _entity(payload, "order")
    refund = _entity(payload, "refund")
    payout = _entity(payload, "payout")
    amount: Any = None
    if kind in {EventKind.REFUND_PROCESSED, EventKind.REFUND_FAILED}:
        amount = refund.get("amount")
    elif kind in {EventKind.PAYOUT_PROCESSED, EventKind.PAYOUT_FAILED}:
        amount = payout.get("amount")
    else:
        amount = payment.get("amount", order.get("amount_paid"))
    return WebhookEvent(
        provider=NAME,
        event_id=event_id,
        event_type=event_type,
        kind=kind,
        payload=raw,
        order_ref=_str_or_none(order.get("id") or payment.get("order_id")),
        payment_ref=_str_or_none(payment.get("id") or refund.get("payment_id")),
        refund_ref=_str_or_none(refund.get("id")),
        refund_receipt=_str_or_none(refund.get("receipt")),
        payout_ref=_str_or_none(payout.get("id")),
        payout_receipt=_str_or_none(payout.get("reference_id")),
        amount_paise=amount if type(amount) is int else None,
    )


def _str_or_none(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
