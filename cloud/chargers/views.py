"""What a listing looks like to its readers: the public view, the host's view, and the
pieces they share (pricing, rating, connectors, photos, blocked periods, meter health)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Host, KycStatus
from cloud.chargers import schemas
from cloud.chargers.models import (
    AvailabilityWindow,
    BlockedPeriod,
    Charger,
    ChargerPhoto,
    Connector,
)
from cloud.devices.models import DeviceMeter


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
