"""The dummy payment provider: development, the demo and tests, never production.

It keeps orders and payments in memory and behaves like Razorpay where it matters: manual
capture of the full authorization only (so settlement refunds the difference), Checkout and
webhook signatures (HMAC-SHA256, checked like real ones), webhooks that may come late or
twice. The brief's test cards decide a payment: ``4111 1111 1111 1111`` succeeds,
``4000 0000 0000 0002`` is declined (so is any other number).

Switches (``CHARGEMITRA_PAYMENTS_DUMMY_*``): ``fail`` declines every payment, ``latency_s``
delays every call, ``duplicate_webhooks`` delivers each webhook twice, ``webhook_delay_s``
delivers them late. Webhooks go to the sink given to :meth:`DummyProvider.deliver_to` (the
API wires its own webhook service there), from tasks this object's context owns.

Constructing it with ``env=production`` raises :class:`~cloud.errors.ConfigError`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from cloud.constant_time import same
from cloud.errors import ConfigError, PaymentProviderError, SignatureInvalid
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
    upi_checkout,
)
from cloud.settings import Environment

log = logging.getLogger(__name__)

NAME = "dummy"
SIGNATURE_HEADER = "x-dummy-signature"
CARD_SUCCEEDS = "4111111111111111"
CARD_DECLINED = "4000000000000002"

WebhookSink = Callable[[bytes, Mapping[str, str]], Awaitable[object]]


@dataclass(slots=True)
class _Payment:
    ref: str
    order_ref: str
    amount_paise: int
    status: str
    captured_paise: int = 0
    refunded_paise: int = 0
    refunds: dict[str, RefundResult] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class DummySwitches:
    fail: bool = False
    latency_s: float = 0.0
    duplicate_webhooks: bool = False
    webhook_delay_s: float = 0.0


class DummyProvider:
    """An in-memory provider with Razorpay's rules; an async context manager (it owns the
    tasks that deliver its webhooks)."""

    name = NAME
    partial_capture = False

    def __init__(
        self,
        *,
        env: Environment,
        webhook_secret: str,
        switches: DummySwitches | None = None,
        upi_vpa: str = "chargemitra@upi",
    ) -> None:
        if env is Environment.PRODUCTION:
            raise ConfigError(
                "the dummy payment provider never runs in production; set "
                "CHARGEMITRA_PAYMENTS_PROVIDER to razorpay or stripe",
                variable="CHARGEMITRA_PAYMENTS_PROVIDER",
                value=NAME,
            )
        self._secret = webhook_secret.encode()
        self.switches = switches or DummySwitches()
        self._upi_vpa = upi_vpa
        self._ids = itertools.count(1)
        self._run = secrets.token_hex(4)
        self._orders: dict[str, OrderRequest] = {}
        self._receipts: dict[str, str] = {}
        self._payments: dict[str, _Payment] = {}
        #: Payouts made, by our reference (the payout id).
        self._payouts: dict[str, PayoutResult] = {}
        self._sink: WebhookSink | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._pending: set[asyncio.Task[None]] = set()
        #: Every webhook body emitted, in order (for tests and the demo's log).
        self.sent: list[bytes] = []

    async def __aenter__(self) -> Self:
        self._tasks = asyncio.TaskGroup()
        await self._tasks.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tasks, self._tasks = self._tasks, None
        # Webhooks still waiting (a late-delivery switch) are dropped at shutdown, as a
        # provider's pending retries would be lost to a stopped receiver.
        for task in self._pending:
            task.cancel()
        if tasks is not None:
            await tasks.__aexit__(exc_type, exc, tb)

    def deliver_to(self, sink: WebhookSink | None) -> None:
        """Send webhooks to ``sink`` (body, headers) from now on; None: only record them."""
        self._sink = sink

    def _new_id(self, prefix: str) -> str:
        # A run prefix: ids stay unique across restarts, as the real providers' are (orders,
        # payments and payouts are stored with unique provider ids; webhooks are
        # de-duplicated on their event id).
        return f"{prefix}_dummy{self._run}{next(self._ids):012d}"

    async def _latency(self) -> None:
        if self.switches.latency_s:
            await asyncio.sleep(self.switches.latency_s)

    def sign(self, message: bytes) -> str:
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest()

    # --- the provider interface -----------------------------------------------------------

    async def create_order(self, request: OrderRequest) -> Order:
        await self._latency()
        if request.receipt in self._receipts:
            # Like Razorpay's receipts: one order per receipt, never two.
            raise PaymentProviderError(NAME, "create order", code="duplicate-receipt")
        order_ref = self._new_id("order")
        self._orders[order_ref] = request
        self._receipts[request.receipt] = order_ref
        return Order(
            provider=NAME,
            order_ref=order_ref,
            amount_paise=request.amount_paise,
            currency=request.currency,
            checkout={
                "order_id": order_ref,
                **upi_checkout(
                    vpa=self._upi_vpa,
                    payee_name="ChargeMitra (test)",
                    amount_paise=request.amount_paise,
                    reference=order_ref,
                ),
            },
        )

    async def pay(self, order_ref: str, card_number: str) -> CheckoutResult:
        """The dummy's Checkout: the driver enters a card; its answer is signed like
        Razorpay's, and a ``payment.authorized`` or ``payment.failed`` webhook follows."""
        await self._latency()
        request = self._orders.get(order_ref)
        if request is None:
            raise PaymentProviderError(NAME, "pay", code="unknown-order")
        card = "".join(card_number.split())
        ok = card == CARD_SUCCEEDS and not self.switches.fail
        payment = _Payment(
            ref=self._new_id("pay"),
            order_ref=order_ref,
            amount_paise=request.amount_paise,
            status="authorized" if ok else "failed",
        )
        self._payments[payment.ref] = payment
        kind = EventKind.PAYMENT_AUTHORIZED if ok else EventKind.PAYMENT_FAILED
        self._emit(kind, payment)
        signature = self.sign(f"{order_ref}|{payment.ref}".encode()) if ok else ""
        return CheckoutResult(payment_ref=payment.ref, signature=signature)

    async def verify_checkout(self, order_ref: str, result: CheckoutResult) -> PaymentState:
        await self._latency()
        expected = self.sign(f"{order_ref}|{result.payment_ref}".encode())
        payment = self._payments.get(result.payment_ref)
        if (
            not same(expected, result.signature)
            or payment is None
            or payment.order_ref != order_ref
        ):
            raise SignatureInvalid(NAME, "checkout")
        return self._state(payment)

    async def capture(
        self, payment_ref: str, *, amount_paise: int, currency: str, idempotency_key: str
    ) -> PaymentState:
        await self._latency()
        payment = self._payment(payment_ref, "capture")
        if amount_paise != payment.amount_paise:
            raise PaymentProviderError(NAME, "capture", code="amount-must-equal-authorized")
        if payment.status == "captured":
            return self._state(payment)  # a retried capture: already done
        if payment.status != "authorized":
            raise PaymentProviderError(NAME, "capture", code=f"payment-{payment.status}")
        payment.status = "captured"
        payment.captured_paise = amount_paise
        self._emit(EventKind.PAYMENT_CAPTURED, payment)
        return self._state(payment)

    async def refund(
        self, payment_ref: str, *, amount_paise: int, idempotency_key: str, reason: str
    ) -> RefundResult:
        await self._latency()
        payment = self._payment(payment_ref, "refund")
        if idempotency_key in payment.refunds:
            return payment.refunds[idempotency_key]
        if amount_paise <= 0 or payment.refunded_paise + amount_paise > payment.captured_paise:
            raise PaymentProviderError(NAME, "refund", code="exceeds-captured")
        payment.refunded_paise += amount_paise
        result = RefundResult(self._new_id("rfnd"), amount_paise, "pending")
        payment.refunds[idempotency_key] = result
        self._emit(EventKind.REFUND_PROCESSED, payment, refund=result, receipt=idempotency_key)
        return result

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        lowered = {k.lower(): v for k, v in headers.items()}
        if not same(self.sign(body), lowered.get(SIGNATURE_HEADER, "")):
            raise SignatureInvalid(NAME, "webhook")
        event = json.loads(body)
        return WebhookEvent(
            provider=NAME,
            event_id=event["id"],
            event_type=event["type"],
            kind=EventKind(event["type"]),
            payload=event,
            order_ref=event.get("order_ref"),
            payment_ref=event.get("payment_ref"),
            refund_ref=event.get("refund_ref"),
            refund_receipt=event.get("refund_receipt"),
            amount_paise=event.get("amount_paise"),
        )

    async def payout_destination(self, destination: PayoutDestination) -> DestinationRefs:
        """Any kind of destination: a bank account or VPA gets a contact and a fund account
        as at RazorpayX (the same contact reused), a Stripe account is its own reference."""
        await self._latency()
        if destination.kind is PayoutAccountKind.STRIPE_ACCOUNT:
            assert destination.stripe_account_id is not None  # the row's CHECK says so
            return DestinationRefs(contact_ref=None, destination_ref=destination.stripe_account_id)
        return DestinationRefs(
            contact_ref=destination.contact_ref or self._new_id("cont"),
            destination_ref=self._new_id("fa"),
        )

    async def payout(self, request: PayoutRequest) -> PayoutResult:
        """Pays at once; like RazorpayX's ``X-Payout-Idempotency``, a reference paid before is
        answered with the same payout, never paid twice."""
        await self._latency()
        if request.reference in self._payouts:
            return self._payouts[request.reference]
        if self.switches.fail:
            raise PaymentProviderError(NAME, "payout", code="failed")
        result = PayoutResult(payout_ref=self._new_id("pout"), status="processed")
        self._payouts[request.reference] = result
        return result

    # --- internals ------------------------------------------------------------------------

    def _payment(self, payment_ref: str, operation: str) -> _Payment:
        payment = self._payments.get(payment_ref)
        if payment is None:
            raise PaymentProviderError(NAME, operation, code="unknown-payment")
        return payment

    @staticmethod
    def _state(payment: _Payment) -> PaymentState:
        return PaymentState(
            payment.ref, payment.status, payment.amount_paise, payment.captured_paise
        )

    def _emit(
        self,
        kind: EventKind,
        payment: _Payment,
        *,
        refund: RefundResult | None = None,
        receipt: str | None = None,
    ) -> None:
        event: dict[str, Any] = {
            "id": self._new_id("evt"),
            "type": kind.value,
            "order_ref": payment.order_ref,
            "payment_ref": payment.ref,
            "amount_paise": refund.amount_paise if refund else payment.amount_paise,
        }
        if refund is not None:
            event["refund_ref"] = refund.refund_ref
            event["refund_receipt"] = receipt
        body = json.dumps(event, separators=(",", ":")).encode()
        headers = {SIGNATURE_HEADER: self.sign(body), "content-type": "application/json"}
        copies = 2 if self.switches.duplicate_webhooks else 1
        for _ in range(copies):
            self.sent.append(body)
            if self._sink is not None and self._tasks is not None:
                task = self._tasks.create_task(
                    self._deliver(self._sink, body, headers), name="dummy-webhook"
                )
                self._pending.add(task)
                task.add_done_callback(self._pending.discard)

    async def _deliver(self, sink: WebhookSink, body: bytes, headers: Mapping[str, str]) -> None:
        if self.switches.webhook_delay_s:
            await asyncio.sleep(self.switches.webhook_delay_s)
        try:
            await sink(body, headers)
        except Exception:  # a failed delivery is logged, as a provider would see it:
            # it must not take the provider's task group (and the API) down.
            log.exception("dummy webhook delivery failed")
