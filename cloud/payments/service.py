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

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloud.errors import Conflict, NotFound
from cloud.ledger.entries import Txn, capture_txn, refund_txn
from cloud.ledger.service import post, post_all
from cloud.payments import transitions
from cloud.payments.models import (
    Payment,
    PaymentStatus,
    Refund,
    RefundStatus,
)
from cloud.payments.provider import (
    CheckoutResult,
    Order,
    OrderRequest,
    PaymentProvider,
    PaymentState,
    RefundResult,
    WebhookEvent,
)
from cloud.payments.webhooks import WebhookOutcome, apply_webhooks

log = logging.getLogger(__name__)

_I = TypeVar("_I")
_R = TypeVar("_R")

#: The provider's payment states we act on, in ours.
_REPORTED = {
    "authorized": PaymentStatus.AUTHORIZED,
    "captured": PaymentStatus.CAPTURED,
    "failed": PaymentStatus.FAILED,
}


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


#: The reason of the refund of a prepayment's unused part (one per payment and reason).
UNUSED = "unused prepayment"
#: A captured payment after a refund (its settlement's, or another).
_REFUNDED = frozenset({PaymentStatus.PARTIALLY_REFUNDED, PaymentStatus.REFUNDED})
#: Provider calls in flight at once while settling many payments.
PROVIDER_CALLS = 8


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
    return (await settle_many(sessions, provider, {payment_id: billed_paise}))[payment_id]


async def settle_many(
    sessions: async_sessionmaker[AsyncSession],
    provider: PaymentProvider,
    bills: Mapping[str, int],
) -> dict[str, Settled]:
    """:func:`settle` for many payments (``{payment_id: billed_paise}``): the same provider
    calls with the same keys, several in flight at once, and the rows written in a few
    transactions whatever their number (the settle job's batches). Raises NotFound or
    Conflict before any call when a payment cannot be settled; else, after every call was
    made and what succeeded was recorded, the first provider error (a retry repeats
    nothing)."""
    if not bills:
        return {}
    async with sessions() as db:
        found = {
            p.id: p for p in await db.scalars(select(Payment).where(Payment.id.in_(list(bills))))
        }
        moved_on = [i for i, p in found.items() if p.status in _REFUNDED]
        # A settlement another settler finished after our caller looked (its unused part
        # refunded, the refund's webhook moving the payment on): settling it again repeats
        # nothing (no capture; refund_many finds that refund by its reason). Refused as
        # "not authorized" it raised Conflict out of a settler racing another (tests/cloud/
        # test_settlement.py, under load).
        settled = (
            set(
                await db.scalars(
                    select(Refund.payment_id).where(
                        Refund.payment_id.in_(moved_on),
                        Refund.reason == UNUSED,
                        Refund.status != RefundStatus.FAILED,
                    )
                )
            )
            if moved_on
            else set()
        )
    plans: dict[str, transitions.Settlement] = {}
    for payment_id, billed_paise in bills.items():
        payment = found.get(payment_id)
        if payment is None:
            raise NotFound("payment", payment_id)
        if payment.provider_payment_id is None or (
            payment.status not in {PaymentStatus.AUTHORIZED, PaymentStatus.CAPTURED}
            and payment_id not in settled
        ):
            raise Conflict(
                f"payment {payment_id} is {payment.status.value}, not authorized",
                entity="payment",
                key=payment_id,
            )
        plans[payment_id] = transitions.settlement(
            authorized_paise=payment.amount_paise,
            billed_paise=billed_paise,
            partial_capture=provider.partial_capture,
        )
    authorized = [found[i] for i in sorted(bills) if found[i].status is PaymentStatus.AUTHORIZED]

    async def capture(payment: Payment) -> PaymentState:
        assert payment.provider_payment_id is not None
        return await provider.capture(
            payment.provider_payment_id,
            amount_paise=plans[payment.id].capture_paise,
            currency=payment.currency,
            idempotency_key=payment.id,
        )

    states = await _each(authorized, capture)
    captured = [
        (p, s) for p, s in zip(authorized, states, strict=True) if isinstance(s, PaymentState)
    ]
    if captured:
        async with sessions() as db, db.begin():
            rows = await _lock_many(db, [p.id for p, _ in captured])
            ledger: list[Txn] = []
            for payment, state in captured:
                row = rows[payment.id]
                await _move(
                    db,
                    row,
                    PaymentStatus.CAPTURED,
                    amount_paise=state.captured_paise,
                    ledger=ledger,
                )
                found[payment.id] = row
            await post_all(db, ledger)
    _raise_first(states)
    refunds = await refund_many(
        sessions,
        provider,
        {i: plan.refund_paise for i, plan in plans.items() if plan.refund_paise},
        reason=UNUSED,
    )
    return {
        i: Settled(found[i], plan.capture_paise, refunds.get(i), plan.due_paise)
        for i, plan in plans.items()
    }


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
    refunds = await refund_many(sessions, provider, {payment_id: amount_paise}, reason=reason)
    return refunds[payment_id]


