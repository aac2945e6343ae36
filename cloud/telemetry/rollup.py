"""Keeping the 15-minute rollup (``telemetry_15m``) true as telemetry arrives, late or not.

Under Timescale a continuous-aggregate policy refreshes recent buckets by itself; on plain
PostgreSQL nothing would, and a device that was offline for a week uploads week-old readings
that no time-window policy revisits. So ingest leaves a *pending* marker — (device, bucket) —
in the same transaction as the readings it copies, and :func:`refresh_pending` (run by each
ingest worker every ``ingest.rollup_refresh_s``) takes the markers and recomputes exactly
those buckets.

Why this is race-free: markers have no unique key (each transaction inserts its own rows, so
concurrent batches never wait on each other's marker), and a marker becomes visible only when
the readings it describes commit. The refresher deletes the markers it can see and then, in a
later statement of the same READ COMMITTED transaction, reads telemetry with a newer snapshot:
every reading behind a taken marker is visible. A batch still in flight keeps its marker for
the next round. One refresher runs at a time (a transaction-level advisory lock); the others
skip the round.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime

from cloud.pg import PgConnection
from cloud.telemetry.queries import ROLLUP_WIDTH, align_down
from cloud.telemetry.storage import BUCKET_ORIGIN, ROLLUP_BUCKET, TelemetryBackend
from protocols.meters import Quantity

log = logging.getLogger(__name__)

#: pg_advisory_xact_lock key: "rollup" in ASCII, one refresher at a time across workers.
ROLLUP_LOCK_KEY = 0x726F6C6C7570

MARK_PENDING = """
INSERT INTO telemetry_rollup_pending (device_id, bucket)
SELECT * FROM unnest($1::text[], $2::timestamptz[])"""

TAKE_PENDING = """
WITH taken AS (DELETE FROM telemetry_rollup_pending RETURNING device_id, bucket)
SELECT DISTINCT device_id, bucket FROM taken ORDER BY 1, 2"""

DELETE_BUCKETS = """
DELETE FROM telemetry_15m r
USING unnest($1::text[], $2::timestamptz[]) AS d(device_id, bucket)
WHERE r.device_id = d.device_id AND r.bucket = d.bucket"""

#: One index range scan of (device_id, quantity, ts) per device, quantity and bucket: the
#: quantities are the protocol's, so the join names them rather than scanning a device's
#: whole history for the bucket.
INSERT_BUCKETS = f"""
INSERT INTO telemetry_15m (bucket, device_id, meter_id, quantity, n, total, min_value, max_value)
SELECT date_bin(INTERVAL '{ROLLUP_BUCKET}', t.ts, TIMESTAMPTZ '{BUCKET_ORIGIN}'),
       t.device_id, t.meter_id, t.quantity, count(*), sum(t.value), min(t.value), max(t.value)
FROM unnest($1::text[], $2::timestamptz[]) AS d(device_id, bucket)
CROSS JOIN unnest($3::text[]) AS q(quantity)
JOIN telemetry t ON t.device_id = d.device_id AND t.quantity = q.quantity
    AND t.ts >= d.bucket AND t.ts < d.bucket + INTERVAL '{ROLLUP_BUCKET}'
GROUP BY 1, 2, 3, 4"""  # noqa: S608 -- our constants only

QUANTITIES = sorted(q.value for q in Quantity)

#: asyncpg's form of storage.TIMESCALE_REFRESH (positional parameters; CALL outside any
#: explicit transaction block, as Timescale requires).
TIMESCALE_REFRESH_RUN = (
    "CALL refresh_continuous_aggregate('telemetry_15m', $1::timestamptz, $2::timestamptz)"
)


def pending_markers(rows: Iterable[tuple[str, datetime]]) -> tuple[list[str], list[datetime]]:
    """The distinct (device, bucket) markers for telemetry rows given as (device, ts)."""
    pairs = sorted({(device_id, align_down(ts)) for device_id, ts in rows})
    return [p[0] for p in pairs], [p[1] for p in pairs]


async def mark_pending(conn: PgConnection, rows: Iterable[tuple[str, datetime]]) -> None:
    """Record which rollup buckets the telemetry being written touches (same transaction)."""
    devices, buckets = pending_markers(rows)
    if devices:
        await conn.execute(MARK_PENDING, devices, buckets)


def contiguous_runs(buckets: Iterable[datetime]) -> list[tuple[datetime, datetime]]:
    """Sorted buckets as [start, end) runs of adjacent 15-minute buckets."""
    runs: list[tuple[datetime, datetime]] = []
    for bucket in sorted(set(buckets)):
        if runs and runs[-1][1] == bucket:
            runs[-1] = (runs[-1][0], bucket + ROLLUP_WIDTH)
        else:
            runs.append((bucket, bucket + ROLLUP_WIDTH))
    return runs


async def refresh_pending(conn: PgConnection, backend: TelemetryBackend) -> int:
    """Recompute every bucket with a pending marker; return how many (device, bucket) pairs.

    Returns 0 without waiting when another worker is refreshing.
    """
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", ROLLUP_LOCK_KEY):
            return 0
        rows = await conn.fetch(TAKE_PENDING)
        if not rows:
            return 0
        devices = [str(r["device_id"]) for r in rows]
        buckets = [r["bucket"] for r in rows]
        if backend is TelemetryBackend.PLAIN:
            await conn.execute(DELETE_BUCKETS, devices, buckets)
            await conn.execute(INSERT_BUCKETS, devices, buckets, QUANTITIES)
            return len(rows)
    # Timescale refuses refresh_continuous_aggregate inside a transaction: the markers are
    # taken (committed) above, then each run of adjacent buckets is refreshed on its own. A
    # failure here loses those markers (the caller logs it); the continuous-aggregate policy
    # still covers the recent days.
    for start, end in contiguous_runs(buckets):
        await conn.execute(TIMESCALE_REFRESH_RUN, start, end)
    return len(rows)
