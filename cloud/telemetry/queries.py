"""The one query interface over telemetry, identical on both storage backends.

* :func:`series` aggregates raw rows into buckets of any width: ``time_bucket`` under
  Timescale, ``date_bin`` otherwise, both with the same origin, so they cut identical
  buckets and return identical answers.
* :func:`rollup_series` reads the 15-minute rollup (a continuous aggregate or a table) and
  re-aggregates it to any multiple of 15 minutes; :func:`refresh_rollup` brings the rollup
  up to date for a window (``refresh_continuous_aggregate`` or a recompute).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from cloud.errors import InvalidRequest
from cloud.telemetry.storage import (
    BUCKET_ORIGIN,
    PLAIN_REFRESH,
    TIMESCALE_REFRESH,
    TelemetryBackend,
    clamped,
)

ROLLUP_WIDTH = timedelta(minutes=15)
_ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Bucket:
    start: datetime
    count: int
    mean: float
    min: float
    max: float


_BUCKET_EXPR = {
    TelemetryBackend.TIMESCALE: "time_bucket(:width, ts)",
    TelemetryBackend.PLAIN: f"date_bin(:width, ts, TIMESTAMPTZ '{BUCKET_ORIGIN}')",
}
_ROLLUP_BUCKET_EXPR = {
    TelemetryBackend.TIMESCALE: "time_bucket(:width, bucket)",
    TelemetryBackend.PLAIN: f"date_bin(:width, bucket, TIMESTAMPTZ '{BUCKET_ORIGIN}')",
}
#: Aggregates read values clamped (storage.clamped): stored extremes cannot overflow them.
_VALUE = clamped("value")


def align_down(moment: datetime, width: timedelta = ROLLUP_WIDTH) -> datetime:
    return moment - (moment - _ORIGIN) % width


def align_up(moment: datetime, width: timedelta = ROLLUP_WIDTH) -> datetime:
    down = align_down(moment, width)
    return down if down == moment else down + width


def _check_window(start: datetime, end: datetime, width: timedelta) -> None:
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidRequest("start and end must be timezone-aware", field="start")
    if end <= start:
        raise InvalidRequest("end must be after start", field="end")
    if width <= timedelta(0):
        raise InvalidRequest("bucket width must be positive", field="width")


async def series(
    conn: AsyncConnection,
    backend: TelemetryBackend,
    *,
    device_id: str,
    quantity: str,
    start: datetime,
    end: datetime,
    width: timedelta,
    meter_id: str | None = None,
) -> list[Bucket]:
    """Buckets of ``quantity`` for ``device_id`` over [start, end), from the raw rows."""
    _check_window(start, end, width)
    # Only the fixed expressions above are interpolated; every value is a bind parameter.
    sql = f"""
        SELECT {_BUCKET_EXPR[backend]} AS b, count(*), avg({_VALUE}), min({_VALUE}),
               max({_VALUE})
        FROM telemetry
        WHERE device_id = :device_id AND quantity = :quantity
          AND ts >= :start AND ts < :end
          AND (CAST(:meter_id AS text) IS NULL OR meter_id = :meter_id)
        GROUP BY b ORDER BY b"""  # noqa: S608 -- fixed expressions, bound values
    rows = await conn.execute(
        text(sql),
        {
            "width": width,
            "device_id": device_id,
            "quantity": quantity,
            "start": start,
            "end": end,
            "meter_id": meter_id,
        },
    )
    return [Bucket(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def rollup_series(
    conn: AsyncConnection,
    backend: TelemetryBackend,
    *,
    device_id: str,
    quantity: str,
    start: datetime,
    end: datetime,
    width: timedelta = ROLLUP_WIDTH,
    meter_id: str | None = None,
) -> list[Bucket]:
    """Like :func:`series` but from the 15-minute rollup: ``width`` a multiple of 15 min,
    ``start``/``end`` on 15-minute boundaries. Reflects the rollup as last refreshed."""
    _check_window(start, end, width)
    if width % ROLLUP_WIDTH or align_down(start) != start or align_down(end) != end:
        raise InvalidRequest("rollup queries use 15-minute multiples and boundaries", field="width")
    sql = f"""
        SELECT {_ROLLUP_BUCKET_EXPR[backend]} AS b, sum(n)::bigint,
               sum(total) / sum(n), min(min_value), max(max_value)
        FROM telemetry_15m
        WHERE device_id = :device_id AND quantity = :quantity
          AND bucket >= :start AND bucket < :end
          AND (CAST(:meter_id AS text) IS NULL OR meter_id = :meter_id)
        GROUP BY b ORDER BY b"""  # noqa: S608 -- fixed expressions, bound values
    rows = await conn.execute(
        text(sql),
        {
            "width": width,
            "device_id": device_id,
            "quantity": quantity,
            "start": start,
            "end": end,
            "meter_id": meter_id,
        },
    )
    return [Bucket(r[0], r[1], r[2], r[3], r[4]) for r in rows]


async def refresh_rollup(
    engine: AsyncEngine, backend: TelemetryBackend, start: datetime, end: datetime
) -> None:
    """Recompute the rollup for the whole 15-minute buckets covering [start, end)."""
    window = {"start": align_down(start), "end": align_up(end)}
    if backend is TelemetryBackend.TIMESCALE:
        # refresh_continuous_aggregate refuses to run inside a transaction block.
        async with engine.connect() as conn:
            auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await auto.execute(text(TIMESCALE_REFRESH), window)
        return
    async with engine.begin() as conn:
        for sql in PLAIN_REFRESH:
            await conn.execute(text(sql), window)


@dataclass(frozen=True, slots=True)
class Reading:
    ts: datetime
    value: float


async def latest(
    conn: AsyncConnection,
    *,
    device_id: str,
    quantity: str,
    meter_id: str | None = None,
    since: datetime | None = None,
) -> Reading | None:
    """The newest stored value of ``quantity`` for ``device_id`` (optionally one meter), not
    older than ``since``. One backward walk of ``(device_id, quantity, ts)``: same SQL on both
    backends (on a hypertable, chunks newer than ``since`` only)."""
    row = (
        await conn.execute(
            text(
                """
                SELECT ts, value FROM telemetry
                WHERE device_id = :device_id AND quantity = :quantity
                  AND (CAST(:meter_id AS text) IS NULL OR meter_id = :meter_id)
                  AND (CAST(:since AS timestamptz) IS NULL OR ts >= :since)
                ORDER BY ts DESC LIMIT 1"""
            ),
            {"device_id": device_id, "quantity": quantity, "meter_id": meter_id, "since": since},
        )
    ).first()
    return None if row is None else Reading(row[0], row[1])
