"""A confirmed booking nobody used: a no-show once its end is ``no_show_after_min`` behind
(issue 16, item 3; the settle job marks them, :func:`cloud.payments.settlement.
release_cancelled`).

Nothing else ends a confirmed booking, so without this rule a paid booking never used kept
its payment authorized until the provider's own expiry. A no-show is charged the charger's
late cancellation fee (``chargers.late_cancel_fee_paise``, at most the booking's amount, as
:func:`cloud.bookings.policy.cancellation_fee` caps it): not turning up is the latest of
cancellations. The fee is written to ``bookings.cancellation_fee_paise``, so the settle job
then keeps it from the prepayment, refunds the rest and bills it to the host with its tax
invoice exactly as it does a late cancellation's (:mod:`cloud.payments.cancellation`).

Not a no-show: a booking with a session, or with an unlock that started one or handed out
its PIN (``started``/``offline``: an offline PIN session reaches the cloud when its charger
syncs, perhaps days later, and is billed from the prepayment then).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

#: In the database's clock (the booking's end and now() on one clock); one statement, so two
#: settle jobs marking at once mark each booking once.
_MARK = text(
    """
UPDATE bookings b
SET status = 'no_show',
    cancellation_fee_paise = LEAST(c.late_cancel_fee_paise, b.amount_paise),
    updated_at = now()
FROM chargers c
WHERE c.id = b.charger_id
  AND b.status = 'confirmed'
  AND upper(b.period) + make_interval(mins => :after_min) <= now()
  AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.booking_id = b.id)
  AND NOT EXISTS (SELECT 1 FROM unlock_requests u WHERE u.booking_id = b.id
                  AND u.outcome IN ('started', 'offline'))
RETURNING b.id"""
)


async def mark_no_shows(db: AsyncSession, *, after_min: int) -> list[str]:
    """Turn the confirmed bookings that ended ``after_min`` minutes ago unused into
    no-shows with their fee (in the caller's transaction); their ids."""
    return list((await db.execute(_MARK, {"after_min": after_min})).scalars())
