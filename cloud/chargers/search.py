"""``GET /chargers``: approved, listed chargers near a point, nearest first, on plain PostgreSQL.

Geometry is the ``earthdistance`` contrib over ``cube``: ``earth_box(centre, r) @>
ll_to_earth(lat, lon)`` is the indexable pre-filter (GiST ``ix_chargers_earth``) and
``earth_distance(...) <= r`` the exact one (a sphere of radius ``earth()`` = 6,378,168 m).
Results are ordered by ``ll_to_earth(...) <-> centre`` — the straight-line (chord) distance
through the sphere, which sorts exactly like the great-circle distance and which the GiST
index returns in order (a KNN scan) — then by id, so equal distances have a fixed order and
pages are stable. Because rows come off the index nearest first, the other filters only run
until a page is full: ``rank()`` over the index order with ``rank <= page * size + 1`` stops
the scan once past the page and every row tied with its last one (a window "run condition",
PostgreSQL 15+; PostgreSQL 14 gives the same answer after reading the whole radius).

Filters (every one optional):

* ``connector_type``, ``min_power_w``: at least one connector of that type and power;
* ``max_price_paise``: the headline price in the listing's own mode (per kWh or per hour);
  ``pricing_mode`` restricts to one mode, so the cap means one unit;
* ``min_rating``: average rating ≥ the value (chargers without ratings are left out);
* ``verified_host``: only chargers whose host's KYC is verified (each hit carries that
  trusted badge as ``verified_host`` either way; cloud/kyc/);
* availability over ``[start, end)``: inside the weekly windows (local time; touching windows
  join), no overlapping blocked period, and one matching connector that is not Faulted and
  has no overlapping active (pending or confirmed) booking. "Available now" is the window
  ``[now, now + NOW_WINDOW)`` and additionally needs the device online (its last status said
  online and it was heard from within ``device_offline_after_s``) and the connector
  ``Available`` (not charging someone, not faulted, not unavailable).

Availability is tested per charger as the scan yields it, in one ``CASE`` that stops at the
first test ruling the charger out: the device, the connectors (and their bookings), the
blocked periods — an index probe each — and the weekly windows last. "Available now" scans
``ix_chargers_earth_online``, the GiST of the chargers whose device is online
(``chargers.device_online``, kept by triggers: migration 0022), so a radius whose devices are
offline is answered from the index instead of charger by charger; the device's own check
(online, active, heard from recently) still runs, so the answer is the same either way. A
radius where the devices are online but nothing is free (silent devices, every connector
busy, every charger closed) is still read to its end before the search can say so
(docs/scale.md).

The weekly-window test is the SQL twin of :func:`cloud.chargers.availability.closed_reason`
(``range_agg`` of the concrete windows around the request, PostgreSQL 14+); the tests check
the two against each other.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any

from sqlalchemy import TextClause, text
from sqlalchemy.ext.asyncio import AsyncEngine

from cloud.chargers import schemas
from cloud.chargers.models import PricingMode
from cloud.chargers.views import rating_out
from cloud.db_errors import once_more_if_disconnected
from protocols.enums import ConnectorType

#: "Available now" means free and open for at least this long from now.
NOW_WINDOW = timedelta(minutes=30)
MAX_RADIUS_KM = 50.0
MAX_PAGE_SIZE = 100
MAX_PAGE = 100
#: The longest window a search may ask about (the longest booking PIN window is 24 h).
MAX_WINDOW = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Availability:
    start: datetime
    end: datetime
    #: Live state matters (device online, connector Available): the "now" search.
    live: bool
    online_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class SearchQuery:
    lat: float
    lon: float
    radius_m: float
    connector_type: ConnectorType | None = None
    min_power_w: int = 0
    max_price_paise: int | None = None
    pricing_mode: PricingMode | None = None
    #: Hundredths of a star (4.5 → 450), so the comparison is exact integer arithmetic.
    min_rating_hundredths: int = 0
    #: Only chargers of hosts with verified KYC.
    verified_host: bool = False
    availability: Availability | None = None
    page: int = 1
    page_size: int = 20


_SELECT = """
SELECT c.id, c.name, c.address, c.city, c.latitude, c.longitude,
       earth_distance(ll_to_earth(:lat, :lon), ll_to_earth(c.latitude, c.longitude)) AS distance_m,
       c.pricing_mode, c.price_per_kwh_paise, c.price_per_hour_paise, c.session_fee_paise,
       c.min_charge_paise, c.idle_fee_per_min_paise, c.idle_grace_min, c.amenities,
       c.instant_book, c.rating_sum, c.rating_count,
       EXISTS (SELECT 1 FROM hosts h WHERE h.id = c.host_id AND h.kyc_status = 'verified')
         AS verified_host,
       ll_to_earth(c.latitude, c.longitude) <-> ll_to_earth(:lat, :lon) AS chord,
       rank() OVER (ORDER BY ll_to_earth(c.latitude, c.longitude) <-> ll_to_earth(:lat, :lon))
         AS knn_rank
