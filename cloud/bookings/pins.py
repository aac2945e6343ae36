"""A booking's keypad PIN: issued bound to the booking, revoked when the booking dies.

**Issue.** A PIN (:mod:`protocols.pins`) covers exactly its booking's window and carries a
``nonce`` that tells apart bookings of the same connector and window: a booking takes the
first nonce no other booking of that window holds (and whose PIN reference is not taken),
kept in ``bookings.pin_nonce``. So the driver who books a cancelled slot again gets another
PIN, and the cancelled one stays revoked. The PIN is recomputed whenever it is shown (create,
reveal, the unlock's offline answer); ``bookings.pin_ref`` keeps its reference
(:func:`protocols.pins.pin_ref`), which is what the agent reports for a session the PIN
starts — :mod:`cloud.sessions.service` finds the booking and driver of such a session by it.

**Revoke.** When a booking that has a PIN is cancelled or declined, :func:`revocation`
records a ``revoke_pins`` command in the same transaction, carrying every revoked PIN of that
device whose window has not ended (so a revocation lost on the way is repaired by the next),
and :func:`send_revocation` publishes it after the commit: QoS 1 with a message expiry at the
end of the latest window, so a charger that is away gets it from its persistent session when
it reconnects. It is a deferred command (``device_commands.sent_at`` NULL until the broker
acknowledged it): if the API dies between the commit and the publish, or the broker link is
down or refuses it, the republish job (:mod:`cloud.sessions.republish`) publishes it. The
agent stores the references and refuses those PINs from then on, offline too.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.bookings.models import Booking, BookingStatus
from cloud.chargers.models import Charger
from cloud.errors import BrokerError
from cloud.sessions.commands import PreparedCommand, record_command
from cloud.sessions.republish import mark_sent
from cloud.state import AppState
from protocols.enums import MessageKind
from protocols.errors import CredentialError
from protocols.messages import RevokedPin, RevokePins
from protocols.pins import NONCES, BookingPin, issue_pin, pin_ref
from protocols.topics import topic

log = logging.getLogger(__name__)

#: Statuses whose PIN must no longer start a session (completed: its session was billed and
#: the rest of its window is free for others, cloud/bookings/completion.py).
REVOKED_STATUSES = (BookingStatus.CANCELLED, BookingStatus.DECLINED, BookingStatus.COMPLETED)
#: A revocation command lives at least this long, even for a window ending sooner.
MIN_REVOCATION_TTL_S = 60
#: Most revocations one command carries (the wire's bound), latest windows first.
MAX_REVOCATIONS = 2000


def _bounds(booking: Booking) -> tuple[datetime, datetime]:
    start, end = booking.period.lower, booking.period.upper
    if start is None or end is None:  # the schema never stores an unbounded period
        raise AssertionError(f"booking {booking.id} has an unbounded period")
    return start, end


async def booking_pin(
    db: AsyncSession, booking: Booking, *, device_id: str, connector: int, secret: bytes
) -> BookingPin | None:
    """The keypad PIN of ``booking`` on ``device_id``/``connector``, its nonce and reference
    recorded on the booking (in ``db``'s transaction); None when none can be issued (twenty
    bookings of this exact window already hold every nonce)."""
    start, end = _bounds(booking)
    if booking.pin_nonce is not None:
        candidates: list[int] = [booking.pin_nonce]
    else:
        held = set(
            await db.scalars(
                select(Booking.pin_nonce).where(
                    Booking.connector_id == booking.connector_id,
                    Booking.period == booking.period,
                    Booking.id != booking.id,
                    Booking.pin_nonce.is_not(None),
                )
            )
        )
        candidates = [n for n in range(NONCES) if n not in held]
    for nonce in candidates:
        try:
            pin = issue_pin(secret, device_id, connector, start, end, nonce=nonce)
        except CredentialError as exc:  # a window the PIN format cannot express
            log.warning("no PIN for booking %s: %s", booking.id, exc)
            return None
        ref = pin_ref(pin.pin, device_id, connector)
        taken = await db.scalar(
            select(Booking.id).where(Booking.pin_ref == ref, Booking.id != booking.id)
        )
        if taken is None:
            booking.pin_nonce, booking.pin_ref = nonce, ref
            return pin
    log.warning("no PIN for booking %s: every nonce of its window is taken", booking.id)
    return None


async def revocation(
    db: AsyncSession, booking: Booking, *, now: datetime
) -> PreparedCommand | None:
    """The ``revoke_pins`` command for ``booking``'s device if the booking (just cancelled or
    declined) has a PIN; recorded in ``db``'s transaction, to send after its commit."""
    if booking.pin_ref is None or booking.status not in REVOKED_STATUSES:
        return None
    device_id = await db.scalar(select(Charger.device_id).where(Charger.id == booking.charger_id))
    if device_id is None:
        return None
    ends = func.upper(Booking.period)
    rows = (
        await db.execute(
            select(Booking.pin_ref, ends)
            .join(Charger, Charger.id == Booking.charger_id)
            .where(
                Charger.device_id == device_id,
                Booking.pin_ref.is_not(None),
                Booking.status.in_(REVOKED_STATUSES),
                ends > now,
            )
            .order_by(ends.desc())
            .limit(MAX_REVOCATIONS)
        )
    ).all()
    pins = [RevokedPin(ref=ref, until=until) for ref, until in rows if ref is not None]
    if not pins:  # the booking's own window is over: its PIN is dead anyway
        return None
    latest = max(p.until for p in pins)
    ttl_s = max(MIN_REVOCATION_TTL_S, int((latest - now).total_seconds()) + 1)
    return await record_command(
        db, device_id, RevokePins(pins=pins), now=now, ttl_s=ttl_s, deferred=True
    )


async def send_revocation(state: AppState, prepared: PreparedCommand | None) -> None:
    """Publish a committed revocation and, once the broker acknowledged it (PUBACK), record
    that it was sent. The charger's answer is not waited for: it may be away, and the broker
    keeps the command for the charger's persistent session until it expires. Without a
    broker connection (or its PUBACK) it stays unsent, for the republish job."""
    if prepared is None:
        return
    command = prepared.command
    try:
        await state.broker.publish(
            topic(command.device_id, MessageKind.CMD), prepared.payload, expiry_s=prepared.ttl_s
        )
    except BrokerError as exc:
        # Recorded, not sent: the republish job sends it (cloud/sessions/republish.py).
        log.warning("revocation %s not published: %s", command.cmd_id, exc)
        return
    async with state.sessions() as db, db.begin():
        await mark_sent(db, command.cmd_id, datetime.now(UTC))
