"""The driver pays before the relay closes (issue 16, item 3): prepayments and their checks.

What a driver pays for, and what it unlocks:

* a **booking** (``POST /bookings/{id}/payment``): its ``amount_paise``, the upper bound the
  one pricing rule puts on any session in its window. The unlock of a booking (QR or PIN)
  needs authorized payments of at least that amount (:func:`require_booking_paid`); a
  booking of amount 0 (a free charger) needs none. An extension raises the amount, and the
  same route then takes the top-up (a second payment of the booking);
* a **walk-up** (``POST /payments``): the quote of a duration or an energy on a charger. An
  unlock without a booking needs an authorized walk-up payment made after the driver's last
  started walk-up unlock (:func:`require_walkup_paid`): each started walk-up consumes the
  payments made before it, and the settlement takes the latest of them;
* an **amount due** (``POST /amount-due/payment``): what a bill took beyond its prepayment (the
  driver's ledger balance below zero). It is captured as soon as it is verified. While an
  amount is due the driver can neither book nor pay for a walk-up (:func:`require_nothing_due`).

A payment opened here is only an order until Checkout's answer is verified
(:func:`verify`: the signature against the order id *we* stored; with the dummy provider a
test card is "typed" here instead). The money is taken when the session is billed
(:mod:`cloud.payments.settlement`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.tokens import Principal
from cloud.billing.schemas import QuoteRequest
from cloud.billing.service import quote
from cloud.bookings.models import Booking, BookingStatus
from cloud.errors import BookingNotActive, Conflict, InvalidRequest, NotFound, PaymentRequired
from cloud.ledger.service import driver_balance
from cloud.payments import service
from cloud.payments.dummy import DummyProvider
from cloud.payments.models import Payment, PaymentStatus, Refund, RefundStatus
from cloud.payments.provider import CheckoutResult, Order, PaymentProvider
from cloud.payments.schemas import CheckoutAnswer, OrderOut, PaymentOut, WalkUpPayment
from cloud.sessions.models import BillingState, ChargingSession, UnlockOutcome, UnlockRequest
from cloud.state import AppState

#: A payment holds its money for the unlock once the provider reports it authorized (or
#: already captured: Razorpay auto-capture, an amount due).
HELD = (PaymentStatus.AUTHORIZED, PaymentStatus.CAPTURED)


def _provider(state: AppState) -> PaymentProvider:
    if state.payments is None:  # only states built by hand lack one
        raise NotFound("payment provider", "none configured")
    return state.payments


async def amount_due(db: AsyncSession, user_id: str) -> int:
    """What the driver owes: a negative ledger balance (billed beyond what they paid)."""
    return max(0, -await driver_balance(db, user_id))


async def require_nothing_due(db: AsyncSession, user_id: str) -> None:
    """402 while the driver owes an amount (a bill beyond its prepayment)."""
    due = await amount_due(db, user_id)
    if due:
        raise PaymentRequired(
            f"an amount of {due} paise is due from an earlier session: pay it first "
            "(POST /amount-due/payment)",
            entity="user",
            key=user_id,
            amount_paise=due,
        )


async def booking_payments(db: AsyncSession, booking: Booking) -> list[Payment]:
    """The payments holding ``booking``'s amount, oldest first: the prepayment and, after
    an extension (``POST /bookings/{id}/extend``), its top-ups."""
    found = await db.scalars(
        select(Payment)
        .where(
            Payment.booking_id == booking.id,
            # Not yet claimed by a stopped session (cloud.payments.settlement): one
            # prepayment pays for one session.
            Payment.session_id.is_(None),
            Payment.status.in_(HELD),
        )
        .order_by(Payment.created_at, Payment.id)
    )
    return list(found)


#: The bills of a booking's sessions that stand (priced, being charged, settled or
#: disputed; a waived session took nothing), and the booking's payments those sessions
#: claimed (before or after their settlement).
_CONSUMED = text(
    """
