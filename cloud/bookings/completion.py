"""A booking ends ``completed`` when its session is billed (issue 20 follow-up).

The settle job prices a stopped session in one transaction (:func:`cloud.payments.
settlement.price_session`); in that same transaction the session's booking, if still
``confirmed``, becomes ``completed``. Completed is not an active status
(:data:`cloud.bookings.models.ACTIVE_BOOKING_STATUSES`), so the exclusion constraint and the
search stop counting it: the rest of the window frees for other drivers, as a marketplace
does once a driver has unplugged and left. The driver's PIN stops opening the charger with
it (:data:`cloud.bookings.pins.REVOKED_STATUSES`).

One conditional UPDATE rather than a read then a write: a cancel holding the booking's row
lock (:func:`cloud.bookings.service.cancel_booking`) is waited for, and a booking it
cancelled stays cancelled.
"""

from __future__ import annotations

from sqlalchemy import func, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.bookings.models import Booking, BookingStatus


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
    return completed
