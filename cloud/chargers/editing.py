"""A host creates and edits a listing: its location, pricing, cancellation rule, connectors,
device, weekly windows, availability and blocked periods."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import delete, exists, select
from sqlalchemy.dialects.postgresql import Range
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.tokens import Principal
from cloud.bookings.models import Booking
from cloud.chargers import qr, schemas
from cloud.chargers.access import (
    editable_charger,
    host_id_of,
)
from cloud.chargers.availability import ALWAYS_OPEN
from cloud.chargers.models import (
    AvailabilityWindow,
    BlockedPeriod,
    Charger,
    Connector,
    ModerationStatus,
)
from cloud.db_errors import refusals
from cloud.devices.models import Device, DeviceStatus
from cloud.errors import Conflict, DatabaseRefused, InvalidRequest, NotFound

#: Attempts at a fresh QR code before giving up (a collision among 10^12 codes is rare;
#: five in a row means something else is wrong).
QR_ATTEMPTS = 5


def _apply_location(charger: Charger, location: schemas.Location) -> None:
    charger.address = location.address
    charger.city = location.city
    charger.state = location.state
    charger.pincode = location.pincode
    charger.latitude = location.latitude
    charger.longitude = location.longitude


def _apply_pricing(charger: Charger, pricing: schemas.PricingIn) -> None:
    charger.pricing_mode = pricing.mode
    charger.price_per_kwh_paise = pricing.price_per_kwh_paise
    charger.price_per_hour_paise = pricing.price_per_hour_paise
    charger.session_fee_paise = pricing.session_fee_paise
    charger.min_charge_paise = pricing.min_charge_paise
    charger.idle_fee_per_min_paise = pricing.idle_fee_per_min_paise
    charger.idle_grace_min = pricing.idle_grace_min


def _apply_cancellation(charger: Charger, rule: schemas.CancellationIn) -> None:
    charger.free_cancel_before_min = rule.free_cancel_before_min
    charger.late_cancel_fee_paise = rule.late_cancel_fee_paise


def _dedupe(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


async def create_charger(
    db: AsyncSession, principal: Principal, body: schemas.ChargerCreate
) -> Charger:
    """A new listing of the caller's, ``pending`` until an admin approves it."""
    host_id = await host_id_of(db, principal)
    for _ in range(QR_ATTEMPTS):
        charger = Charger(
            host_id=host_id,
            name=body.name,
            description=body.description,
            amenities=_dedupe(body.amenities),
            instant_book=body.instant_book,
            is_listed=body.listed,
            moderation_status=ModerationStatus.PENDING,
            qr_code=qr.new_short_code(),
        )
        _apply_location(charger, body.location)
        _apply_pricing(charger, body.pricing)
        _apply_cancellation(charger, body.cancellation)
        try:
            # A savepoint, so a QR code collision costs one retry, not the transaction.
            with refusals():
                async with db.begin_nested():
                    db.add(charger)
                    await db.flush()
        except DatabaseRefused as exc:
            if exc.constraint != "uq_chargers_qr_code":
                raise
            continue
        break
    else:
        raise Conflict("could not allocate a unique QR code", entity="charger")
    for spec in body.connectors:
        db.add(_connector(charger.id, spec))
    windows = body.availability
    _replace_windows(
        db,
        charger.id,
        [(w.weekday, w.opens_at, w.closes_at) for w in windows]
        if windows is not None
        else [(w.weekday, w.opens_at, w.closes_at) for w in ALWAYS_OPEN],
    )
    await db.flush()
    return charger


def _connector(charger_id: str, spec: schemas.ConnectorIn) -> Connector:
    return Connector(
        charger_id=charger_id,
        number=spec.number,
        type=spec.type,
        current=spec.current,
        max_power_w=spec.max_power_w,
    )


def _replace_windows(
    db: AsyncSession, charger_id: str, windows: Sequence[tuple[int, object, object]]
) -> None:
    for weekday, opens_at, closes_at in windows:
        db.add(
            AvailabilityWindow(
                charger_id=charger_id, weekday=weekday, opens_at=opens_at, closes_at=closes_at
            )
        )


