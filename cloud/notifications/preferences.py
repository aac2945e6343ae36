"""Which channels a user gets each kind of event on: their choice, else the defaults.

The defaults (:data:`DEFAULTS`) keep SMS — a paid message that interrupts — for what needs
acting on or changes plans: a request to approve, a booking declined or cancelled, a charger
gone offline. Everything else goes by e-mail and push; "charging started" by push only (the
driver is standing at the charger).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.notifications.models import EventKind, NotificationPreference


@dataclass(frozen=True, slots=True)
class Choice:
    email: bool
    sms: bool
    push: bool


_E, _EP, _ESP, _P = (
    Choice(email=True, sms=False, push=False),
    Choice(email=True, sms=False, push=True),
    Choice(email=True, sms=True, push=True),
    Choice(email=False, sms=False, push=True),
)

DEFAULTS: dict[EventKind, Choice] = {
    EventKind.BOOKING_CONFIRMED: _EP,
    EventKind.BOOKING_PENDING: _ESP,
    EventKind.BOOKING_APPROVED: _EP,
    EventKind.BOOKING_DECLINED: _ESP,
    EventKind.BOOKING_CANCELLED: _ESP,
    EventKind.SESSION_STARTED: _P,
    EventKind.SESSION_STOPPED: _EP,
    EventKind.CHARGER_OFFLINE: _ESP,
    EventKind.PAYOUT_PAID: _E,
    EventKind.DISPUTE_UPDATED: _EP,
}


async def choices(db: AsyncSession, user_id: str) -> dict[EventKind, Choice]:
    """Every kind's channels for ``user_id``: their stored choice, else the default."""
    stored = {
        row.kind: Choice(email=row.email, sms=row.sms, push=row.push)
        for row in await db.scalars(
            select(NotificationPreference).where(NotificationPreference.user_id == user_id)
        )
    }
    return {kind: stored.get(kind, DEFAULTS[kind]) for kind in EventKind}
