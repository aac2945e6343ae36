"""A booking ends ``completed`` when its session is billed (issue 20 follow-up).

The settle job prices a stopped session in one transaction (:func:`cloud.payments.
settlement.price_session`); in that same transaction the session's booking, if still
``confirmed``, becomes ``completed``. Completed is not an active status
(:data:`cloud.bookings.models.ACTIVE_BOOKING_STATUSES`), so the exclusion constraint and the
search stop counting it: the rest of the window frees for other drivers, as a marketplace
does once a driver has unplugged and left. A PIN it had is revoked at the charger
(:data:`cloud.bookings.pins.REVOKED_STATUSES`): the revocation is recorded in the same
transaction as a deferred command, which the republish job publishes
(:mod:`cloud.sessions.republish`), so the PIN cannot open the rest of the window for its
driver while another driver holds it.

One conditional UPDATE rather than a read then a write: a cancel holding the booking's row
lock (:func:`cloud.bookings.service.cancel_booking`) is waited for, and a booking it
cancelled stays cancelled.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.bookings.models import Booking, BookingStatus
from cloud.bookings.pins import revocation


async def complete_booking(db: AsyncSession, booking: Booking) -> bool:
    """Mark ``booking`` completed if it is confirmed (in ``db``'s transaction); whether it was."""
    done = await db.execute(
        update(Booking)
        .where(Booking.id == booking.id, Booking.status == BookingStatus.CONFIRMED)
        .values(status=BookingStatus.COMPLETED, updated_at=func.now())
        .returning(Booking.id)
    )
    completed = done.scalar_one_or_none() is not None
    if completed:
        booking.status = BookingStatus.COMPLETED
        await revocation(db, booking, now=datetime.now(UTC))
    return completed
