"""Development seed data beyond the demo accounts: the demo site's device and its listing.

``chargemitra-cloud seed-demo --device ID --pin-secret-file PATH`` calls :func:`seed_demo_site`
so that ``make demo`` is a working marketplace: the simulated site's agent (device ``ID``,
already holding broker credentials) belongs to the demo host, and one approved, listed,
instant-book charger with a 7.4 kW Type 2 connector points at it, open around the clock. The
driver demo account can then search, book and unlock it through the API. Idempotent: a second
run updates the device's PIN secret and leaves the listing as it is.
"""

from __future__ import annotations

from datetime import datetime, time

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Host, User
from cloud.chargers.availability import END_OF_DAY
from cloud.chargers.models import (
    AvailabilityWindow,
    Charger,
    Connector,
    CurrentType,
    ModerationStatus,
    PricingMode,
)
from cloud.chargers.qr import new_short_code
from cloud.devices.models import Device, DeviceStatus
from cloud.errors import NotFound
from protocols.enums import ConnectorType

DEMO_HOST_EMAIL = "host@demo.chargemitra.in"


async def seed_demo_site(
    db: AsyncSession, *, device_id: str, pin_secret: bytes, now: datetime
) -> str:
    """Attach ``device_id`` and a listed charger to the demo host; return the charger id."""
    host_id = await db.scalar(
        select(Host.id).join(User, User.id == Host.user_id).where(User.email == DEMO_HOST_EMAIL)
    )
    if host_id is None:
        raise NotFound("demo host", DEMO_HOST_EMAIL)
    device = await db.get(Device, device_id)
    if device is None:
        device = Device(id=device_id, host_id=host_id, agent_version="demo")
        db.add(device)
    device.host_id = host_id
    device.status = DeviceStatus.ACTIVE
    device.revoked_at = None
    device.pin_secret = pin_secret
    await db.flush()
    charger = await db.scalar(select(Charger).where(Charger.device_id == device_id))
    if charger is not None:
        return charger.id
    charger = Charger(
        host_id=host_id,
        device_id=device_id,
        name="Demo charger, Koramangala",
        description="A simulated 7.4 kW wallbox (make demo).",
        address="80 Feet Road, Koramangala 4th Block",
        city="Bengaluru",
        state="Karnataka",
        pincode="560034",
        latitude=12.9352,
        longitude=77.6245,
        pricing_mode=PricingMode.PER_KWH,
        price_per_kwh_paise=1800,
        min_charge_paise=2000,
        amenities=["parking", "cctv"],
        instant_book=True,
        moderation_status=ModerationStatus.APPROVED,
        is_listed=True,
        qr_code=new_short_code(),
    )
    db.add(charger)
    await db.flush()
    db.add(
        Connector(
            charger_id=charger.id,
            number=1,
            type=ConnectorType.TYPE_2,
            current=CurrentType.AC,
            max_power_w=7400,
        )
    )
    for weekday in range(7):
        db.add(
            AvailabilityWindow(
                charger_id=charger.id, weekday=weekday, opens_at=time(0, 0), closes_at=END_OF_DAY
            )
        )
    await db.flush()
    return charger.id
