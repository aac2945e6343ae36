"""Payments in the database, driven through a :class:`~cloud.payments.provider.PaymentProvider`.

- :func:`open_order` — a ``payments`` row first (its id is the provider's ``receipt``), then
  the provider's order, so a webhook can never name an order we do not know.
- :func:`confirm_checkout` — Checkout's answer verified against the order id *we* stored.
- :func:`settle` — take a bill from an authorization: capture, and refund what is unused
  (Razorpay captures only in full: :func:`cloud.payments.transitions.settlement`).
- :func:`record_webhook` — one verified webhook: stored once in ``provider_events`` and its
  state change applied in the same database transaction, forward only.

Provider calls happen outside database transactions (no row lock is held across the
network); each carries an idempotency key derived from our ids, and what comes back is applied
with the same forward-only transitions as a webhook, so a capture reported twice — by the API
answer and by ``payment.captured`` — changes the row once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloud.errors import Conflict, NotFound
from cloud.ledger.entries import capture_txn, refund_txn
from cloud.ledger.service import post
from cloud.payments import transitions
from cloud.payments.models import (
    Payment,
    PaymentStatus,
    ProviderEvent,
    Refund,
    RefundStatus,
)
from cloud.payments.provider import (
    CheckoutResult,
    EventKind,
    Order,
    OrderRequest,
    PaymentProvider,
    WebhookEvent,
)

log = logging.getLogger(__name__)

#: The provider's payment states we act on, in ours.
_REPORTED = {
    "authorized": PaymentStatus.AUTHORIZED,
    "captured": PaymentStatus.CAPTURED,
    "failed": PaymentStatus.FAILED,
}


class WebhookOutcome(StrEnum):
    APPLIED = "applied"  # stored, and it moved a payment or refund forward
    STALE = "stale"  # stored; late or repeated news, nothing moved
    DUPLICATE = "duplicate"  # this event id was seen before: nothing at all
    UNMATCHED = "unmatched"  # stored; names no payment or refund of ours
    IGNORED = "ignored"  # stored; a kind of event we do not act on


async def open_order(
    sessions: async_sessionmaker[AsyncSession],
    provider: PaymentProvider,
    *,
    user_id: str,
    amount_paise: int,
    currency: str = "INR",
    booking_id: str | None = None,
    session_id: int | None = None,
) -> tuple[Payment, Order]:
    """A new payment of ``amount_paise`` and the provider's order for it."""
    async with sessions() as db, db.begin():
        payment = Payment(
            user_id=user_id,
            booking_id=booking_id,
            session_id=session_id,
            provider=provider.name,
            amount_paise=amount_paise,
            currency=currency,
        )
        db.add(payment)
    order = await provider.create_order(
        OrderRequest(receipt=payment.id, amount_paise=amount_paise, currency=currency)
    )
    async with sessions() as db, db.begin():
        row = await _lock(db, payment.id)
        row.provider_order_id = order.order_ref
    return row, order


async def confirm_checkout(
    sessions: async_sessionmaker[AsyncSession],
    provider: PaymentProvider,
    *,
    payment_id: str,
    user_id: str,
    result: CheckoutResult,
) -> Payment:
    """Verify Checkout's answer for the caller's payment ``payment_id`` and record it.

    The order id the signature is checked against is the one in our row: a browser that
    sends another order's id and signature cannot attach that payment to this order."""
    async with sessions() as db:
        payment = await db.scalar(
            select(Payment).where(Payment.id == payment_id, Payment.user_id == user_id)
        )
    if payment is None or payment.provider_order_id is None:
        raise NotFound("payment", payment_id)
    state = await provider.verify_checkout(payment.provider_order_id, result)
    async with sessions() as db, db.begin():
        row = await _lock(db, payment_id)
        target = _REPORTED.get(state.status)
        if target is not None:
            await _move(
                db, row, target, payment_ref=state.payment_ref, amount_paise=state.captured_paise
            )
    return row


@dataclass(frozen=True, slots=True)
class Settled:
    payment: Payment
    captured_paise: int
    refund: Refund | None
    due_paise: int


