"""Keeping the 15-minute rollup (``telemetry_15m``) true as telemetry arrives, late or not.

Under Timescale a continuous-aggregate policy refreshes recent buckets by itself; on plain
PostgreSQL nothing would, and a device that was offline for a week uploads week-old readings
that no time-window policy revisits. So ingest leaves a *pending* marker — (device, bucket) —
in the same transaction as the readings it copies, and :func:`refresh_pending` (run by each
ingest worker every ``ingest.rollup_refresh_s``) takes the markers and recomputes exactly
those buckets.

Only *closed* buckets are recomputed (issue 21): a bucket still open — its quarter-hour not
yet over by the refresher's clock — keeps its markers, collapsed each round to one per device
and bucket, and is recomputed once, in the first round after it closes (again only if late
readings arrive). Recomputing every open bucket each round re-read every active device's
readings so far about 24 times per bucket: 4 s of one PostgreSQL backend per round at 3,000
devices. The rollup therefore holds finished quarter-hours, as the Timescale policy's
``end_offset`` of one bucket does; the raw rows answer for the current one
(:func:`cloud.telemetry.queries.series`). Collapsing is race-free too: it deletes a visible,
hence committed, marker only when an older visible marker of the same pair stays behind.

Why this is race-free: markers have no unique key (each transaction inserts its own rows, so
concurrent batches never wait on each other's marker), and a marker becomes visible only when
the readings it describes commit. The refresher deletes the markers it can see and then, in a
later statement of the same READ COMMITTED transaction, reads telemetry with a newer snapshot:
every reading behind a taken marker is visible. A batch still in flight keeps its marker for
the next round. One refresher runs at a time (a transaction-level advisory lock); the others
skip the round.

Under Timescale the markers are *read*, the continuous aggregate refreshed, and only then
are exactly the markers read deleted (by id): a refresher killed mid-refresh leaves them for
the next round (issue 21), and a marker committed meanwhile is not among them, so it stays.
Leadership is then a session-level advisory lock on the same key, held across the CALLs
(which Timescale refuses inside a transaction).

A refresh the database refuses for anything but a lost connection (the overflow of issue 13,
before values were clamped, was one) must not hold up every other bucket: the worker then
calls :func:`refresh_each`, which recomputes bucket by bucket, each in its own transaction.
A bucket that still fails keeps its markers — it is retried, and named in the log — and
every other bucket is brought up to date.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from cloud.pg import RETRYABLE, PgConnection
from cloud.telemetry.queries import ROLLUP_WIDTH, align_down
from cloud.telemetry.storage import BUCKET_ORIGIN, ROLLUP_BUCKET, TelemetryBackend, clamped
from protocols.meters import Quantity

log = logging.getLogger(__name__)

#: pg_advisory_xact_lock key: "rollup" in ASCII, one refresher at a time across workers.
ROLLUP_LOCK_KEY = 0x726F6C6C7570

MARK_PENDING = """
INSERT INTO telemetry_rollup_pending (device_id, bucket)
SELECT * FROM unnest($1::text[], $2::timestamptz[])"""

#: A bucket is closed at ``$1`` when its quarter-hour has ended: ``bucket + 15 min <= $1``.
_CLOSED = f"bucket <= $1::timestamptz - INTERVAL '{ROLLUP_BUCKET}'"

PENDING_PAIRS = f"""
SELECT DISTINCT device_id, bucket FROM telemetry_rollup_pending WHERE {_CLOSED}
ORDER BY 1, 2 LIMIT $2"""  # noqa: S608 -- our constants only

#: An open bucket's markers, one per (device, bucket) kept: the oldest, which is committed
#: (it is visible), so the bucket is still recomputed once it closes. Ingest writes one per
#: device and batch, about one a second; this keeps the table at about one per device.
COLLAPSE_OPEN = f"""
DELETE FROM telemetry_rollup_pending p
USING (SELECT id, row_number() OVER (PARTITION BY device_id, bucket ORDER BY id) AS n
       FROM telemetry_rollup_pending WHERE NOT ({_CLOSED})) d
