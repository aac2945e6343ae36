"""Writing notification events into the outbox, in the caller's transaction.

A state change and the event that reports it commit together or not at all (the
transactional outbox): the caller passes the database session its change is in, and nothing
is sent here — the delivery job (:mod:`cloud.notifications.delivery`) does that later, with
retries, never inside a request. Ingest, which writes through asyncpg, uses the SQL of
:data:`INSERT_SESSION_EVENT` and :data:`INSERT_OFFLINE_EVENTS` in its own transaction.

The hooks the services call: :func:`booking_created`, :func:`booking_decided`,
:func:`booking_cancelled`, :func:`payout_paid` and :func:`dispute_updated` (the dispute
service, at each step of a dispute, once per person to tell).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Host, User
from cloud.bookings.models import Booking, BookingStatus
from cloud.chargers.models import Charger, PricingMode
from cloud.notifications.models import EventKind, NotificationEvent
from cloud.payments.models import Payout


async def record(
    db: AsyncSession,
    kind: EventKind,
    subject_id: str,
    *,
    user_id: str | None,
    facts: dict[str, Any],
    dedupe_key: str | None = None,
    not_before: datetime | None = None,
) -> None:
    """Queue one event in ``db``'s transaction. With ``dedupe_key``, a second event with the
    same key is dropped (a change replayed)."""
    values: dict[str, Any] = {
        "kind": kind,
        "subject_id": subject_id,
        "user_id": user_id,
        "facts": facts,
        "dedupe_key": dedupe_key,
    }
    if not_before is not None:
        values["not_before"] = not_before
    await db.execute(insert(NotificationEvent).values(**values).on_conflict_do_nothing())


def _booking_facts(booking: Booking, charger: Charger) -> dict[str, Any]:
    start, end = booking.period.lower, booking.period.upper
    assert start is not None
    assert end is not None
    return {
        "booking_id": booking.id,
        "charger_id": charger.id,
        "charger_name": charger.name,
        "address": f"{charger.address}, {charger.city}",
        "start": start.isoformat(),
        "end": end.isoformat(),
        "amount_paise": booking.amount_paise,
        "upper_bound": charger.pricing_mode is not PricingMode.PER_HOUR,
    }


def facts_end(facts: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(facts["end"])


async def _host_user(db: AsyncSession, charger: Charger) -> str:
    user_id = await db.scalar(select(Host.user_id).where(Host.id == charger.host_id))
    assert user_id is not None  # a foreign key
    return user_id


async def booking_created(db: AsyncSession, booking: Booking, charger: Charger) -> None:
    """A new booking: confirmed at once (instant book: its driver hears) or pending (its
    host is asked to decide before it lapses)."""
    facts = _booking_facts(booking, charger)
    if booking.status is BookingStatus.CONFIRMED:
        await record(
            db, EventKind.BOOKING_CONFIRMED, booking.id, user_id=booking.user_id, facts=facts
        )
        return
    driver = await db.scalar(select(User.name).where(User.id == booking.user_id))
    facts |= {
        "driver_name": driver or "A driver",
        # A pending booking always lapses at some point (cloud.bookings.service).
        "expires_at": (booking.expires_at or facts_end(facts)).isoformat(),
    }
    await record(
        db,
        EventKind.BOOKING_PENDING,
        booking.id,
        user_id=await _host_user(db, charger),
        facts=facts,
    )


async def booking_decided(db: AsyncSession, booking: Booking, charger: Charger) -> None:
    """The host approved or declined: its driver hears."""
    approved = booking.status is BookingStatus.CONFIRMED
    kind = EventKind.BOOKING_APPROVED if approved else EventKind.BOOKING_DECLINED
    await record(
        db, kind, booking.id, user_id=booking.user_id, facts=_booking_facts(booking, charger)
    )


async def booking_cancelled(db: AsyncSession, booking: Booking, charger: Charger) -> None:
    """A cancellation: the other side hears (the host when the driver cancels, the driver
    when the host does); both when an admin does."""
    facts = _booking_facts(booking, charger) | {
        "cancelled_by": booking.cancelled_by or "",
        "fee_paise": booking.cancellation_fee_paise,
    }
    audiences = {"driver": booking.user_id, "host": await _host_user(db, charger)}
    for audience, user_id in audiences.items():
        if booking.cancelled_by == audience:
            continue
        await record(
            db,
            EventKind.BOOKING_CANCELLED,
            booking.id,
            user_id=user_id,
            facts=facts | {"audience": audience},
        )


async def payout_paid(db: AsyncSession, payout: Payout) -> None:
    """A payout reached ``paid``: its host hears."""
    user_id = await db.scalar(select(Host.user_id).where(Host.id == payout.host_id))
    facts = {
        "payout_id": payout.id,
        "amount_paise": payout.amount_paise,
        "period_start": payout.period_start.isoformat(),
        "period_end": payout.period_end.isoformat(),
        "provider_ref": payout.provider_ref or "",
    }
    await record(
        db,
        EventKind.PAYOUT_PAID,
        payout.id,
        user_id=user_id,
        facts=facts,
        dedupe_key=f"payout_paid:{payout.id}",
    )


async def dispute_updated(
    db: AsyncSession,
    *,
    dispute_id: str,
    user_id: str,
    status_label: str,
    charger_name: str,
    note: str = "",
    refund_paise: int = 0,
    dedupe_key: str | None = None,
) -> None:
    """A dispute changed (opened, answered, resolved): ``user_id`` hears. Call once per
    person to tell, in the transaction of the change; ``status_label`` is what the message
    calls the new state ("resolved with a refund"), ``note`` an optional line to add."""
    facts = {
        "dispute_id": dispute_id,
        "status_label": status_label,
        "charger_name": charger_name,
        "note": note,
        "refund_paise": refund_paise,
    }
    await record(
        db,
        EventKind.DISPUTE_UPDATED,
        dispute_id,
        user_id=user_id,
        facts=facts,
        dedupe_key=dedupe_key,
    )


#: Ingest: a session the writer just folded. ``$1`` kind, ``$2`` the session's ``sessions.id``,
#: ``$3`` facts (JSON); the recipient (the driver) is found when the event is expanded.
#: Written once per session and kind, however often its events are redelivered.
INSERT_SESSION_EVENT = """
INSERT INTO notification_events (kind, subject_id, facts, dedupe_key)
VALUES ($1::text, $2::bigint::text, $3::jsonb, $1::text || ':' || $2::bigint::text)
ON CONFLICT (dedupe_key) DO NOTHING"""

#: Devices ``$1`` went offline while online: their Last Will or a status saying so (ingest;
#: ``$3`` NULL: now), or silence since ``$3``, their last status (cloud/devices/silence.py).
#: Each host hears if its device is still offline ``$2`` seconds after it went (checked when
#: the event is expanded). The charger is the device's listing, if it has one.
INSERT_OFFLINE_EVENTS = """
INSERT INTO notification_events (kind, subject_id, user_id, facts, not_before)
SELECT 'charger_offline', d.id, h.user_id,
       jsonb_build_object('device_id', d.id, 'offline_at', coalesce(o.at, now()),
           'charger_id', coalesce(c.id, ''), 'charger_name', coalesce(c.name, d.id)),
       greatest(now(), coalesce(o.at, now()) + make_interval(secs => $2))
FROM unnest($1::text[], $3::timestamptz[]) AS o(device_id, at)
JOIN devices d ON d.id = o.device_id
JOIN hosts h ON h.id = d.host_id
LEFT JOIN LATERAL (SELECT id, name FROM chargers WHERE device_id = d.id ORDER BY id LIMIT 1) c
  ON true"""
