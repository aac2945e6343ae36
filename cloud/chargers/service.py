"""Listings: a host creates and edits chargers, admins moderate them, anyone reads approved ones.

Who may touch a row is decided here, by the queries themselves: :func:`editable_charger`
finds a charger only among the caller's own (admins: any), so another host's charger is
"not found" — its existence is not revealed. :func:`public_charger` finds only approved,
listed chargers.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from sqlalchemy import delete, exists, select
from sqlalchemy.dialects.postgresql import Range
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Host, KycStatus, Role
from cloud.accounts.tokens import Principal
from cloud.audit.service import Actor, record
from cloud.bookings.models import Booking
from cloud.chargers import qr, schemas
from cloud.chargers.availability import ALWAYS_OPEN
from cloud.chargers.models import (
    AvailabilityWindow,
    BlockedPeriod,
    Charger,
    ChargerPhoto,
    Connector,
    ModerationStatus,
)
from cloud.db_errors import refusals
from cloud.devices.models import Device, DeviceMeter, DeviceStatus
from cloud.errors import Conflict, DatabaseRefused, Forbidden, InvalidRequest, NotFound

#: Attempts at a fresh QR code before giving up (a collision among 10^12 codes is rare;
#: five in a row means something else is wrong).
QR_ATTEMPTS = 5


# --- who may touch what ----------------------------------------------------------------------


async def host_id_of(db: AsyncSession, principal: Principal) -> str:
    """The caller's host profile id; :class:`Forbidden` for a user without one."""
    host_id = await db.scalar(select(Host.id).where(Host.user_id == principal.user_id))
    if host_id is None:
        raise Forbidden("this account has no host profile")
    return host_id


async def editable_charger(
    db: AsyncSession, principal: Principal, charger_id: str, *, lock: bool = False
) -> Charger:
    """The charger if the caller owns it (or is an admin); :class:`NotFound` otherwise."""
    query = select(Charger).where(Charger.id == charger_id)
    if not principal.has(Role.ADMIN):
        query = query.join(Host, Host.id == Charger.host_id).where(
            Host.user_id == principal.user_id
        )
    if lock:
        query = query.with_for_update(of=Charger)
    charger = await db.scalar(query)
    if charger is None:
        raise NotFound("charger", charger_id)
    return charger


def visible(charger: Charger) -> bool:
    return charger.moderation_status is ModerationStatus.APPROVED and charger.is_listed


async def public_charger(db: AsyncSession, charger_id: str) -> Charger:
    charger = await db.get(Charger, charger_id)
    if charger is None or not visible(charger):
        raise NotFound("charger", charger_id)
    return charger


async def charger_by_code(db: AsyncSession, code: str) -> Charger:
    canonical = qr.normalize_short_code(code)
    charger = None
    if canonical is not None:
        charger = await db.scalar(select(Charger).where(Charger.qr_code == canonical))
    if charger is None or not visible(charger):
        raise NotFound("charger", code)
    return charger


async def photo_readable(db: AsyncSession, principal: Principal | None, photo_id: str) -> bool:
    """Whether ``principal`` (or an anonymous caller) may see this photo's bytes."""
    row = (
        await db.execute(
            select(Charger, ChargerPhoto.id)
            .join(ChargerPhoto, ChargerPhoto.charger_id == Charger.id)
            .where(ChargerPhoto.id == photo_id)
        )
    ).first()
    if row is None:
        return False
    charger: Charger = row[0]
    if visible(charger):
        return True
    if principal is None:
        return False
    try:
        await editable_charger(db, principal, charger.id)
    except NotFound:
        return False
    return True


# --- create and edit -------------------------------------------------------------------------


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


# --- availability ----------------------------------------------------------------------------


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


# --- moderation ------------------------------------------------------------------------------

#: Which moderation decisions may follow which state.
_TRANSITIONS: dict[ModerationStatus, frozenset[ModerationStatus]] = {
    ModerationStatus.APPROVED: frozenset(
        {ModerationStatus.PENDING, ModerationStatus.REJECTED, ModerationStatus.SUSPENDED}
    ),
    ModerationStatus.REJECTED: frozenset({ModerationStatus.PENDING}),
    ModerationStatus.SUSPENDED: frozenset({ModerationStatus.APPROVED}),
}


async def moderate(
    db: AsyncSession, charger_id: str, decision: ModerationStatus, note: str | None, actor: Actor
) -> Charger:
    """An admin's decision, audited (``charger.approved`` …); callers have checked the
    admin role."""
    charger = await db.scalar(select(Charger).where(Charger.id == charger_id).with_for_update())
    if charger is None:
        raise NotFound("charger", charger_id)
    allowed_from = _TRANSITIONS.get(decision, frozenset())
    if charger.moderation_status not in allowed_from:
        raise Conflict(
            f"a {charger.moderation_status.value} listing cannot become {decision.value}",
            entity="charger",
            key=charger_id,
        )
    before = {"moderation_status": charger.moderation_status, "note": charger.moderation_note}
    charger.moderation_status = decision
    charger.moderation_note = note
    await db.flush()
    await record(
        db,
        actor,
        action=f"charger.{decision.value}",
        entity="charger",
        entity_id=charger.id,
        before=before,
        after={"moderation_status": decision, "note": note},
    )
    return charger


async def moderation_queue(
    db: AsyncSession, status: ModerationStatus, *, limit: int
) -> list[Charger]:
    return list(
        await db.scalars(
            select(Charger)
            .where(Charger.moderation_status == status)
            .order_by(Charger.created_at, Charger.id)
            .limit(limit)
        )
    )