FROM chargers c
WHERE earth_box(ll_to_earth(:lat, :lon), :radius_m) @> ll_to_earth(c.latitude, c.longitude)
  AND earth_distance(ll_to_earth(:lat, :lon), ll_to_earth(c.latitude, c.longitude)) <= :radius_m
  AND c.moderation_status = 'approved' AND c.is_listed"""

_PRICE = """
  AND CASE c.pricing_mode WHEN 'per_hour' THEN c.price_per_hour_paise
                          ELSE c.price_per_kwh_paise END <= :max_price"""
_MODE = """
  AND c.pricing_mode = :pricing_mode"""
_VERIFIED = """
  AND EXISTS (SELECT 1 FROM hosts h WHERE h.id = c.host_id AND h.kyc_status = 'verified')"""
_RATING = """
  AND c.rating_count > 0
  AND CAST(c.rating_sum AS bigint) * 100 >= :min_rating_hundredths * c.rating_count"""

# Every weekly window on the days around the request, as instants in the charger's zone,
# merged by range_agg; "24:00" is stored as 23:59:59.999999 and means the next midnight.
_OPEN_HOURS = """(SELECT range_agg(tstzrange(
                 (d + w.opens_at) AT TIME ZONE c.timezone,
                 CASE WHEN w.closes_at = TIME '23:59:59.999999'
                      THEN (d + INTERVAL '1 day') AT TIME ZONE c.timezone
                      ELSE (d + w.closes_at) AT TIME ZONE c.timezone END, '[)'))
       FROM generate_series(
                CAST(CAST(CAST(:win_start AS timestamptz) AT TIME ZONE c.timezone AS date) - 1
                     AS timestamp),
                CAST(CAST(CAST(:win_end AS timestamptz) AT TIME ZONE c.timezone AS date)
                     AS timestamp),
                INTERVAL '1 day') AS d
       JOIN availability_windows w
         ON w.charger_id = c.id AND w.weekday = EXTRACT(ISODOW FROM d) - 1
      ) @> tstzrange(:win_start, :win_end, '[)')"""

_BLOCKED = """EXISTS (
        SELECT 1 FROM blocked_periods bp
        WHERE bp.charger_id = c.id AND bp.period && tstzrange(:win_start, :win_end, '[)'))"""

_DEVICE_ONLINE = """
  AND c.device_online"""

_ONLINE = """EXISTS (
        SELECT 1 FROM devices dv
        WHERE dv.id = c.device_id AND dv.status = 'active' AND dv.online
          AND dv.last_seen_at >= :online_since)"""

_CONNECTOR = """EXISTS (
        SELECT 1 FROM connectors k WHERE k.charger_id = c.id{conditions})"""
_CONNECTOR_OPEN = """
        AND k.status <> 'Faulted'
        AND NOT EXISTS (
              SELECT 1 FROM bookings b
              WHERE b.connector_id = k.id AND b.status IN ('pending', 'confirmed')
                AND b.period && tstzrange(:win_start, :win_end, '[)'))"""
_CONNECTOR_LIVE = """
        AND k.status = 'Available'"""

# rank() over the index order stops the scan (a PostgreSQL 15 "run condition") once past the
# last row of the page *and every row tied with it*; only those few rows are sorted by id.
# The page's connectors come with it, as parallel arrays (one statement, not a second round
# trip); they are read for the page's rows only, above the LIMIT, and the outer ORDER BY is
# the subquery's own order (no second sort).
_OUTER = """SELECT page.*, k.numbers AS connector_numbers, k.types AS connector_types,
       k.currents AS connector_currents, k.powers_w AS connector_powers_w
FROM (SELECT * FROM ({inner}
) AS hits WHERE knn_rank <= :knn_limit
ORDER BY chord, id LIMIT :limit OFFSET :offset) AS page
CROSS JOIN LATERAL (
  SELECT array_agg(number ORDER BY number) AS numbers, array_agg(type ORDER BY number) AS types,
         array_agg(current ORDER BY number) AS currents,
         array_agg(max_power_w ORDER BY number) AS powers_w
  FROM connectors WHERE charger_id = page.id) AS k
