"""The booking rules as pure functions: the time range, opening hours, price, cancellation fee.

No I/O and no clock: callers pass ``now``. Times are timezone-aware. Opening hours and
blocked periods are the listings' rule (:mod:`cloud.chargers.availability`), applied by the
service.

Rules (docs/cloud.md, "Bookings"):

* a booking starts and ends on a 15-minute boundary (``SLOT``), lasts 15 minutes to 12 hours,
  starts no earlier than ``START_GRACE`` ago and no later than ``MAX_ADVANCE`` ahead;
* it must lie inside the charger's opening windows and outside every blocked period;
* the amount is an integer number of paise, GST included: the window's quote under the one
  pricing rule (:mod:`cloud.billing.quote`, ``price(tariff, window_usage(...))``), exact for
  per-hour pricing, an upper bound (the connector's maximum power for the whole booking) for
  per-kWh pricing, and never below the bill of a session that fits in the booking;
* a running booking (started, not ended) may be extended by its driver to a later end on a
  15-minute boundary, at most ``MAX_DURATION`` in all, while the connector is free then;
* a driver cancels for free until ``free_cancel_before_min`` minutes before the start (and
  always while the host has not confirmed); later, the charger's late fee, capped at the
  booking's amount. A host's (or admin's) cancellation never costs the driver anything;
* an instant-book charger confirms at once unless hosts' private ratings of the driver say
  otherwise (:func:`instant_book_allowed`): then its host approves the booking.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cloud.errors import InvalidRequest

SLOT = timedelta(minutes=15)
MIN_DURATION = SLOT
MAX_DURATION = timedelta(hours=12)
#: A start this far in the past is still accepted (the driver tapped "book" at 10:02 for 10:00).
START_GRACE = timedelta(minutes=5)
MAX_ADVANCE = timedelta(days=60)


def _aligned(moment: datetime) -> bool:
    epoch_s = moment.timestamp()
    return epoch_s % SLOT.total_seconds() == 0


def check_range(start: datetime, end: datetime, now: datetime) -> None:
    """Raise :class:`InvalidRequest` naming the field if ``[start, end)`` is not bookable
    at ``now`` as a time range (opening hours are the service's job)."""
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidRequest(
            "times need a UTC offset", field="start" if start.tzinfo is None else "end"
        )
    if not _aligned(start):
        raise InvalidRequest("a booking starts on a 15-minute boundary", field="start")
    if not _aligned(end):
        raise InvalidRequest("a booking ends on a 15-minute boundary", field="end")
    if end <= start:
        raise InvalidRequest("the end must be after the start", field="end")
    if start < now - START_GRACE:
        raise InvalidRequest("the start is in the past", field="start")
    if start > now + MAX_ADVANCE:
        raise InvalidRequest(
            f"a booking starts at most {MAX_ADVANCE.days} days ahead", field="start"
        )
    if end - start < MIN_DURATION:
        raise InvalidRequest("a booking lasts at least 15 minutes", field="end")
    if end - start > MAX_DURATION:
        raise InvalidRequest("a booking lasts at most 12 hours", field="end")


def check_extension(start: datetime, end: datetime, new_end: datetime) -> None:
    """Raise :class:`InvalidRequest` (field ``end``) unless a booking ``[start, end)`` may
    run until ``new_end``: later than now ends, on a 15-minute boundary, and the whole
    booking no longer than ``MAX_DURATION``."""
    if new_end.tzinfo is None:
        raise InvalidRequest("times need a UTC offset", field="end")
    if not _aligned(new_end):
        raise InvalidRequest("a booking ends on a 15-minute boundary", field="end")
    if new_end <= end:
        raise InvalidRequest("an extension ends after the booking's current end", field="end")
    if new_end - start > MAX_DURATION:
        raise InvalidRequest("a booking lasts at most 12 hours", field="end")


def cancellation_fee(
    *,
    now: datetime,
    start: datetime,
    confirmed: bool,
    by_driver: bool,
    free_cancel_before_min: int,
    late_cancel_fee_paise: int,
    amount_paise: int,
) -> int:
    """The fee the driver owes for cancelling at ``now`` a booking starting at ``start``."""
    if not by_driver or not confirmed:
        return 0
    if now <= start - timedelta(minutes=free_cancel_before_min):
        return 0
    return min(late_cancel_fee_paise, amount_paise)


@dataclass(frozen=True, slots=True)
class DriverTrust:
    """What hosts' private ratings say of a driver (cloud/reviews/service.py)."""

    #: Ratings from every host, and their sum.
    ratings: int
    rating_sum: int
    #: The lowest rating the charger's own host gave this driver (None: never rated).
    lowest_from_host: int | None = None


#: A rating at or below this from the charger's own host: that host approves each booking.
DISTRUSTED_RATING = 2
#: An average below this (in hundredths) over at least MIN_RATINGS ratings from hosts.
TRUSTED_AVERAGE_HUNDREDTHS = 300
MIN_RATINGS = 2


def instant_book_allowed(trust: DriverTrust) -> bool:
    """Whether an instant-book charger confirms this driver's booking at once; otherwise it
    waits for the host's approval like a request-to-book. A new driver (no ratings) is
    trusted: instant book is the listing's promise, and a rating needs a first session."""
    if trust.lowest_from_host is not None and trust.lowest_from_host <= DISTRUSTED_RATING:
        return False
    return not (
        trust.ratings >= MIN_RATINGS
        and trust.rating_sum * 100 < TRUSTED_AVERAGE_HUNDREDTHS * trust.ratings
    )