SELECT
  (SELECT coalesce(sum(s.amount_paise), 0) FROM sessions s
   WHERE s.booking_id = :booking AND s.state = 'stopped'
     AND s.billing_state IN ('priced', 'charged', 'settled', 'disputed')) AS billed,
  (SELECT coalesce(sum(p.amount_paise), 0) FROM payments p
   WHERE p.booking_id = :booking AND p.session_id IS NOT NULL
     AND p.status IN ('authorized', 'captured', 'partially_refunded', 'refunded')) AS claimed"""
)


async def _held_and_consumed(db: AsyncSession, booking: Booking) -> tuple[int, int]:
    held = sum(p.amount_paise for p in await booking_payments(db, booking))
    row = (await db.execute(_CONSUMED, {"booking": booking.id})).one()
    return held, min(int(row.billed), int(row.claimed))


async def booking_unpaid_paise(db: AsyncSession, booking: Booking) -> int:
    """What is left to pay of ``booking``'s amount (0: paid): the amount, less the payments
    still holding money for it, less what its stopped sessions already took of it.

    ``amount_paise`` bounds the whole booking, every session in its window together. A
    stopped session claims the payments it found (cloud/payments/settlement.py) and is
    billed from them, the unused part refunded: its bill is spent of the booking's amount,
    so after it only the rest is to hold again — for an extension's top-up as for a second
    unlock in the window. What a session took counts up to the payments it claimed (an
    overstay beyond them is an amount due, :func:`require_nothing_due`, not part of the
    booking's amount)."""
    held, consumed = await _held_and_consumed(db, booking)
    return max(0, booking.amount_paise - held - consumed)


#: A session of the booking that stopped and is not priced yet: found as the settlement
#: finds its booking (cloud/payments/settlement.py ``_owner``): the row's booking, the
#: unlock whose token it ran on, or the booking's keypad PIN on its charger.
_STOPPED_UNBILLED = text(
    """
SELECT EXISTS (
  SELECT 1 FROM sessions s
  WHERE s.state = 'stopped' AND s.billing_state = 'unbilled'
    AND (s.booking_id = :booking
         OR EXISTS (SELECT 1 FROM unlock_requests u
                    WHERE u.booking_id = :booking AND u.device_id = s.device_id
                      AND u.token_jti = s.credential_ref)
         OR (s.credential_kind = 'Pin' AND s.credential_ref = :pin_ref
             AND s.charger_id = :charger)))"""
)


async def require_booking_paid(db: AsyncSession, booking: Booking) -> None:
    """402 unless ``booking``'s amount is held by authorized payments, less what its
    stopped sessions already took of it (none is needed for an amount of 0); 409 while a
    session of a paid booking has stopped and is not billed yet."""
    if booking.amount_paise <= 0:
        return
    stopped = await db.scalar(
        _STOPPED_UNBILLED,
        {"booking": booking.id, "pin_ref": booking.pin_ref, "charger": booking.charger_id},
    )
    if stopped:
        # Its settlement will claim every payment the booking holds and complete the booking
        # (cloud/payments/settlement.py): until then those payments look unspent, and a
        # second session would run on them and then on credit.
        raise BookingNotActive(
            booking.id, "has a stopped session being billed: the booking ends with it"
        )
    held, consumed = await _held_and_consumed(db, booking)
    unpaid = max(0, booking.amount_paise - held - consumed)
    if unpaid:
        raise PaymentRequired(
            f"booking {booking.id} is not paid: pay {unpaid} paise first "
            f"(POST /bookings/{booking.id}/payment)",
            entity="booking",
            key=booking.id,
            amount_paise=unpaid,
        )
    if held == 0:
        # Its earlier sessions spent the whole amount: another session would charge on
        # credit. More time (and money to hold for it) comes with an extension.
        raise PaymentRequired(
            f"booking {booking.id}'s amount is spent by its earlier sessions: extend it "
            f"(POST /bookings/{booking.id}/extend) and pay the top-up",
            entity="booking",
            key=booking.id,
            amount_paise=0,
        )


async def walkup_payment(
    db: AsyncSession, user_id: str, *, before: datetime | None = None
) -> Payment | None:
    """The driver's latest unconsumed walk-up payment: authorized, for no booking and no
    session, made after their last started walk-up unlock (and before ``before``, when
    given: the unlock a settlement looks back from)."""
    last_unlock = (
        select(func.max(UnlockRequest.created_at))
        .where(
            UnlockRequest.user_id == user_id,
            UnlockRequest.booking_id.is_(None),
            UnlockRequest.outcome == UnlockOutcome.STARTED,
        )
        .scalar_subquery()
    )
    query = select(Payment).where(
        Payment.user_id == user_id,
        Payment.booking_id.is_(None),
        Payment.session_id.is_(None),
        Payment.status.in_(HELD),
    )
    if before is None:
        query = query.where(or_(last_unlock.is_(None), Payment.created_at > last_unlock))
    else:
        query = query.where(Payment.created_at < before)
    found: Payment | None = await db.scalar(query.order_by(Payment.created_at.desc()).limit(1))
    return found


async def require_walkup_paid(db: AsyncSession, user_id: str) -> None:
    """402 unless the driver holds an unconsumed walk-up payment (or owes nothing and ...)."""
    await require_nothing_due(db, user_id)
    if await walkup_payment(db, user_id) is None:
        raise PaymentRequired(
            "pay for a walk-up first (POST /payments with a duration or an energy)",
            entity="user",
            key=user_id,
            amount_paise=0,
        )


async def _opened(state: AppState, payment: Payment, order: Order) -> OrderOut:
    async with state.sessions() as db:
        out = await payment_out(db, payment)
    return OrderOut(**out.model_dump(), order_id=order.order_ref, checkout=dict(order.checkout))


async def pay_booking(state: AppState, principal: Principal, booking_id: str) -> OrderOut:
    """Open the prepayment of the caller's booking: what is left to pay of its amount, GST
    included — all of it, or after an extension the top-up."""
    async with state.sessions() as db:
        booking = await db.get(Booking, booking_id)
        if booking is None or booking.user_id != principal.user_id:
            raise NotFound("booking", booking_id)
        if booking.status not in {BookingStatus.PENDING, BookingStatus.CONFIRMED}:
            raise Conflict(
                f"booking {booking_id} is {booking.status.value}", entity="booking", key=booking_id
            )
        if booking.amount_paise <= 0:
            raise Conflict(
                f"booking {booking_id} costs nothing: there is nothing to pay",
                entity="booking",
                key=booking_id,
            )
        amount = await booking_unpaid_paise(db, booking)
        if not amount:
            raise Conflict(
                f"booking {booking_id} is already paid", entity="booking", key=booking_id
            )
    payment, order = await service.open_order(
        state.sessions,
        _provider(state),
        user_id=principal.user_id,
        amount_paise=amount,
        booking_id=booking_id,
    )
    return await _opened(state, payment, order)


async def pay_walkup(
    state: AppState, principal: Principal, body: WalkUpPayment, *, now: datetime
) -> OrderOut:
    """Open a walk-up prepayment: the quote of the duration or energy asked for."""
    async with state.sessions() as db:
        await require_nothing_due(db, principal.user_id)
        # The walk-up's own fields, as POST /quotes takes them (an omitted one, not null).
        asked = QuoteRequest.model_validate(body.model_dump(exclude_none=True))
        priced = await quote(db, principal, asked, now=now)
    if priced.total_paise <= 0:
        raise InvalidRequest("this charger costs nothing: unlock without paying", field="body")
    payment, order = await service.open_order(
        state.sessions,
        _provider(state),
        user_id=principal.user_id,
        amount_paise=priced.total_paise,
    )
    return await _opened(state, payment, order)


async def pay_due(state: AppState, principal: Principal) -> OrderOut:
    """Open a payment of the amount the driver owes, tagged with the session that left it
    (so the session's money adds up: captured - refunded = billed).

    Only a *settled* session is named: an amount due comes from a bill already posted, and
    the settlement claims for a session still to be billed every held payment tagged with it
    (:func:`cloud.payments.settlement._claim`) — a stopped, unbilled session named here would
    take the payment of another session's debt as its own prepayment."""
    async with state.sessions() as db:
        due = await amount_due(db, principal.user_id)
        if not due:
            raise Conflict("nothing is due", entity="user", key=principal.user_id)
        session_pk = await db.scalar(
            select(ChargingSession.id)
            .where(
                ChargingSession.user_id == principal.user_id,
                ChargingSession.billing_state == BillingState.SETTLED,
            )
            .order_by(ChargingSession.stopped_at.desc(), ChargingSession.id.desc())
            .limit(1)
        )
        if session_pk is None:
            # A debt is only ever left by a settled session's bill; untagged, the payment
            # would pass for a walk-up prepayment.
            raise Conflict(
                "no billed session left the amount due", entity="user", key=principal.user_id
            )
    payment, order = await service.open_order(
        state.sessions,
        _provider(state),
        user_id=principal.user_id,
        amount_paise=due,
        session_id=session_pk,
    )
    return await _opened(state, payment, order)


async def verify(
    state: AppState, principal: Principal, payment_id: str, body: CheckoutAnswer
) -> PaymentOut:
    """Record Checkout's answer for the caller's payment; an amount due is captured at once."""
    provider = _provider(state)
    async with state.sessions() as db:
        payment = await db.scalar(
            select(Payment).where(Payment.id == payment_id, Payment.user_id == principal.user_id)
        )
    if payment is None or payment.provider_order_id is None:
        raise NotFound("payment", payment_id)
    if body.card_number is not None:
        if not isinstance(provider, DummyProvider):
            raise InvalidRequest(
                "card numbers are taken by the provider's Checkout, not here", field="card_number"
            )
        result = await provider.pay(payment.provider_order_id, body.card_number)
        if not result.signature:
            # Declined: Checkout hands back no signed answer (the provider's payment.failed
            # webhook records the failure on the payment).
            raise PaymentRequired(
                f"the card was declined: payment {payment_id} is not paid",
                entity="payment",
                key=payment_id,
                amount_paise=payment.amount_paise,
            )
    else:
        assert body.provider_payment_id is not None
        assert body.signature is not None
        result = CheckoutResult(payment_ref=body.provider_payment_id, signature=body.signature)
    payment = await service.confirm_checkout(
        state.sessions, provider, payment_id=payment_id, user_id=principal.user_id, result=result
    )
    if (
        payment.status is PaymentStatus.AUTHORIZED
        and payment.session_id is not None
        and payment.booking_id is None
    ):
        # An amount due: nothing is left to bill, the money is taken now.
        await service.settle(
            state.sessions, provider, payment_id=payment_id, billed_paise=payment.amount_paise
        )
    async with state.sessions() as db:
        row = await db.get(Payment, payment_id)
        assert row is not None
        return await payment_out(db, row)


async def _refunded(db: AsyncSession, payment_ids: Sequence[str]) -> dict[str, int]:
    if not payment_ids:
        return {}
    rows = await db.execute(
        select(Refund.payment_id, func.sum(Refund.amount_paise))
        .where(Refund.payment_id.in_(payment_ids), Refund.status == RefundStatus.PROCESSED)
        .group_by(Refund.payment_id)
    )
    return {pid: int(total) for pid, total in rows.tuples()}


async def _device_session_ids(db: AsyncSession, pks: Sequence[int]) -> dict[int, str]:
    if not pks:
        return {}
    rows = await db.execute(
        select(ChargingSession.id, ChargingSession.device_session_id).where(
            ChargingSession.id.in_(pks)
        )
    )
    return dict(rows.tuples().all())


def _out(payment: Payment, refunded: int, session_id: str | None) -> PaymentOut:
    return PaymentOut(
        id=payment.id,
        provider=payment.provider,
        status=payment.status,
        amount_paise=payment.amount_paise,
        captured_paise=payment.captured_paise,
        refunded_paise=refunded,
        currency=payment.currency,
        booking_id=payment.booking_id,
        session_id=session_id,
        created_at=payment.created_at,
    )


async def payment_out(db: AsyncSession, payment: Payment) -> PaymentOut:
    refunded = await _refunded(db, [payment.id])
    pks = [payment.session_id] if payment.session_id is not None else []
    sids = await _device_session_ids(db, pks)
    sid = sids.get(payment.session_id) if payment.session_id is not None else None
    return _out(payment, refunded.get(payment.id, 0), sid)


async def get_payment(db: AsyncSession, principal: Principal, payment_id: str) -> PaymentOut:
    """The caller's own payment; anyone else's is a 404 (admins have their own view)."""
    payment = await db.scalar(
        select(Payment).where(Payment.id == payment_id, Payment.user_id == principal.user_id)
    )
    if payment is None:
        raise NotFound("payment", payment_id)
    return await payment_out(db, payment)


async def list_payments(
    db: AsyncSession, principal: Principal, *, limit: int, offset: int
) -> list[PaymentOut]:
    """The caller's payments, newest first."""
    payments = (
        await db.scalars(
            select(Payment)
            .where(Payment.user_id == principal.user_id)
            .order_by(Payment.created_at.desc(), Payment.id.desc())
            .limit(limit)
            .offset(offset)
        )
    ).all()
    refunded = await _refunded(db, [p.id for p in payments])
    sids = await _device_session_ids(db, [p.session_id for p in payments if p.session_id])
    return [
        _out(p, refunded.get(p.id, 0), sids.get(p.session_id) if p.session_id else None)
        for p in payments
    ]