WHERE p.id = d.id AND d.n > 1"""  # noqa: S608 -- our constants only

TAKE_ONE = "DELETE FROM telemetry_rollup_pending WHERE device_id = $1 AND bucket = $2"

#: Timescale: the markers seen, grouped per (device, bucket) with their ids, deleted by those
#: ids only once the refresh went through.
SEE_PENDING = f"""
SELECT device_id, bucket, array_agg(id) AS ids FROM telemetry_rollup_pending WHERE {_CLOSED}
GROUP BY 1, 2 ORDER BY 1, 2 LIMIT $2"""  # noqa: S608 -- our constants only

DROP_SEEN = "DELETE FROM telemetry_rollup_pending WHERE id = ANY($1::bigint[])"

TAKE_PENDING = f"""
WITH taken AS (DELETE FROM telemetry_rollup_pending WHERE {_CLOSED} RETURNING device_id, bucket)
SELECT DISTINCT device_id, bucket FROM taken ORDER BY 1, 2"""  # noqa: S608 -- our constants only

DELETE_BUCKETS = """
DELETE FROM telemetry_15m r
USING unnest($1::text[], $2::timestamptz[]) AS d(device_id, bucket)
WHERE r.device_id = d.device_id AND r.bucket = d.bucket"""

_VALUE = clamped("t.value")

#: One index range scan of (device_id, quantity, ts) per device, quantity and bucket: the
#: quantities are the protocol's, so the join names them rather than scanning a device's
#: whole history for the bucket.
INSERT_BUCKETS = f"""
INSERT INTO telemetry_15m (bucket, device_id, meter_id, quantity, n, total, min_value, max_value)
SELECT date_bin(INTERVAL '{ROLLUP_BUCKET}', t.ts, TIMESTAMPTZ '{BUCKET_ORIGIN}'),
       t.device_id, t.meter_id, t.quantity, count(*), sum({_VALUE}), min({_VALUE}), max({_VALUE})
FROM unnest($1::text[], $2::timestamptz[]) AS d(device_id, bucket)
CROSS JOIN unnest($3::text[]) AS q(quantity)
JOIN telemetry t ON t.device_id = d.device_id AND t.quantity = q.quantity
    AND t.ts >= d.bucket AND t.ts < d.bucket + INTERVAL '{ROLLUP_BUCKET}'
