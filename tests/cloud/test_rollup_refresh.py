"""The 15-minute rollup follows ingest: markers written with the readings, buckets recomputed,
late data included, batches still in flight left for the next round, one refresher at a time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import msgspec
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cloud.ingest.decode import decode
from cloud.ingest.plan import plan_batch
from cloud.ingest.writer import write_batch
from cloud.pg import PgConnection, close, connect
from cloud.settings import DbSettings, Settings, sqlalchemy_url
from cloud.telemetry.queries import align_down, align_up, rollup_series, series
from cloud.telemetry.rollup import (
    ROLLUP_LOCK_KEY,
    buckets_of,
    contiguous_runs,
    refresh_each,
    refresh_pending,
)
from cloud.telemetry.storage import TelemetryBackend
from cloud.workers.ingest import open_ingest_worker
from protocols.enums import MessageKind
from protocols.messages import TelemetryBatch, encode_message
from protocols.testing import T0, telemetry
from protocols.topics import topic
from tests.support.cloud_env import add_device, make_settings
from tests.support.mosquitto import Broker
from tests.support.sim_device import SimDevice


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(sqlalchemy_url(db_url))
    try:
        yield engine
    finally:
        await engine.dispose()


async def _write(conn: PgConnection, *batches: TelemetryBatch) -> None:
    accepted = [
        decode(topic(b.device_id, MessageKind.TELEMETRY), encode_message(b)) for b in batches
    ]
    await write_batch(conn, plan_batch(accepted), dead_letter_payload_max=1024)


async def _rollup_matches_raw(
    engine: AsyncEngine, device_id: str, backend: TelemetryBackend
) -> int:
    start = align_down(T0 - timedelta(days=8))
    end = align_up(T0 + timedelta(hours=3))
    async with engine.connect() as conn:
        raw = await series(
            conn,
            backend,
            device_id=device_id,
            quantity="power_w",
            start=start,
            end=end,
            width=timedelta(minutes=15),
        )
        rolled = await rollup_series(
            conn, backend, device_id=device_id, quantity="power_w", start=start, end=end
        )
    assert [(b.start, b.count, b.min, b.max) for b in rolled] == [
        (b.start, b.count, b.min, b.max) for b in raw
    ]
    return sum(b.count for b in rolled)


async def test_ingested_and_late_readings_reach_the_rollup(
    engine: AsyncEngine, pg: PgConnection, telemetry_backend: TelemetryBackend
) -> None:
    # 40 minutes of one-second readings span three buckets.
    await _write(
        pg,
        telemetry("dev-r", 1, readings=1200),
        telemetry("dev-r", 2, readings=1200, first_index=1200),
    )
    assert await pg.fetchval("SELECT count(DISTINCT bucket) FROM telemetry_rollup_pending") == 3
    assert await refresh_pending(pg, telemetry_backend) == 3
    assert await _rollup_matches_raw(engine, "dev-r", telemetry_backend) == 2400
    assert await refresh_pending(pg, telemetry_backend) == 0  # nothing new, nothing recomputed

    # A device back from a week offline uploads week-old readings, and more of the current
    # bucket arrives: both buckets are recomputed, nothing else.
    # (Shifted after building: the energy register, numbered like the readings, cannot go
    # negative on the wire.)
    late = telemetry("dev-r", 3, readings=60)
    week = timedelta(days=7)
    late = msgspec.structs.replace(
        late, readings=[msgspec.structs.replace(r, ts=r.ts - week) for r in late.readings]
    )
    more = telemetry("dev-r", 4, readings=100, first_index=2400)
    await _write(pg, late, more)
    assert await refresh_pending(pg, telemetry_backend) == 2
    assert await _rollup_matches_raw(engine, "dev-r", telemetry_backend) == 2560


async def test_a_batch_still_in_flight_keeps_its_marker_for_the_next_round(
    db_url: str, pg: PgConnection, telemetry_backend: TelemetryBackend
) -> None:
    writer = await connect(DbSettings(url=db_url))
    try:
        tx = writer.transaction()
        await tx.start()  # type: ignore[attr-defined]  # asyncpg's Transaction is untyped here
        await _write(writer, telemetry("dev-f", 1, readings=10))
        # Not committed: the refresher cannot see the marker (nor the readings) yet.
        assert await refresh_pending(pg, telemetry_backend) == 0
        await tx.commit()  # type: ignore[attr-defined]
    finally:
        await close(writer)
    assert await refresh_pending(pg, telemetry_backend) == 1
    assert await pg.fetchval("SELECT sum(n) FROM telemetry_15m WHERE quantity = 'power_w'") == 10


async def test_an_open_bucket_waits_for_its_close_with_one_marker_per_device(
    db_url: str, pg: PgConnection, telemetry_backend: TelemetryBackend
) -> None:
    """Readings of a quarter-hour still running are recomputed once, after it ends; until
    then each round collapses their markers to one per device and bucket, and a batch in
    flight meanwhile is still counted when the bucket closes."""
    bucket = align_down(T0)
    mid, closed = bucket + timedelta(minutes=5), bucket + timedelta(minutes=15)
    await _write(pg, telemetry("dev-o", 1, readings=10), telemetry("dev-p", 1, readings=10))
    await _write(pg, telemetry("dev-o", 2, readings=10, first_index=10))
    await _write(pg, telemetry("dev-o", 3, readings=10, first_index=20))
    writer = await connect(DbSettings(url=db_url))
    try:
        tx = writer.transaction()
        await tx.start()  # type: ignore[attr-defined]  # asyncpg's Transaction is untyped here
        await _write(writer, telemetry("dev-o", 4, readings=10, first_index=30))
        assert await refresh_pending(pg, telemetry_backend, now=mid) == 0
        await tx.commit()  # type: ignore[attr-defined]
    finally:
        await close(writer)
    markers = "SELECT device_id, count(*) FROM telemetry_rollup_pending GROUP BY 1 ORDER BY 1"
    # The collapse kept one of dev-o's three committed markers; the in-flight one came after.
    assert [(r["device_id"], r["count"]) for r in await pg.fetch(markers)] == [
        ("dev-o", 2),
        ("dev-p", 1),
    ]
    assert await pg.fetchval("SELECT count(*) FROM telemetry_15m") == 0
    assert await refresh_pending(pg, telemetry_backend, now=mid) == 0
    assert [(r["device_id"], r["count"]) for r in await pg.fetch(markers)] == [
        ("dev-o", 1),
        ("dev-p", 1),
    ]
    # The bucket-by-bucket fallback leaves an open bucket alone too.
    assert await refresh_each(pg, telemetry_backend, now=mid) == (0, [])
    assert [(r["device_id"], r["count"]) for r in await pg.fetch(markers)] == [
        ("dev-o", 1),
        ("dev-p", 1),
    ]

    # The quarter-hour ends: both devices' buckets are recomputed once, with every reading.
    assert await refresh_pending(pg, telemetry_backend, now=closed) == 2
    assert await pg.fetchval(_ROLLED, "dev-o") == 40
    assert await pg.fetchval(_ROLLED, "dev-p") == 10
    assert await pg.fetchval("SELECT count(*) FROM telemetry_rollup_pending") == 0
    assert await refresh_pending(pg, telemetry_backend, now=closed) == 0


async def test_one_refresher_at_a_time_and_the_other_leaves_the_markers(
    db_url: str, pg: PgConnection, telemetry_backend: TelemetryBackend
) -> None:
    await _write(pg, telemetry("dev-l", 1, readings=10))
    holder = await connect(DbSettings(url=db_url))
    try:
        async with holder.transaction():
            await holder.fetchval("SELECT pg_advisory_xact_lock($1)", ROLLUP_LOCK_KEY)
            assert await refresh_pending(pg, telemetry_backend) == 0
    finally:
        await close(holder)
    assert await pg.fetchval("SELECT count(*) FROM telemetry_rollup_pending") == 1
    assert await refresh_pending(pg, telemetry_backend) == 1


def test_contiguous_runs_join_adjacent_buckets() -> None:
    b = align_down(T0)
    q = timedelta(minutes=15)
    runs = contiguous_runs([b + 3 * q, b, b + q, b + q, b + 5 * q])
    assert runs == [(b, b + 2 * q), (b + 3 * q, b + 4 * q), (b + 5 * q, b + 6 * q)]


def test_buckets_of_finds_every_bucket_whatever_the_order_of_the_times() -> None:
    """buckets_of aligns only when a time leaves the last bucket: out-of-order times, a
    return to an earlier bucket and times on a bucket's edges still give the exact set."""
    b = align_down(T0)
    q = timedelta(minutes=15)
    s = timedelta(seconds=1)
    times = [b + q - s, b, b + q, b + 2 * q - s, b - s, b + 7 * q, b + q + s, b - 40 * q, b]
    assert buckets_of(times) == {align_down(t) for t in times}
    assert buckets_of(b + i * s for i in range(3600)) == {b + i * q for i in range(4)}
    assert buckets_of([]) == set()


async def test_the_ingest_worker_refreshes_the_rollup_by_itself(
    db_url: str, broker: Broker, service_passwords: dict[str, str], pg: PgConnection
) -> None:
    settings: Settings = make_settings(
        db_url, broker, service_passwords["cloud-ingest"], CHARGEMITRA_INGEST_ROLLUP_REFRESH_S="1"
    )
    device = SimDevice("dev-w", add_device(broker, "dev-w"), broker.port)
    device.queue([telemetry("dev-w", 1, readings=50)])
    async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
        run = tg.create_task(worker.run())
        await device.connect()
        try:
            await device.drain(timeout_s=30)
            async with asyncio.timeout(30):
                while await pg.fetchval(_ROLLED, "dev-w") != 50:  # noqa: ASYNC110 -- polling another process's writes
                    await asyncio.sleep(0.2)
        finally:
            device.disconnect()
            run.cancel()
    assert await pg.fetchval("SELECT count(*) FROM telemetry_rollup_pending") == 0


_ROLLED = "SELECT sum(n) FROM telemetry_15m WHERE device_id = $1 AND quantity = 'power_w'"
