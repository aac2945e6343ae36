"""``GET /sessions/{id}/receipt``: a session's bill line by line and how it was paid.

The lines are the one pricing rule's (:func:`cloud.payments.settlement.bill_of`) over the
session's meter delta and times; captured and refunded come from the ledger
(:func:`cloud.ledger.service.session_money`), never from a stored total. Who may read it is
who may read the session (its driver, the charger's host, an admin; anyone else: 404).
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.tokens import Principal
from cloud.billing.quote import SAC_EV_CHARGING
from cloud.billing.schemas import QuoteLineOut
from cloud.billing.service import rates
from cloud.bookings.models import Booking
from cloud.errors import Conflict
from cloud.invoices.service import interstate
from cloud.ledger.service import session_money
from cloud.payments.models import Payment
from cloud.payments.schemas import ReceiptOut
from cloud.payments.settlement import bill_of, booked_until
from cloud.sessions.elapsed import billed_elapsed
from cloud.sessions.models import SessionState
from cloud.sessions.service import load_view
from cloud.settings import BillingSettings


async def receipt(
    db: AsyncSession, principal: Principal, session_id: str, billing: BillingSettings
) -> ReceiptOut:
    view = await load_view(db, principal, session_id)
    row = view.row
    if row is None or row.state is not SessionState.STOPPED or view.charger is None:
        raise Conflict(
            f"session {session_id} has not stopped: its receipt comes with its bill",
            entity="session",
            key=session_id,
        )
    split = await interstate(db, row.id, billing=billing)
    booking_id = row.booking_id or (view.unlock.booking_id if view.unlock else None)
    booking = None if booking_id is None else await db.get(Booking, booking_id)
    quote = bill_of(
        row,
        view.charger,
        rates(billing),
        interstate=split,
        booked_until=booked_until(booking),
        elapsed=await billed_elapsed(db, row),
    )
    payment = await db.scalar(
        select(Payment).where(Payment.session_id == row.id).order_by(Payment.created_at).limit(1)
    )
    prepaid = payment.amount_paise if payment is not None else 0
    if booking_id is not None:
        # A booking's prepayment and an extension's top-ups (not an amount due paid later).
        prepaid = int(
            await db.scalar(
                select(func.coalesce(func.sum(Payment.amount_paise), 0)).where(
                    Payment.session_id == row.id, Payment.booking_id == booking_id
                )
            )
            or 0
        )
    money = await session_money(db, row.id)
    kept = money.captured_paise - money.refunded_paise
    billed = row.amount_paise if row.amount_paise is not None else quote.total_paise
    return ReceiptOut(
        session_id=row.device_session_id,
        charger_id=view.charger.id,
        booking_id=booking_id,
        started_at=row.started_at,
        stopped_at=row.stopped_at,
        meter_start_wh=row.meter_start_wh,
        meter_stop_wh=row.meter_stop_wh,
        energy_wh=row.energy_wh,
        billing_state=row.billing_state.value,
        lines=[
            QuoteLineOut(
                kind=line.kind,
                amount_paise=line.amount_paise,
                quantity=line.quantity,
                unit=line.unit,
            )
            for line in quote.lines
        ],
        taxable_paise=quote.taxable_paise,
        gst_paise=quote.gst_paise,
        total_paise=billed,
        sac=SAC_EV_CHARGING,
        prepaid_paise=prepaid,
        captured_paise=money.captured_paise,
        refunded_paise=money.refunded_paise,
        # Only a settled bill can be due: before, the money is still being taken.
        due_paise=max(0, money.billed_paise - kept) if money.billed_paise else 0,
        payment_id=payment.id if payment is not None else None,
    )