async def settle(
    sessions: async_sessionmaker[AsyncSession],
    provider: PaymentProvider,
    *,
    payment_id: str,
    billed_paise: int,
) -> Settled:
    """Take ``billed_paise`` from the authorized payment ``payment_id``: capture (in full
    where the provider cannot capture part), refund the unused part. Safe to call again
    after a failure: every step is keyed on our ids."""
    async with sessions() as db:
        payment = await db.get(Payment, payment_id)
    if payment is None:
        raise NotFound("payment", payment_id)
    if payment.provider_payment_id is None or payment.status not in {
        PaymentStatus.AUTHORIZED,
        PaymentStatus.CAPTURED,
    }:
        raise Conflict(
            f"payment {payment_id} is {payment.status.value}, not authorized",
            entity="payment",
            key=payment_id,
        )
    plan = transitions.settlement(
        authorized_paise=payment.amount_paise,
        billed_paise=billed_paise,
        partial_capture=provider.partial_capture,
    )
    if payment.status is PaymentStatus.AUTHORIZED:
        state = await provider.capture(
            payment.provider_payment_id,
            amount_paise=plan.capture_paise,
            currency=payment.currency,
            idempotency_key=payment.id,
        )
        async with sessions() as db, db.begin():
            payment = await _lock(db, payment_id)
            await _move(db, payment, PaymentStatus.CAPTURED, amount_paise=state.captured_paise)
    refund: Refund | None = None
    if plan.refund_paise:
        refund = await refund_payment(
            sessions,
            provider,
            payment_id=payment_id,
            amount_paise=plan.refund_paise,
            reason="unused prepayment",
        )
    return Settled(payment, plan.capture_paise, refund, plan.due_paise)


async def refund_payment(
    sessions: async_sessionmaker[AsyncSession],
    provider: PaymentProvider,
    *,
    payment_id: str,
    amount_paise: int,
    reason: str,
) -> Refund:
    """Refund ``amount_paise`` of a captured payment, once per (payment, ``reason``): a
    second call finds the first refund and, if that one never reached the provider (a crash,
    a lost answer), sends it again with its own id as the idempotency key — so a retried
    settlement refunds once."""
    async with sessions() as db, db.begin():
        payment = await _lock(db, payment_id)
        refund = await db.scalar(
            select(Refund).where(
                Refund.payment_id == payment_id,
                Refund.reason == reason,
                Refund.status != RefundStatus.FAILED,
            )
        )
        if refund is not None and refund.provider_refund_id is not None:
            return refund
        if refund is None:
            refunded = await db.scalar(
                select(func.coalesce(func.sum(Refund.amount_paise), 0)).where(
                    Refund.payment_id == payment_id, Refund.status != RefundStatus.FAILED
                )
            )
            if int(refunded or 0) + amount_paise > payment.captured_paise:
                raise Conflict(
                    f"refund of {amount_paise} paise exceeds what payment {payment_id} has "
                    "left to refund",
                    entity="payment",
                    key=payment_id,
                )
            refund = Refund(payment_id=payment_id, amount_paise=amount_paise, reason=reason)
            db.add(refund)
    assert payment.provider_payment_id is not None
    result = await provider.refund(
        payment.provider_payment_id,
        amount_paise=refund.amount_paise,
        idempotency_key=refund.id,
        reason=reason,
    )
    async with sessions() as db, db.begin():
        row = await db.get(Refund, refund.id, with_for_update=True)
        assert row is not None
        row.provider_refund_id = row.provider_refund_id or result.refund_ref
        if result.status == "processed":
            await _refund_moved(db, row, RefundStatus.PROCESSED)
    return row


async def record_webhook(db: AsyncSession, event: WebhookEvent) -> WebhookOutcome:
    """Store ``event`` once and apply it, in the caller's transaction (so a crash between
    the two cannot happen: either both are committed, or neither and the provider retries)."""
    stored = await db.execute(
        insert(ProviderEvent)
        .values(
            provider=event.provider,
            event_id=event.event_id,
            event_type=event.event_type[:64],
            payload=event.payload,
        )
        .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        .returning(ProviderEvent.event_id)
    )
    if stored.scalar_one_or_none() is None:
        # Another delivery of this event committed first (a concurrent one waited on the
        # primary key above until it did): it has done the work.
        return WebhookOutcome.DUPLICATE
    if event.kind is EventKind.IGNORED:
        return WebhookOutcome.IGNORED
    if event.kind in {EventKind.REFUND_PROCESSED, EventKind.REFUND_FAILED}:
        return await _apply_refund_event(db, event)
    target = transitions.payment_target(event.kind)
    assert target is not None
    payment = await _find_payment(db, event)
    if payment is None:
        log.warning(
            "%s webhook %s (%s) names no payment of ours",
            event.provider,
            event.event_id,
            event.event_type,
        )
        return WebhookOutcome.UNMATCHED
    moved = await _move(
        db, payment, target, payment_ref=event.payment_ref, amount_paise=event.amount_paise
    )
    return WebhookOutcome.APPLIED if moved else WebhookOutcome.STALE


