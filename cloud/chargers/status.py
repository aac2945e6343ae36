"""A charger's live status and its telemetry charts.

* Online: :func:`cloud.devices.presence.device_online` (the device's last status said online
  and it was heard from within ``marketplace.device_offline_after_s``). A charger without a
  device is offline.
* Connector state: the stored state (ingest applies each status message), shown as
  ``Unavailable`` while the device is offline, because a stored ``Available`` from an agent
  that went silent is a promise nobody can keep.
* Last reading: per meter named in the device's last status (or for the device as a whole),
  the newest ``power_w`` and ``energy_import_wh`` through :mod:`cloud.telemetry.queries`.

Charts (``GET /chargers/{id}/telemetry``) are for the owner and admins only: a driver sees the
live status above, but a host's consumption history is theirs. Buckets come from a fixed list
and a request covers at most :data:`MAX_CHART_RANGE` and :data:`MAX_POINTS` buckets, so one
call reads a bounded number of raw rows.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cloud.chargers import schemas
from cloud.chargers.models import Charger
from cloud.chargers.views import connectors_of
from cloud.devices.models import Device
from cloud.devices.presence import device_online
from cloud.errors import Conflict, InvalidRequest
from cloud.telemetry import queries
from cloud.telemetry.storage import TelemetryBackend
from protocols.enums import ConnectorStatus
from protocols.meters.quantities import Quantity

BUCKETS: dict[str, timedelta] = {
    "1m": timedelta(minutes=1),
    "5m": timedelta(minutes=5),
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "1d": timedelta(days=1),
}
MAX_CHART_RANGE = timedelta(days=31)
MAX_POINTS = 1500
#: Readings older than this are not "last readings" any more.
LAST_READING_MAX_AGE = timedelta(days=1)
#: Meters the live view reports at most (a status names at most 32).
MAX_METERS = 8


def _meter_ids(last_status: dict[str, Any] | None) -> list[str | None]:
    meters = (last_status or {}).get("meters") or []
    ids = [m.get("meter_id") for m in meters if isinstance(m, dict)]
    named = sorted({i for i in ids if isinstance(i, str)})[:MAX_METERS]
    return list(named) if named else [None]


async def live_status(
    db: AsyncSession, charger: Charger, *, now: datetime, offline_after_s: int
) -> schemas.ChargerStatusOut:
    return await live_state(
        db, charger.id, charger.device_id, now=now, offline_after_s=offline_after_s
    )


async def live_state(
    db: AsyncSession,
    charger_id: str,
    device_id: str | None,
    *,
    now: datetime,
    offline_after_s: int,
    readings: bool = True,
) -> schemas.ChargerStatusOut:
    """:func:`live_status` by ids; ``readings=False`` leaves out the last meter readings
    (two telemetry reads per meter) for a caller that shows only online and the connectors'
    states (the QR page, cloud/web/qrview.py)."""
    device = await db.get(Device, device_id) if device_id else None
    online = device_online(device, now, offline_after_s)
    connectors = [
        schemas.ConnectorLive(
            number=k.number,
            type=k.type,
            current=k.current,
            max_power_w=k.max_power_w,
            status=k.status if online else ConnectorStatus.UNAVAILABLE,
            status_at=k.status_at,
        )
        for k in await connectors_of(db, charger_id)
    ]
    last: list[schemas.LastReading] = []
    if device is not None and readings:
        conn = await db.connection()
        for meter_id in _meter_ids(device.last_status):
            since = now - LAST_READING_MAX_AGE
            power = await queries.latest(
                conn, device_id=device.id, quantity=Quantity.POWER_W, meter_id=meter_id, since=since
            )
            energy = await queries.latest(
                conn,
                device_id=device.id,
                quantity=Quantity.ENERGY_IMPORT_WH,
                meter_id=meter_id,
                since=since,
            )
            stamps = [r.ts for r in (power, energy) if r is not None]
            last.append(
                schemas.LastReading(
                    meter_id=meter_id,
                    ts=max(stamps) if stamps else None,
                    power_w=power.value if power else None,
                    energy_import_wh=energy.value if energy else None,
                )
            )
    return schemas.ChargerStatusOut(
        online=online,
        last_seen_at=device.last_seen_at if device else None,
        connectors=connectors,
        last_readings=last,
    )


def chart_window(start: datetime, end: datetime, bucket: str) -> timedelta:
    """The bucket width, after checking the request stays within the bounds."""
    width = BUCKETS.get(bucket)
    if width is None:
        raise InvalidRequest(f"bucket must be one of {', '.join(BUCKETS)}", field="bucket")
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidRequest("from and to need a UTC offset", field="from")
    if not start < end:
        raise InvalidRequest("from must be before to", field="to")
    if end - start > MAX_CHART_RANGE:
        raise InvalidRequest(f"a chart covers at most {MAX_CHART_RANGE.days} days", field="to")
    if (end - start) / width > MAX_POINTS:
        raise InvalidRequest(
            f"at most {MAX_POINTS} buckets per chart: use a wider bucket", field="bucket"
        )
    return width


async def chart(
    db: AsyncSession,
    backend: TelemetryBackend,
    charger: Charger,
    *,
    quantity: Quantity,
    start: datetime,
    end: datetime,
    bucket: str,
    meter_id: str | None,
) -> schemas.TelemetrySeries:
    width = chart_window(start, end, bucket)
    if charger.device_id is None:
        # State, not shape: the same request succeeds once a device is attached.
        raise Conflict("this charger has no device attached yet", entity="charger", key=charger.id)
    conn = await db.connection()
    buckets = await queries.series(
        conn,
        backend,
        device_id=charger.device_id,
        quantity=quantity.value,
        start=start,
        end=end,
        width=width,
        meter_id=meter_id,
    )
    return schemas.TelemetrySeries(
        charger_id=charger.id,
        device_id=charger.device_id,
        quantity=quantity.value,
        bucket=bucket,
        start=start,
        end=end,
        points=[
            schemas.TelemetryPoint(start=b.start, count=b.count, mean=b.mean, min=b.min, max=b.max)
            for b in buckets
        ],
    )