ORDER BY chord, id"""

#: Set on every connection of the API's search pool (cloud/app.py, ``cloud.db.open_reader``;
#: that pool runs nothing else), so a search is its one statement: one round trip.
#: PostgreSQL estimates every cube containment at 0.1 % of the table, so it believes a 5 km
#: box holds a few dozen chargers and prefers a bitmap scan of all of them plus a sort (90 ms
#: in a city of 100,000 chargers) to the KNN scan that stops after one page (under 2 ms).
#: Bitmap scans and explicit sorts are switched off for these connections; the incremental
#: sort of the last step is still allowed. JIT is off too: a search runs in about a
#: millisecond, and compiling its expressions costs tens to hundreds of milliseconds once the
#: estimate crosses ``jit_above_cost`` (100,000) — as a plan that still needs a switched-off
#: sort does at once (its penalty is 10^10), and as the window searches, estimated at ~39,000
#: with a million chargers, would with a few million (docs/scale.md).
PLANNER: Mapping[str, str] = MappingProxyType(
    {"enable_bitmapscan": "off", "enable_sort": "off", "jit": "off"}
)

#: The search pool's ``application_name`` (pg_stat_activity).
SEARCH_APP = "chargemitra-search"
#: What the search pool sets on each of its connections.
SEARCH_CONNECTION: Mapping[str, str] = MappingProxyType({**PLANNER, "application_name": SEARCH_APP})


def build_sql(query: SearchQuery) -> tuple[str, dict[str, Any]]:
    """The search statement and its parameters. Only the fixed fragments above are joined;
    every value is a bind parameter."""
    params: dict[str, Any] = {
        "lat": query.lat,
        "lon": query.lon,
        "radius_m": query.radius_m,
        # One row more than the page: its presence is has_more.
        "limit": query.page_size + 1,
        "offset": (query.page - 1) * query.page_size,
        "knn_limit": query.page * query.page_size + 1,
    }
    sql = _SELECT
    if query.max_price_paise is not None:
        sql += _PRICE
        params["max_price"] = query.max_price_paise
    if query.pricing_mode is not None:
        sql += _MODE
        params["pricing_mode"] = query.pricing_mode.value
    if query.verified_host:
        sql += _VERIFIED
    if query.min_rating_hundredths > 0:
        sql += _RATING
        params["min_rating_hundredths"] = query.min_rating_hundredths
    connector: list[str] = []
    if query.connector_type is not None:
        connector.append("\n        AND k.type = :connector_type")
        params["connector_type"] = query.connector_type.value
    if query.min_power_w > 0:
        connector.append("\n        AND k.max_power_w >= :min_power_w")
        params["min_power_w"] = query.min_power_w
    window = query.availability
    if window is None:
        if connector:
            sql += "\n  AND " + _CONNECTOR.format(conditions="".join(connector))
        return _OUTER.format(inner=sql), params
    params["win_start"] = window.start
    params["win_end"] = window.end
    connector.append(_CONNECTOR_OPEN)
    # What rules a charger out, in the order the CASE below tests them.
    refusals: list[str] = []
    if window.live:
        # Implied by _ONLINE; written out so the scan is the GiST of the chargers whose
        # device is online (ix_chargers_earth_online): a radius of offline devices is
        # answered from the index, not charger by charger.
        sql += _DEVICE_ONLINE
        refusals.append(f"NOT {_ONLINE}")
        params["online_since"] = window.online_since
        connector.append(_CONNECTOR_LIVE)
    refusals.append("NOT " + _CONNECTOR.format(conditions="".join(connector)))
    refusals.append(_BLOCKED)
    # A CASE runs its tests in the written order and stops at the first that holds: one
    # index probe each, the weekly hours (a range_agg over the windows) last. As separate
    # conditions the planner ran the hours first, for every charger of the radius.
    sql += "\n  AND CASE"
    for refusal in refusals:
        sql += f"\n    WHEN {refusal} THEN false"
    sql += f"\n    ELSE {_OPEN_HOURS} END"
    return _OUTER.format(inner=sql), params


@functools.lru_cache(maxsize=256)
def _statement(sql: str) -> TextClause:
    # build_sql gives a few dozen distinct texts (one per combination of filters); text()
    # scans its string for bind parameters each time it is built.
    return text(sql)


async def search(reader: AsyncEngine, query: SearchQuery) -> schemas.SearchPage:
    """``query`` run on ``reader``, an engine whose connections carry :data:`PLANNER`."""
    sql, params = build_sql(query)
    statement = _statement(sql)

    async def read() -> list[Any]:
        async with reader.connect() as conn:
            return list((await conn.execute(statement, params)).all())

    rows = await once_more_if_disconnected(read)
    has_more = len(rows) > query.page_size
    rows = rows[: query.page_size]
    items = [
        schemas.SearchHit(
            id=r.id,
            name=r.name,
            address=r.address,
            city=r.city,
            latitude=r.latitude,
            longitude=r.longitude,
            distance_m=round(r.distance_m, 1),
            connectors=[
                schemas.ConnectorOut(number=n, type=t, current=c, max_power_w=w)
                for n, t, c, w in zip(
                    r.connector_numbers or (),
                    r.connector_types or (),
                    r.connector_currents or (),
                    r.connector_powers_w or (),
                    strict=True,
                )
            ],
            pricing=schemas.PricingOut(
                mode=r.pricing_mode,
                price_per_kwh_paise=r.price_per_kwh_paise,
                price_per_hour_paise=r.price_per_hour_paise,
                session_fee_paise=r.session_fee_paise,
                min_charge_paise=r.min_charge_paise,
                idle_fee_per_min_paise=r.idle_fee_per_min_paise,
                idle_grace_min=r.idle_grace_min,
            ),
            amenities=list(r.amenities),
            instant_book=r.instant_book,
            rating=rating_out(r.rating_sum, r.rating_count),
            verified_host=r.verified_host,
        )
        for r in rows
    ]
    return schemas.SearchPage(
        items=items, page=query.page, page_size=query.page_size, has_more=has_more
    )