async def refund_many(
    sessions: async_sessionmaker[AsyncSession],
    provider: PaymentProvider,
    amounts: Mapping[str, int],
    *,
    reason: str,
) -> dict[str, Refund]:
    """:func:`refund_payment` for many payments (``{payment_id: amount_paise}``), in two
    transactions: the refund rows first (under the payments' locks, taken in id order),
    then, after the provider calls, what the provider answered (the refunds' locks, then
    their payments': the webhooks' order, cloud/payments/webhooks.py)."""
    if not amounts:
        return {}
    ids = sorted(amounts)
    async with sessions() as db, db.begin():
        payments = await _lock_many(db, ids)
        missing = [i for i in ids if i not in payments]
        if missing:
            raise NotFound("payment", missing[0])
        live = Refund.status != RefundStatus.FAILED
        existing = {
            r.payment_id: r
            for r in await db.scalars(
                select(Refund).where(Refund.payment_id.in_(ids), Refund.reason == reason, live)
            )
        }
        refunded = {
            payment_id: int(total)
            for payment_id, total in (
                await db.execute(
                    select(Refund.payment_id, func.sum(Refund.amount_paise))
                    .where(Refund.payment_id.in_(ids), live)
                    .group_by(Refund.payment_id)
                )
            ).tuples()
        }
        refunds: dict[str, Refund] = {}
        for payment_id in ids:
            refund = existing.get(payment_id)
            if refund is None:
                amount = amounts[payment_id]
                if refunded.get(payment_id, 0) + amount > payments[payment_id].captured_paise:
                    raise Conflict(
                        f"refund of {amount} paise exceeds what payment {payment_id} has "
                        "left to refund",
                        entity="payment",
                        key=payment_id,
                    )
                refund = Refund(payment_id=payment_id, amount_paise=amount, reason=reason)
                db.add(refund)
            refunds[payment_id] = refund
    unsent = [r for r in refunds.values() if r.provider_refund_id is None]

    async def send(refund: Refund) -> RefundResult:
        payment_ref = payments[refund.payment_id].provider_payment_id
        assert payment_ref is not None
        return await provider.refund(
            payment_ref,
            amount_paise=refund.amount_paise,
            idempotency_key=refund.id,
            reason=reason,
        )

    results = await _each(unsent, send)
    sent = {
        r.id: res for r, res in zip(unsent, results, strict=True) if isinstance(res, RefundResult)
    }
    if sent:
        async with sessions() as db, db.begin():
            rows = await db.scalars(
                select(Refund)
                .where(Refund.id.in_(sorted(sent)))
                .order_by(Refund.id)
                .with_for_update()
            )
            for row in rows.all():
                result = sent[row.id]
                row.provider_refund_id = row.provider_refund_id or result.refund_ref
                if result.status == "processed":
                    await _refund_moved(db, row, RefundStatus.PROCESSED)
                refunds[row.payment_id] = row
    _raise_first(results)
    return refunds


async def _each(items: Sequence[_I], call: Callable[[_I], Awaitable[_R]]) -> list[_R | Exception]:
    """``call`` for every item, ``PROVIDER_CALLS`` at a time; an item's error is its answer
    (the others still happen, and what succeeded is recorded before it is raised)."""
    gate = asyncio.Semaphore(PROVIDER_CALLS)

    async def one(item: _I) -> _R | Exception:
        async with gate:
            try:
                return await call(item)
            except Exception as exc:  # noqa: BLE001 -- raised by _raise_first once recorded
                return exc

    return list(await asyncio.gather(*(one(item) for item in items)))


def _raise_first(answers: Sequence[object]) -> None:
    for answer in answers:
        if isinstance(answer, Exception):
            raise answer


async def record_webhook(db: AsyncSession, event: WebhookEvent) -> WebhookOutcome:
    """Store ``event`` once and apply it, in the caller's transaction (so a crash between
    the two cannot happen: either both are committed, or neither and the provider retries).
    One event of :func:`cloud.payments.webhooks.apply_webhooks`, which does it for many."""
    (outcome,) = await apply_webhooks(db, [event])
    return outcome


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
    ledger: list[Txn] | None = None,
) -> bool:
    """Move ``payment`` forward to ``target`` (a locked row); False when it is already there
    or beyond — a late, repeated or out-of-order report. A capture's ledger transaction is
    posted at once, or appended to ``ledger`` for the caller to post in its transaction."""
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
        txn = capture_txn(
            payment_id=payment.id,
            driver_id=payment.user_id,
            amount_paise=payment.captured_paise,
            session_id=payment.session_id,
        )
        if ledger is None:
            await post(db, txn)
        else:
            ledger.append(txn)
    return True


async def _lock_many(db: AsyncSession, payment_ids: Sequence[str]) -> dict[str, Payment]:
    """Payment rows locked FOR UPDATE in id order (every batch takes them in this order)."""
    rows = await db.scalars(
        select(Payment)
        .where(Payment.id.in_(sorted(payment_ids)))
        .order_by(Payment.id)
        .with_for_update()
    )
    return {p.id: p for p in rows}


async def _lock(db: AsyncSession, payment_id: str) -> Payment:
    payment = await db.get(Payment, payment_id, with_for_update=True)
    if payment is None:
        raise NotFound("payment", payment_id)
    return payment
