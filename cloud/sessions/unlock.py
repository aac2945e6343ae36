"""``POST /chargers/{id}/sessions``: a driver starts charging (QR unlock).

The checks, in order (each failure is one problem answer, see docs/cloud.md):

1. the charger is approved and has the connector → else 404; a signing key is configured
   → else 503; the charger has a device → else 503 ``charger-offline``;
2. the booking: a named booking must be the driver's, confirmed, for this charger and
   connector, with ``now`` in ``[start - BOOKING_EARLY_S, end)`` → else 409
   ``booking-not-active``. Without one (pay-as-you-go) the driver's own booking covering now
   is used if there is one; otherwise nobody else's active booking may overlap
   ``[now, now + PAYG_CLEAR_AHEAD_S)`` → else 409 ``connector-held``; a booking of a
   non-zero amount must be paid (:mod:`cloud.payments.checkout`) → else 402
   ``payment-required``, before any PIN is shown;
3. the device is online (its last status said online, heard within
   ``device_offline_after_s``). If not: a booked driver gets the booking PIN for the keypad
   (202, ``outcome: offline``); pay-as-you-go gets 503 ``charger-offline``;
4. a single-use unlock token (``jti`` new, bound to the device id and connector, valid for
   ``start_command_ttl_s``) goes to the agent inside a ``start_session`` command with the
   same expiry; the API waits up to ``unlock_wait_s`` for the agent's answer: accepted →
   201 with the session id; refused → 409 ``unlock-refused`` with the agent's status; no
   answer → 504 ``charger-no-answer`` (with the PIN when booked: the command may still run
   until it expires, and the keypad is the driver's fallback). A walk-up (no booking) needs
   its prepayment before the command is recorded → else 402 ``payment-required``.

Every attempt leaves an :class:`~cloud.sessions.models.UnlockRequest`: its ``token_jti`` is
the credential reference the agent reports in its session events (the token's ``jti``, or
for the offline path the PIN's reference), which is how a device session is tied back to its
driver, booking and charger (:mod:`cloud.sessions.service`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, func, select, update
from sqlalchemy.dialects.postgresql import Range, insert
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.tokens import Principal
from cloud.bookings.models import ACTIVE_BOOKING_STATUSES, Booking, BookingStatus
from cloud.bookings.pins import booking_pin
from cloud.chargers.models import Charger, Connector, ModerationStatus
from cloud.devices.models import Device
from cloud.devices.presence import device_online
from cloud.errors import (
    BookingNotActive,
    ChargerNoAnswer,
    ChargerOffline,
    ConnectorHeld,
    DependencyUnavailable,
    NotFound,
    UnlockRefused,
)
from cloud.payments.checkout import require_booking_paid, require_walkup_paid
from cloud.sessions.commands import record_command, send_and_wait
from cloud.sessions.models import ChargingSession, UnlockOutcome, UnlockRequest
from cloud.sessions.schemas import UnlockOffline, UnlockStarted
from cloud.state import AppState
from protocols.enums import CommandStatus
from protocols.ids import new_ulid
from protocols.messages import CommandResult, StartSession
from protocols.pins import BookingPin, pin_ref
from protocols.tokens import UnlockClaims, sign_unlock_token

log = logging.getLogger(__name__)

#: A booked driver may start this long before the booking (the agent's PIN check allows the
#: same ``early`` margin: protocols.pins.verify_pin).
BOOKING_EARLY_S = 600
#: Pay-as-you-go needs the connector free of other drivers' bookings this far ahead.
PAYG_CLEAR_AHEAD_S = 900


@dataclass(frozen=True, slots=True)
class UnlockTarget:
    charger: Charger
    connector: Connector
    device: Device | None
    booking: Booking | None


async def resolve_target(
    db: AsyncSession,
    principal: Principal,
    *,
    charger_id: str,
    connector_number: int,
    booking_id: str | None,
    now: datetime,
) -> UnlockTarget:
    charger = await db.get(Charger, charger_id)
    if charger is None or charger.moderation_status is not ModerationStatus.APPROVED:
        raise NotFound("charger", charger_id)
    connector = await db.scalar(
        select(Connector).where(
            Connector.charger_id == charger_id, Connector.number == connector_number
        )
    )
    if connector is None:
        raise NotFound("connector", f"{charger_id}#{connector_number}")
    device = None if charger.device_id is None else await db.get(Device, charger.device_id)
    booking = await _booking(
        db, principal, charger=charger, connector=connector, booking_id=booking_id, now=now
    )
    return UnlockTarget(charger, connector, device, booking)


async def _booking(
    db: AsyncSession,
    principal: Principal,
    *,
    charger: Charger,
    connector: Connector,
    booking_id: str | None,
    now: datetime,
) -> Booking | None:
    early = timedelta(seconds=BOOKING_EARLY_S)
    if booking_id is not None:
        booking = await db.get(Booking, booking_id)
        if booking is None or booking.user_id != principal.user_id:
            raise NotFound("booking", booking_id)
        if booking.charger_id != charger.id or booking.connector_id != connector.id:
            raise BookingNotActive(booking_id, f"is not for connector {connector.number} here")
        if booking.status is not BookingStatus.CONFIRMED:
            raise BookingNotActive(booking_id, f"is {booking.status.value}, not confirmed")
        start, end = booking.period.lower, booking.period.upper
        if start is not None and now < start - early:
            raise BookingNotActive(booking_id, f"starts at {start.isoformat()}")
        if end is not None and now >= end:
            raise BookingNotActive(booking_id, f"ended at {end.isoformat()}")
        return booking
    # Pay-as-you-go: the driver's own booking covering now counts (they may not know its id).
    own = await db.scalar(
        select(Booking)
        .where(
            Booking.connector_id == connector.id,
            Booking.user_id == principal.user_id,
            Booking.status == BookingStatus.CONFIRMED,
            Booking.period.overlaps(Range(now, now + early, bounds="[)")),
            func.upper(Booking.period) > now,
        )
        .order_by(func.lower(Booking.period))
        .limit(1)
    )
    if own is not None:
        return own
    held = await db.scalar(
        select(func.count())
        .select_from(Booking)
        .where(
            Booking.connector_id == connector.id,
            Booking.user_id != principal.user_id,
            Booking.status.in_(ACTIVE_BOOKING_STATUSES),
            Booking.period.overlaps(
                Range(now, now + timedelta(seconds=PAYG_CLEAR_AHEAD_S), bounds="[)")
            ),
        )
    )
    if held:
        raise ConnectorHeld(charger.id, connector.number)
    return None


async def target_pin(
    db: AsyncSession, device: Device | None, target: UnlockTarget
) -> BookingPin | None:
    """The keypad PIN for the target's booking, if the device holds a PIN secret
    (:func:`cloud.bookings.pins.booking_pin`: bound to the booking, recorded on it)."""
    booking = target.booking
    if booking is None or device is None or device.pin_secret is None:
        return None
    return await booking_pin(
        db,
        booking,
        device_id=device.id,
        connector=target.connector.number,
        secret=bytes(device.pin_secret),
    )


async def unlock(
    state: AppState,
    principal: Principal,
    *,
    charger_id: str,
    connector_number: int,
    booking_id: str | None,
    now: datetime,
) -> UnlockStarted | UnlockOffline:
    settings = state.settings.marketplace
    signer = state.unlock_signer
    # One short transaction: check, record the unlock and the command, take the seq; the
    # wait for the agent happens after the commit.
    async with state.sessions() as db, db.begin():
        target = await resolve_target(
            db,
            principal,
            charger_id=charger_id,
            connector_number=connector_number,
            booking_id=booking_id,
            now=now,
        )
        if signer is None:
            raise DependencyUnavailable("unlock-signer", "no unlock-token private key")
        if target.booking is not None:
            # Paid before the relay closes, or the PIN is shown (402 otherwise).
            await require_booking_paid(db, target.booking)
        device = target.device
        if device is None:
            raise ChargerOffline(charger_id)
        offline: UnlockOffline | str | None = None
        if not device_online(device, now, settings.device_offline_after_s):
            offline = await _offline(db, principal, target, device)
        elif not state.broker.connected:
            # Refuse before recording anything: no command could leave. (The offline path
            # above needs no broker: the PIN is computed here.)
            raise DependencyUnavailable("broker", "the API is not connected to the MQTT broker")
        else:
            if target.booking is None:
                # A walk-up: its prepayment first (after the offline answer, which is a 503
                # for a walk-up whatever was paid).
                await require_walkup_paid(db, principal.user_id)
            unlock_id, jti = new_ulid(), new_ulid()
            bid = target.booking.id if target.booking else None
            ttl_s = settings.start_command_ttl_s
            claims = UnlockClaims(
                charger_id=device.id,
                connector=connector_number,
                user_ref=principal.user_id,
                jti=jti,
                nbf=now,
                exp=now + timedelta(seconds=ttl_s),
                booking_id=bid,
                session_intent_id=None if bid else unlock_id,
            )
            action = StartSession(
                connector=connector_number, token=sign_unlock_token(signer, claims)
            )
            prepared = await record_command(db, device.id, action, now=now, ttl_s=ttl_s)
            cmd_id = prepared.command.cmd_id
            db.add(
                UnlockRequest(
                    id=unlock_id,
                    user_id=principal.user_id,
                    charger_id=charger_id,
                    connector_number=connector_number,
                    booking_id=bid,
                    device_id=device.id,
                    token_jti=jti,
                    cmd_id=cmd_id,
                )
            )
            pin = await target_pin(db, device, target)
    if isinstance(offline, str):  # the refusal is recorded (committed); no PIN to offer
        raise ChargerOffline(charger_id, unlock_id=offline)
    if offline is not None:
        return offline
    result = await send_and_wait(state, prepared, wait_s=settings.unlock_wait_s)
    return await _answer(
        state,
        principal,
        unlock_id=unlock_id,
        cmd_id=cmd_id,
        charger_id=charger_id,
        result=result,
        pin=pin,
    )


async def record_pin_unlock(
    db: AsyncSession,
    *,
    user_id: str,
    charger_id: str,
    device_id: str,
    connector: int,
    booking_id: str,
    pin: str,
) -> UnlockRequest:
    """The unlock record of a booking PIN handed to its driver, keyed by the reference the
    agent reports for a session the PIN starts (:func:`protocols.pins.pin_ref`): that is how
    such a session finds its driver.

    One record per PIN (the reference is the unique ``token_jti``): asking again returns the
    same unlock, and two requests at once cannot both insert it.
    """
    ref = pin_ref(pin, device_id, connector)
    await db.execute(
        insert(UnlockRequest)
        .values(
            id=new_ulid(),
            user_id=user_id,
            charger_id=charger_id,
            connector_number=connector,
            booking_id=booking_id,
            device_id=device_id,
            token_jti=ref,
            outcome=UnlockOutcome.OFFLINE,
            resolved_at=func.now(),
        )
        .on_conflict_do_nothing(index_elements=[UnlockRequest.token_jti])
    )
    row = await db.scalar(
        select(UnlockRequest)
        .where(UnlockRequest.token_jti == ref)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    assert row is not None
    if row.booking_id != booking_id:
        # A PIN is bound to its booking (its nonce, cloud.bookings.pins), so two bookings
        # should never share a reference; should they, the booking asking now is served.
        row.user_id = user_id
        row.booking_id = booking_id
    return row


async def _offline(
    db: AsyncSession, principal: Principal, target: UnlockTarget, device: Device
) -> UnlockOffline | str:
    """The PIN answer for a booked driver; otherwise the id of the recorded refusal."""
    pin = await target_pin(db, device, target)
    charger_id = target.charger.id
    if pin is None or target.booking is None:
        unlock_id = new_ulid()
        db.add(
            UnlockRequest(
                id=unlock_id,
                user_id=principal.user_id,
                charger_id=charger_id,
                connector_number=target.connector.number,
                booking_id=target.booking.id if target.booking else None,
                device_id=device.id,
                token_jti=new_ulid(),
                outcome=UnlockOutcome.OFFLINE,
                resolved_at=func.now(),
            )
        )
        # The caller answers 503 after the commit: raising here would roll the record back.
        return unlock_id
    booking_id = target.booking.id
    existing = await record_pin_unlock(
        db,
        user_id=principal.user_id,
        charger_id=charger_id,
        device_id=device.id,
        connector=target.connector.number,
        booking_id=booking_id,
        pin=pin.pin,
    )
    return UnlockOffline(
        unlock_id=existing.id,
        charger_id=charger_id,
        connector=target.connector.number,
        booking_id=booking_id,
        pin=pin.pin,
        pin_valid_from=pin.valid_from,
        pin_valid_until=pin.valid_until,
    )


async def _answer(
    state: AppState,
    principal: Principal,
    *,
    unlock_id: str,
    cmd_id: str,
    charger_id: str,
    result: CommandResult | None,
    pin: BookingPin | None,
) -> UnlockStarted:
    async with state.sessions() as db, db.begin():
        request = await db.get(UnlockRequest, unlock_id, with_for_update=True)
        assert request is not None
        assert request.device_id is not None  # an online unlock names its device
        request.resolved_at = func.now()
        if result is None:
            request.outcome = UnlockOutcome.TIMEOUT
            if pin is not None and request.booking_id is not None:
                # The answer offers the keypad PIN: a session it starts is this driver's too.
                await record_pin_unlock(
                    db,
                    user_id=request.user_id,
                    charger_id=charger_id,
                    device_id=request.device_id,
                    connector=request.connector_number,
                    booking_id=request.booking_id,
                    pin=pin.pin,
                )
        elif result.status is CommandStatus.ACCEPTED and result.session_id is not None:
            request.outcome = UnlockOutcome.STARTED
            request.device_session_id = result.session_id
            request.agent_status = (result.auth_status or result.status).value
            # Tie the device session to its driver now if ingest already has the row (the
            # service's join on the token's jti covers the row arriving later).
            await db.execute(
                update(ChargingSession)
                .where(
                    and_(
                        ChargingSession.device_id == request.device_id,
                        ChargingSession.device_session_id == result.session_id,
                        ChargingSession.user_id.is_(None),
                    )
                )
                .values(
                    user_id=request.user_id,
                    charger_id=func.coalesce(ChargingSession.charger_id, charger_id),
                    booking_id=func.coalesce(ChargingSession.booking_id, request.booking_id),
                )
            )
        else:
            request.outcome = UnlockOutcome.REFUSED
            request.agent_status = (result.auth_status or result.status).value
        outcome = request.outcome
        connector, booking_id = request.connector_number, request.booking_id
        agent_status = request.agent_status
    if result is None:
        raise ChargerNoAnswer(
            charger_id, cmd_id=cmd_id, unlock_id=unlock_id, pin=pin.pin if pin else None
        )
    if outcome is not UnlockOutcome.STARTED:
        raise UnlockRefused(
            f"the charger refused the unlock: {result.detail or agent_status}",
            command_status=result.status.value,
            agent_status=agent_status,
            unlock_id=unlock_id,
            cmd_id=cmd_id,
        )
    assert result.session_id is not None
    log.info(
        "unlock started",
        extra={"unlock_id": unlock_id, "charger_id": charger_id, "user_id": principal.user_id},
    )
    return UnlockStarted(
        unlock_id=unlock_id,
        session_id=result.session_id,
        charger_id=charger_id,
        connector=connector,
        booking_id=booking_id,
        agent_status=agent_status,
    )
