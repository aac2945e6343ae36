"""The platform's figures over a range of days, from the sessions, the ledger, the weekly
schedules and the telemetry rollup.

Days are calendar days in :data:`REPORT_ZONE` (India), ``start`` to ``end`` inclusive, i.e.
the instants ``[start 00:00 IST, end + 1 00:00 IST)``.

* **Sessions per day, energy**: sessions *started* that day (``sessions.started_at``) and
  the energy they metered (``energy_wh``).
* **Revenue, commission, GST**: the ledger's entries *posted* that day (``created_at``, the
  posting transaction's time): revenue is what bills debited drivers (GST included),
  commission the net movement of ``platform_commission``, GST the net movement of
  ``gst_payable`` — the output tax the platform owes (cloud/ledger/service.py
  ``commission_earned``, ``gst_collected``, over the range); a GST-registered host's own
  output tax is theirs and not in it. Dispute adjustments count on the day they are posted.
* **Utilisation per charger**: charging connector-hours (each session's time inside the
  range; a running one up to now) over available connector-hours (the weekly opening windows
  in the charger's own zone, less blocked periods, inside the range, times its connectors).
  Sessions outside the opening hours (a walk-up at night) count too, so it may pass 1.
* **Online ratio**: the share of the range's 15-minute intervals for which the charger's
  device's readings reached the telemetry rollup (``telemetry_15m``, the plain table or the
  Timescale continuous aggregate: same columns); the platform's ratio is over every charger
  with a device. An agent reports readings all the time it is connected, idle or not.
* **Top cities**: by sessions started, then energy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.ledger.accounts import PlatformAccount

REPORT_ZONE = ZoneInfo("Asia/Kolkata")
BUCKET = timedelta(minutes=15)
TOP_CITIES = 10


@dataclass(frozen=True, slots=True)
class DayFigures:
    day: date
    sessions: int
    energy_wh: int
    revenue_paise: int
    commission_paise: int
    gst_paise: int


@dataclass(frozen=True, slots=True)
class ChargerFigures:
    charger_id: str
    name: str
    city: str
    connectors: int
    sessions: int
    energy_wh: int
    charging_hours: float
    available_hours: float
    #: charging / (available times connectors); None when it was never open in the range.
    utilisation: float | None
    #: None for a charger without a device.
    online_ratio: float | None


@dataclass(frozen=True, slots=True)
class CityFigures:
    city: str
    sessions: int
    energy_wh: int
    revenue_paise: int


@dataclass(frozen=True, slots=True)
class Figures:
    start: date
    end: date
    days: list[DayFigures]
    chargers: list[ChargerFigures]
    top_cities: list[CityFigures]
    online_ratio: float | None


def bounds(start: date, end: date) -> tuple[datetime, datetime]:
    """The instants ``[start 00:00, end + 1 day 00:00)`` in :data:`REPORT_ZONE`."""
    return (
        datetime.combine(start, time(0), REPORT_ZONE),
        datetime.combine(end + timedelta(days=1), time(0), REPORT_ZONE),
    )


_DAYS = text(
    """
WITH days AS (
  SELECT CAST(d AS date) AS day
  FROM generate_series(CAST(:start AS timestamp), CAST(:end AS timestamp), INTERVAL '1 day') d
), s AS (
  SELECT CAST(started_at AT TIME ZONE :zone AS date) AS day, count(*) AS sessions,
         coalesce(sum(energy_wh), 0) AS energy_wh
  FROM sessions WHERE started_at >= :t0 AND started_at < :t1 GROUP BY 1
), m AS (
  SELECT CAST(created_at AT TIME ZONE :zone AS date) AS day,
         coalesce(sum(amount_paise) FILTER (
           WHERE account LIKE 'driver:%' AND source = 'bill'), 0) AS revenue,
         coalesce(-sum(amount_paise) FILTER (WHERE account = :commission), 0) AS commission,
         coalesce(-sum(amount_paise) FILTER (WHERE account = :gst), 0) AS gst
  FROM ledger_entries WHERE created_at >= :t0 AND created_at < :t1 GROUP BY 1
)
SELECT days.day, coalesce(s.sessions, 0) AS sessions, coalesce(s.energy_wh, 0) AS energy_wh,
       coalesce(m.revenue, 0) AS revenue, coalesce(m.commission, 0) AS commission,
       coalesce(m.gst, 0) AS gst
FROM days LEFT JOIN s USING (day) LEFT JOIN m USING (day)
ORDER BY days.day
"""
)

# The weekly windows as instants (the search's rule, cloud/chargers/search.py: "24:00" is
# stored as 23:59:59.999999 and means the next midnight), merged, less blocked periods,
# cut to the range: a multirange whose pieces' lengths are the open hours.
_CHARGERS = text(
    """