GROUP BY 1, 2, 3, 4"""  # noqa: S608 -- our constants only

QUANTITIES = sorted(q.value for q in Quantity)

#: An empty interval ([t, t) holds nothing): the first time given to buckets_of aligns.
_NO_TIME = datetime(2000, 1, 3, tzinfo=UTC)

#: asyncpg's form of storage.TIMESCALE_REFRESH (positional parameters; CALL outside any
#: explicit transaction block, as Timescale requires).
TIMESCALE_REFRESH_RUN = (
    "CALL refresh_continuous_aggregate('telemetry_15m', $1::timestamptz, $2::timestamptz)"
)


def buckets_of(times: Iterable[datetime]) -> set[datetime]:
    """The distinct rollup buckets ``times`` fall into.

    A batch's readings mostly share a bucket or run through a few in order, so a time is
    aligned only when it leaves the bucket of the time before (ingest calls this for every
    reading it stores).
    """
    buckets: set[datetime] = set()
    start = end = _NO_TIME
    for ts in times:
        if start <= ts < end:
            continue
        start = align_down(ts)
        end = start + ROLLUP_WIDTH
        buckets.add(start)
    return buckets


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


async def refresh_pending(
    conn: PgConnection,
    backend: TelemetryBackend,
    *,
    limit: int = 100_000,
    now: datetime | None = None,
) -> int:
    """Recompute every closed bucket with a pending marker; return how many (device, bucket)
    pairs. The markers of buckets still open at ``now`` (default: this moment) are collapsed
    to one per pair and wait for a round after the bucket closes.

    Returns 0 without waiting when another worker is refreshing. ``limit`` bounds a Timescale
    round (the rest waits for the next); the plain round takes every closed marker at once.
    """
    at = datetime.now(UTC) if now is None else now
    if backend is TelemetryBackend.TIMESCALE:
        return await _refresh_timescale(conn, limit, at)
    # The collapse commits on its own: a recompute the database refuses (then refresh_each
    # takes over) must not undo it, or an open bucket's markers would pile up meanwhile.
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", ROLLUP_LOCK_KEY):
            return 0
        await conn.execute(COLLAPSE_OPEN, at)
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", ROLLUP_LOCK_KEY):
            return 0
        rows = await conn.fetch(TAKE_PENDING, at)
        if not rows:
            return 0
        devices = [str(r["device_id"]) for r in rows]
        buckets = [r["bucket"] for r in rows]
        await conn.execute(DELETE_BUCKETS, devices, buckets)
        await conn.execute(INSERT_BUCKETS, devices, buckets, QUANTITIES)
        return len(rows)


async def _refresh_timescale(conn: PgConnection, limit: int, now: datetime) -> int:
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ROLLUP_LOCK_KEY):
        return 0
    try:
        await conn.execute(COLLAPSE_OPEN, now)
        rows = await conn.fetch(SEE_PENDING, now, limit)
        if not rows:
            return 0
        for start, end in contiguous_runs(r["bucket"] for r in rows):
            await conn.execute(TIMESCALE_REFRESH_RUN, start, end)
        # Only now: a failure above (or a kill) leaves every marker for the next round.
        await conn.execute(DROP_SEEN, [i for r in rows for i in r["ids"]])
        return len(rows)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ROLLUP_LOCK_KEY)


@dataclass(frozen=True, slots=True)
class RefusedBucket:
    """A (device, bucket) whose recompute the database refused; its markers stay."""

    device_id: str
    bucket: datetime
    error: Exception


async def refresh_each(
    conn: PgConnection,
    backend: TelemetryBackend,
    *,
    limit: int = 10_000,
    now: datetime | None = None,
) -> tuple[int, list[RefusedBucket]]:
    """Recompute up to ``limit`` pending (device, bucket) pairs of closed buckets one at a
    time; return how many were refreshed and the ones the database refused (their markers
    stay for the next round).

    Errors that mean the connection is gone (:data:`~cloud.pg.RETRYABLE`) are raised: they
    say nothing about a bucket. Stops early, quietly, when another worker is refreshing.
    """
    at = datetime.now(UTC) if now is None else now
    if backend is TelemetryBackend.TIMESCALE:
        return await _each_timescale(conn, limit, at)
    pairs = await conn.fetch(PENDING_PAIRS, at, limit)
    refreshed = 0
    refused: list[RefusedBucket] = []
    for row in pairs:
        device_id, bucket = str(row["device_id"]), row["bucket"]
        try:
            async with conn.transaction():
                if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", ROLLUP_LOCK_KEY):
                    return refreshed, refused
                await conn.execute(TAKE_ONE, device_id, bucket)
                await conn.execute(DELETE_BUCKETS, [device_id], [bucket])
                await conn.execute(INSERT_BUCKETS, [device_id], [bucket], QUANTITIES)
        except RETRYABLE:
            raise
        except Exception as exc:  # noqa: BLE001 -- any refusal is this bucket's, reported
            refused.append(RefusedBucket(device_id, bucket, exc))
            continue
        refreshed += 1
    return refreshed, refused


async def _each_timescale(
    conn: PgConnection, limit: int, now: datetime
) -> tuple[int, list[RefusedBucket]]:
    """refresh_each under Timescale: a bucket's markers go only after its refresh did."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", ROLLUP_LOCK_KEY):
        return 0, []
    refreshed = 0
    refused: list[RefusedBucket] = []
    try:
        for row in await conn.fetch(SEE_PENDING, now, limit):
            device_id, bucket = str(row["device_id"]), row["bucket"]
            try:
                await conn.execute(TIMESCALE_REFRESH_RUN, bucket, bucket + ROLLUP_WIDTH)
            except RETRYABLE:
                raise
            except Exception as exc:  # noqa: BLE001 -- any refusal is this bucket's, reported
                refused.append(RefusedBucket(device_id, bucket, exc))
                continue
            await conn.execute(DROP_SEEN, list(row["ids"]))
            refreshed += 1
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ROLLUP_LOCK_KEY)
    return refreshed, refused