async def _find_payment(db: AsyncSession, event: WebhookEvent) -> Payment | None:
    keys: list[ColumnElement[bool]] = []
    if event.order_ref:
        keys.append(Payment.provider_order_id == event.order_ref)
    if event.payment_ref:
        keys.append(Payment.provider_payment_id == event.payment_ref)
    if not keys:
        return None
    query = select(Payment).where(Payment.provider == event.provider, or_(*keys))
    found: Payment | None = await db.scalar(query.limit(1).with_for_update())
    return found


async def _apply_refund_event(db: AsyncSession, event: WebhookEvent) -> WebhookOutcome:
    keys: list[ColumnElement[bool]] = []
    if event.refund_ref:
        keys.append(Refund.provider_refund_id == event.refund_ref)
    if event.refund_receipt:
        keys.append(Refund.id == event.refund_receipt)
    refund = (
        await db.scalar(select(Refund).where(or_(*keys)).limit(1).with_for_update())
        if keys
        else None
    )
    if refund is None:
        return WebhookOutcome.UNMATCHED
    if refund.provider_refund_id is None and event.refund_ref:
        refund.provider_refund_id = event.refund_ref
    target = (
        RefundStatus.PROCESSED if event.kind is EventKind.REFUND_PROCESSED else RefundStatus.FAILED
    )
    moved = await _refund_moved(db, refund, target)
    return WebhookOutcome.APPLIED if moved else WebhookOutcome.STALE


async def _refund_moved(db: AsyncSession, refund: Refund, target: RefundStatus) -> bool:
    new = transitions.advance_refund(refund.status, target)
    if new is None:
        return False
    refund.status = new
    if new is RefundStatus.PROCESSED:
        payment = await _lock(db, refund.payment_id)
        await db.flush()
        refunded = await db.scalar(
            select(func.coalesce(func.sum(Refund.amount_paise), 0)).where(
                Refund.payment_id == payment.id, Refund.status == RefundStatus.PROCESSED
            )
        )
        status = transitions.after_refunds(payment.captured_paise, int(refunded or 0))
        if transitions.advance(payment.status, status) is not None:
            payment.status = status
        # The money went back: the ledger says so once, with this transition.
        await post(
            db,
            refund_txn(
                payment_id=payment.id,
                driver_id=payment.user_id,
                amount_paise=refund.amount_paise,
                session_id=payment.session_id,
                refund_id=refund.id,
            ),
        )
    return True


async def _move(
    db: AsyncSession,
    payment: Payment,
    target: PaymentStatus,
    *,
    payment_ref: str | None = None,
    amount_paise: int | None = None,
) -> bool:
    """Move ``payment`` forward to ``target`` (a locked row); False when it is already there
    or beyond — a late, repeated or out-of-order report."""
    new = transitions.advance(payment.status, target)
    if new is None:
        return False
    if payment_ref and (payment.provider_payment_id is None or new is not PaymentStatus.FAILED):
        # The attempt that succeeds is the order's payment (an order may see a failed attempt
        # before a successful one with another id).
        payment.provider_payment_id = payment_ref
    payment.status = new
    if new is PaymentStatus.CAPTURED:
        payment.captured_paise = amount_paise or payment.amount_paise
        # Posted with the one transition to captured (the row is locked), so a capture
        # reported by the API answer and by a webhook is booked once.
        await post(
            db,
            capture_txn(
                payment_id=payment.id,
                driver_id=payment.user_id,
                amount_paise=payment.captured_paise,
                session_id=payment.session_id,
            ),
        )
    return True


async def _lock(db: AsyncSession, payment_id: str) -> Payment:
    payment = await db.get(Payment, payment_id, with_for_update=True)
    if payment is None:
        raise NotFound("payment", payment_id)
    return payment