# --- views -----------------------------------------------------------------------------------


def pricing_out(c: Charger) -> schemas.PricingOut:
    return schemas.PricingOut(
        mode=c.pricing_mode,
        price_per_kwh_paise=c.price_per_kwh_paise,
        price_per_hour_paise=c.price_per_hour_paise,
        session_fee_paise=c.session_fee_paise,
        min_charge_paise=c.min_charge_paise,
        idle_fee_per_min_paise=c.idle_fee_per_min_paise,
        idle_grace_min=c.idle_grace_min,
    )


def rating_out(rating_sum: int, rating_count: int) -> schemas.RatingOut:
    average = round(rating_sum / rating_count, 2) if rating_count else None
    return schemas.RatingOut(average=average, count=rating_count)


def connector_out(k: Connector) -> schemas.ConnectorOut:
    return schemas.ConnectorOut(
        number=k.number, type=k.type, current=k.current, max_power_w=k.max_power_w
    )


def photo_url(charger_id: str, photo_id: str) -> str:
    return f"/chargers/{charger_id}/photos/{photo_id}"


async def connectors_of(db: AsyncSession, charger_id: str) -> list[Connector]:
    return list(
        await db.scalars(
            select(Connector).where(Connector.charger_id == charger_id).order_by(Connector.number)
        )
    )


async def public_view(db: AsyncSession, charger: Charger) -> schemas.ChargerPublic:
    photos = await db.scalars(
        select(ChargerPhoto)
        .where(ChargerPhoto.charger_id == charger.id)
        .order_by(ChargerPhoto.created_at, ChargerPhoto.id)
    )
    windows = await db.scalars(
        select(AvailabilityWindow)
        .where(AvailabilityWindow.charger_id == charger.id)
        .order_by(AvailabilityWindow.weekday, AvailabilityWindow.opens_at)
    )
    return schemas.ChargerPublic(
        id=charger.id,
        name=charger.name,
        description=charger.description,
        address=charger.address,
        city=charger.city,
        state=charger.state,
        pincode=charger.pincode,
        latitude=charger.latitude,
        longitude=charger.longitude,
        timezone=charger.timezone,
        connectors=[connector_out(k) for k in await connectors_of(db, charger.id)],
        pricing=pricing_out(charger),
        cancellation=schemas.CancellationOut(
            free_cancel_before_min=charger.free_cancel_before_min,
            late_cancel_fee_paise=charger.late_cancel_fee_paise,
        ),
        amenities=list(charger.amenities),
        instant_book=charger.instant_book,
        rating=rating_out(charger.rating_sum, charger.rating_count),
        verified_host=await db.scalar(
            select(Host.kyc_status == KycStatus.VERIFIED).where(Host.id == charger.host_id)
        )
        is True,
        qr_code=charger.qr_code,
        photos=[
            schemas.PhotoOut(
                id=p.id,
                content_type=p.content_type,
                size_bytes=p.size_bytes,
                url=photo_url(charger.id, p.id),
            )
            for p in photos
        ],
        availability=schemas.AvailabilityOut(
            timezone=charger.timezone,
            windows=[
                schemas.WindowOut(weekday=w.weekday, opens_at=w.opens_at, closes_at=w.closes_at)
                for w in windows
            ],
        ),
    )


def blocked_out(row: BlockedPeriod, zone: ZoneInfo) -> schemas.BlockedPeriodOut:
    start, end = row.period.lower, row.period.upper
    assert start is not None
    assert end is not None  # the API only writes bounded periods
    return schemas.BlockedPeriodOut(
        id=row.id,
        start=start,
        end=end,
        start_local=start.astimezone(zone).isoformat(),
        end_local=end.astimezone(zone).isoformat(),
        reason=row.reason,
    )


async def meter_health(db: AsyncSession, device_id: str | None) -> list[schemas.MeterHealthOut]:
    """The attached device's meters as its latest status reported them (ingest writes them)."""
    if device_id is None:
        return []
    rows = await db.scalars(
        select(DeviceMeter).where(DeviceMeter.device_id == device_id).order_by(DeviceMeter.meter_id)
    )
    return [
        schemas.MeterHealthOut(
            meter_id=m.meter_id,
            model=m.model,
            available=m.available,
            errors=m.errors,
            consecutive_errors=m.consecutive_errors,
            last_error=m.last_error,
            last_good_at=m.last_good_at,
            unavailable_blocks=list(m.unavailable_blocks),
            reported_at=m.reported_at,
        )
        for m in rows
    ]


async def host_view(db: AsyncSession, charger: Charger) -> schemas.ChargerHostView:
    public = await public_view(db, charger)
    zone = ZoneInfo(charger.timezone)
    blocked = await db.scalars(
        select(BlockedPeriod)
        .where(BlockedPeriod.charger_id == charger.id)
        .order_by(BlockedPeriod.period)
    )
    await db.refresh(charger, ["created_at", "updated_at"])
    return schemas.ChargerHostView(
        **public.model_dump(),
        host_id=charger.host_id,
        device_id=charger.device_id,
        meters=await meter_health(db, charger.device_id),
        listed=charger.is_listed,
        moderation_status=charger.moderation_status,
        moderation_note=charger.moderation_note,
        blocked_periods=[blocked_out(b, zone) for b in blocked],
        created_at=charger.created_at,
        updated_at=charger.updated_at,
    )