WITH ch AS (
  SELECT c.id, c.name, c.city, c.timezone, c.device_id,
         (SELECT count(*) FROM connectors k WHERE k.charger_id = c.id) AS connectors
  FROM chargers c
  WHERE c.moderation_status = 'approved'
     OR EXISTS (SELECT 1 FROM sessions s WHERE s.charger_id = c.id
                AND s.started_at < :t1 AND coalesce(s.stopped_at, :now) > :t0)
), opening AS (
  SELECT ch.id,
    (coalesce((
       SELECT range_agg(tstzrange(
                (d + w.opens_at) AT TIME ZONE ch.timezone,
                CASE WHEN w.closes_at = TIME '23:59:59.999999'
                     THEN (d + INTERVAL '1 day') AT TIME ZONE ch.timezone
                     ELSE (d + w.closes_at) AT TIME ZONE ch.timezone END, '[)'))
       FROM generate_series(
              CAST(CAST(CAST(:t0 AS timestamptz) AT TIME ZONE ch.timezone AS date) - 1
                   AS timestamp),
              CAST(CAST(CAST(:t1 AS timestamptz) AT TIME ZONE ch.timezone AS date)
                   AS timestamp),
              INTERVAL '1 day') AS d
       JOIN availability_windows w
         ON w.charger_id = ch.id AND w.weekday = EXTRACT(ISODOW FROM d) - 1
     ), '{}'::tstzmultirange)
     - coalesce((SELECT range_agg(bp.period) FROM blocked_periods bp
                 WHERE bp.charger_id = ch.id), '{}'::tstzmultirange))
    * tstzmultirange(tstzrange(:t0, :t1, '[)')) AS open_ranges
  FROM ch
), usage AS (
  SELECT s.charger_id,
         count(*) FILTER (WHERE s.started_at >= :t0) AS sessions,
         coalesce(sum(s.energy_wh) FILTER (WHERE s.started_at >= :t0), 0) AS energy_wh,
         coalesce(sum(EXTRACT(EPOCH FROM
           least(coalesce(s.stopped_at, :now), :t1) - greatest(s.started_at, :t0))), 0)
           AS charging_s
  FROM sessions s
  WHERE s.charger_id IN (SELECT id FROM ch)
    AND s.started_at < :t1 AND coalesce(s.stopped_at, :now) > :t0
  GROUP BY s.charger_id
), online AS (
  SELECT r.device_id, count(DISTINCT r.bucket) AS buckets
  FROM telemetry_15m r
  WHERE r.device_id IN (SELECT device_id FROM ch) AND r.bucket >= :t0 AND r.bucket < :t1
  GROUP BY r.device_id
)
SELECT ch.id, ch.name, ch.city, ch.connectors, ch.device_id,
       coalesce(usage.sessions, 0) AS sessions, coalesce(usage.energy_wh, 0) AS energy_wh,
       coalesce(usage.charging_s, 0) AS charging_s,
       (SELECT coalesce(sum(EXTRACT(EPOCH FROM upper(r) - lower(r))), 0)
        FROM unnest(opening.open_ranges) AS r) AS open_s,
       coalesce(online.buckets, 0) AS online_buckets
FROM ch JOIN opening ON opening.id = ch.id
LEFT JOIN usage ON usage.charger_id = ch.id
LEFT JOIN online ON online.device_id = ch.device_id
ORDER BY ch.id
"""
)

_CITIES = text(
    """
WITH s AS (
  SELECT c.city, count(*) AS sessions, coalesce(sum(s.energy_wh), 0) AS energy_wh
  FROM sessions s JOIN chargers c ON c.id = s.charger_id
  WHERE s.started_at >= :t0 AND s.started_at < :t1
  GROUP BY c.city
), m AS (
  SELECT c.city, coalesce(sum(e.amount_paise), 0) AS revenue
  FROM ledger_entries e JOIN sessions s ON s.id = e.session_id
  JOIN chargers c ON c.id = s.charger_id
  WHERE e.created_at >= :t0 AND e.created_at < :t1
    AND e.account LIKE 'driver:%' AND e.source = 'bill'
  GROUP BY c.city
)
SELECT s.city, s.sessions, s.energy_wh, coalesce(m.revenue, 0) AS revenue
FROM s LEFT JOIN m USING (city)
ORDER BY s.sessions DESC, s.energy_wh DESC, s.city
LIMIT :top
"""
)


async def figures(db: AsyncSession, start: date, end: date, *, now: datetime) -> Figures:
    """The figures of the days ``start`` to ``end`` (inclusive)."""
    t0, t1 = bounds(start, end)
    params = {"t0": t0, "t1": t1, "now": now}
    days = [
        DayFigures(
            r.day, int(r.sessions), int(r.energy_wh), int(r.revenue), int(r.commission), int(r.gst)
        )
        for r in await db.execute(
            _DAYS,
            params
            | {
                "start": datetime.combine(start, time(0)),
                "end": datetime.combine(end, time(0)),
                "zone": REPORT_ZONE.key,
                "commission": PlatformAccount.PLATFORM_COMMISSION.value,
                "gst": PlatformAccount.GST_PAYABLE.value,
            },
        )
    ]
    buckets = (t1 - t0) / BUCKET
    chargers: list[ChargerFigures] = []
    online_total = with_device = 0
    for r in await db.execute(_CHARGERS, params):
        available_h = float(r.open_s) / 3600
        capacity_h = available_h * r.connectors
        if r.device_id is not None:
            with_device += 1
            online_total += int(r.online_buckets)
        chargers.append(
            ChargerFigures(
                charger_id=r.id,
                name=r.name,
                city=r.city,
                connectors=int(r.connectors),
                sessions=int(r.sessions),
                energy_wh=int(r.energy_wh),
                charging_hours=round(float(r.charging_s) / 3600, 4),
                available_hours=round(available_h, 4),
                utilisation=round(float(r.charging_s) / 3600 / capacity_h, 4)
                if capacity_h > 0
                else None,
                online_ratio=round(int(r.online_buckets) / buckets, 4)
                if r.device_id is not None
                else None,
            )
        )
    # Busiest first; chargers never open in the range last.
    chargers.sort(key=lambda c: (c.utilisation is None, -(c.utilisation or 0.0), c.charger_id))
    cities = [
        CityFigures(r.city, int(r.sessions), int(r.energy_wh), int(r.revenue))
        for r in await db.execute(_CITIES, params | {"top": TOP_CITIES})
    ]
    return Figures(
        start=start,
        end=end,
        days=days,
        chargers=chargers,
        top_cities=cities,
        online_ratio=round(online_total / (with_device * buckets), 4) if with_device else None,
    )