async def update_charger(
    db: AsyncSession, principal: Principal, charger_id: str, body: schemas.ChargerUpdate
) -> Charger:
    """Apply the fields given. A rejected listing that is edited goes back to ``pending``."""
    charger = await editable_charger(db, principal, charger_id, lock=True)
    if body.name is not None:
        charger.name = body.name
    if body.description is not None:
        charger.description = body.description
    if body.location is not None:
        _apply_location(charger, body.location)
    if body.pricing is not None:
        _apply_pricing(charger, body.pricing)
    if body.cancellation is not None:
        _apply_cancellation(charger, body.cancellation)
    if body.amenities is not None:
        charger.amenities = _dedupe(body.amenities)
    if body.instant_book is not None:
        charger.instant_book = body.instant_book
    if body.listed is not None:
        charger.is_listed = body.listed
    if body.device_id is not None:
        await _attach_device(db, charger, body.device_id)
    if body.connectors is not None:
        await _replace_connectors(db, charger.id, body.connectors)
    if charger.moderation_status is ModerationStatus.REJECTED:
        charger.moderation_status = ModerationStatus.PENDING
    await db.flush()
    return charger


async def _attach_device(db: AsyncSession, charger: Charger, device_id: str) -> None:
    device = await db.scalar(
        select(Device).where(
            Device.id == device_id,
            Device.host_id == charger.host_id,
            Device.status == DeviceStatus.ACTIVE,
        )
    )
    if device is None:
        # Someone else's device is as unknown to this host as a device that does not exist.
        raise InvalidRequest("no such active device of this host", field="device_id")
    charger.device_id = device.id


async def _replace_connectors(
    db: AsyncSession, charger_id: str, specs: Sequence[schemas.ConnectorIn]
) -> None:
    """Connectors keyed by number: kept ones are updated in place (bookings keep pointing at
    them), new ones added; a removed one must have no bookings at all."""
    current = {
        c.number: c
        for c in (await db.scalars(select(Connector).where(Connector.charger_id == charger_id)))
    }
    wanted = {s.number: s for s in specs}
    for number, connector in current.items():
        if number in wanted:
            spec = wanted[number]
            connector.type = spec.type
            connector.current = spec.current
            connector.max_power_w = spec.max_power_w
            continue
        booked = await db.scalar(select(exists().where(Booking.connector_id == connector.id)))
        if booked:
            raise Conflict(
                f"connector {number} has bookings and cannot be removed",
                entity="connector",
                key=number,
            )
        await db.delete(connector)
    for number, spec in wanted.items():
        if number not in current:
            db.add(_connector(charger_id, spec))


async def host_chargers(db: AsyncSession, principal: Principal) -> list[Charger]:
    host_id = await host_id_of(db, principal)
    return list(
        await db.scalars(
            select(Charger).where(Charger.host_id == host_id).order_by(Charger.created_at)
        )
    )


async def set_availability(
    db: AsyncSession, principal: Principal, charger_id: str, body: schemas.AvailabilityIn
) -> Charger:
    charger = await editable_charger(db, principal, charger_id, lock=True)
    await db.execute(delete(AvailabilityWindow).where(AvailabilityWindow.charger_id == charger.id))
    _replace_windows(db, charger.id, [(w.weekday, w.opens_at, w.closes_at) for w in body.windows])
    await db.flush()
    return charger


async def add_blocked_period(
    db: AsyncSession,
    principal: Principal,
    charger_id: str,
    body: schemas.BlockedPeriodIn,
    *,
    now: datetime,
) -> BlockedPeriod:
    charger = await editable_charger(db, principal, charger_id, lock=True)
    if body.end <= now:
        raise InvalidRequest("a blocked period must end in the future", field="end")
    row = BlockedPeriod(
        charger_id=charger.id,
        period=Range(body.start.astimezone(UTC), body.end.astimezone(UTC), bounds="[)"),
        reason=body.reason,
    )
    db.add(row)
    await db.flush()
    return row


async def delete_blocked_period(
    db: AsyncSession, principal: Principal, charger_id: str, period_id: int
) -> None:
    charger = await editable_charger(db, principal, charger_id, lock=True)
    result = await db.execute(
        delete(BlockedPeriod)
        .where(BlockedPeriod.id == period_id, BlockedPeriod.charger_id == charger.id)
        .returning(BlockedPeriod.id)
    )
    if result.first() is None:
        raise NotFound("blocked period", period_id)
