"""A booking that ended unused: its prepayment comes back, less a late cancellation's fee,
which is billed to the host like a session (issue 16, item 3).

Called by the settle job (:func:`cloud.payments.settlement.release_cancelled`) for each
prepayment a cancelled, declined or lapsed booking no longer needs. Two steps, each
idempotent by booking, as a session's settlement is:

1. *take the money* (no transaction open): the fee's bill is
   :func:`cloud.billing.quote.fee_quote` of ``bookings.cancellation_fee_paise`` (GST
   included, as the driver was shown it; the GST split the invoice will print), and
   :func:`cloud.payments.service.settle` keeps that total and refunds the rest, each
   provider call keyed on our ids;
2. *bill* (one transaction, the booking row locked): unless the booking already has its
   invoice, the fee's ledger transaction (:func:`cloud.ledger.entries.cancellation_fee_txn`:
   host earning, commission, GST, TCS) is posted and its GST tax invoice issued
   (:func:`cloud.invoices.service.issue_fee_invoice`, a supply without a session) — together,
   so a retried round bills once.

Promise: for the booking's payment, captured - refunded = billed; the fee is the host's
earning (less commission and tax), not the driver's credit. A booking paid twice (two
Checkout windows) keeps its fee from the first payment only and refunds the others whole.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloud.accounts.models import Host
from cloud.billing.quote import Quote, Rates, fee_quote
from cloud.bookings.models import Booking
from cloud.chargers.models import Charger
from cloud.invoices.models import Invoice
from cloud.invoices.service import charger_interstate, issue_fee_invoice
from cloud.ledger.entries import cancellation_fee_txn
from cloud.ledger.service import post
from cloud.payments import service
from cloud.payments.models import Payment, PaymentStatus
from cloud.payments.provider import PaymentProvider
from cloud.settings import BillingSettings

log = logging.getLogger(__name__)

#: A payment the provider took (or may still take): the one a fee is kept from.
_PAID = (
    PaymentStatus.AUTHORIZED,
    PaymentStatus.CAPTURED,
    PaymentStatus.PARTIALLY_REFUNDED,
    PaymentStatus.REFUNDED,
)


async def _fee_payment(db: AsyncSession, booking_id: str) -> str | None:
    """The payment a booking's fee is kept from: its first paid one."""
    found: str | None = await db.scalar(
        select(Payment.id)
        .where(Payment.booking_id == booking_id, Payment.status.in_(_PAID))
        .order_by(Payment.created_at, Payment.id)
        .limit(1)
    )
    return found


async def _fee_bill(
    db: AsyncSession, booking: Booking, payment_id: str, platform: Rates, billing: BillingSettings
) -> Quote | None:
    """What ``payment_id`` is billed for ``booking``'s fee (None: nothing)."""
    if booking.cancellation_fee_paise <= 0 or await _fee_payment(db, booking.id) != payment_id:
        return None
    split = await charger_interstate(db, booking.charger_id, billing=billing)
    quote = fee_quote(booking.cancellation_fee_paise, platform, interstate=split)
    return quote if quote.total_paise > 0 else None


async def release_booking(
    sessions: async_sessionmaker[AsyncSession],
    provider: PaymentProvider,
    *,
    booking_id: str,
    payment_id: str,
    platform: Rates,
    tcs_bp: int,
    billing: BillingSettings,
) -> bool:
    """Steps 1 and 2 for one payment of an unused booking (module docstring); True when this
    call billed the fee. Safe to call again at any point."""
    async with sessions() as db:
        booking = await db.get(Booking, booking_id)
        payment = await db.get(Payment, payment_id)
        if booking is None or payment is None:
            return False
        quote = await _fee_bill(db, booking, payment_id, platform, billing)
    if payment.status in {PaymentStatus.AUTHORIZED, PaymentStatus.CAPTURED}:
        kept = quote.total_paise if quote is not None else 0
        await service.settle(sessions, provider, payment_id=payment_id, billed_paise=kept)
    if quote is None:
        return False
    async with sessions() as db, db.begin():
        # The booking, then its payment (a refund webhook holds only the payment).
        await db.get(Booking, booking_id, with_for_update={"key_share": True})
        done = await db.scalar(
            select(Invoice.id).where(Invoice.booking_id == booking_id, Invoice.kind == "invoice")
        )
        if done is not None:
            return False
        await db.get(Payment, payment_id, with_for_update=True)
        charger = await db.get(Charger, booking.charger_id)
        assert charger is not None  # a foreign key
        host = await db.get(Host, charger.host_id)
        assert host is not None  # a foreign key
        await post(
            db,
            cancellation_fee_txn(
                booking_id=booking_id,
                payment_id=payment_id,
                driver_id=payment.user_id,
                host_id=host.id,
                quote=quote,
                host_gst_registered=host.host_gst_registered,
                tcs_bp=tcs_bp,
            ),
        )
        await issue_fee_invoice(db, booking_id, payment_id=payment_id, quote=quote, billing=billing)
    log.info(
        "cancellation fee billed",
        extra={
            "booking_id": booking_id,
            "amount_paise": quote.total_paise,
            "payment_id": payment_id,
        },
    )
    return True
