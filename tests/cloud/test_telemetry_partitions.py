"""Telemetry that stays small (issue 21): daily partitions, retention past the rollup only,
and the same answers across the retention boundary; Timescale's markers survive a failed
refresh. Each test runs on the backend the server offers (``telemetry_backend``): on
Timescale the days are the hypertable's 1-day chunks instead of partitions."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cloud.pg import PgConnection
from cloud.settings import sqlalchemy_url
from cloud.telemetry.partitions import (
    DEFAULT_PARTITION,
    existing_days,
    maintain,
    partition_name,
)
from cloud.telemetry.queries import Bucket, align_down, latest, rollup_series, series
from cloud.telemetry.rollup import mark_pending, refresh_pending
from cloud.telemetry.storage import TelemetryBackend

PLAIN = TelemetryBackend.PLAIN
RETENTION_DAYS = 7
SPAN_DAYS = 10  # more days than the retention window
COLUMNS = ("device_id", "meter_id", "ts", "quantity", "value", "seq", "clock_synced")


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(sqlalchemy_url(db_url))
    try:
        yield engine
    finally:
        await engine.dispose()


async def _ingest(pg: PgConnection, records: list[tuple[object, ...]]) -> None:
    """Readings and their rollup markers in one transaction, as ingest writes them."""
    async with pg.transaction():
        await pg.copy_records_to_table("telemetry", records=records, columns=COLUMNS)
        await mark_pending(pg, [(str(r[0]), r[2]) for r in records])  # type: ignore[misc]


#: Timescale's 1-day chunks of telemetry, by the day they start.
CHUNK_DAYS = """
SELECT range_start FROM timescaledb_information.chunks WHERE hypertable_name = 'telemetry'"""


async def _raw_days(pg: PgConnection, backend: TelemetryBackend) -> set[date]:
    """The days raw telemetry is stored in: partitions (plain) or chunks (Timescale)."""
    if backend is PLAIN:
        return await existing_days(pg)
    return {r["range_start"].astimezone(UTC).date() for r in await pg.fetch(CHUNK_DAYS)}


async def _answers(
    engine: AsyncEngine,
    backend: TelemetryBackend,
    start: datetime,
    end: datetime,
    kept_from: datetime,
) -> tuple[list[Bucket], list[Bucket], object]:
    async with engine.connect() as conn:
        rolled = await rollup_series(
            conn,
            backend,
            device_id="dev-p",
            quantity="power_w",
            start=start,
            end=end,
            width=timedelta(hours=6),
        )
        raw_kept = await series(
            conn,
            backend,
            device_id="dev-p",
            quantity="power_w",
            start=kept_from,
            end=end,
            width=timedelta(hours=1),
        )
        newest = await latest(conn, device_id="dev-p", quantity="power_w")
    return rolled, raw_kept, newest


async def test_old_raw_partitions_go_after_the_rollup_covers_them_and_answers_stay(
    engine: AsyncEngine, pg: PgConnection, telemetry_backend: TelemetryBackend
) -> None:
    backend = telemetry_backend
    now = datetime.now(UTC)
    first = now - timedelta(days=SPAN_DAYS)
    # The job ran every day of the span (partitions are made ahead of the data they hold).
    for day in range(SPAN_DAYS + 1):
        await maintain(pg, backend, now=first + timedelta(days=day), retention_days=36500)
    # Every 20 minutes for SPAN_DAYS days, two devices (the second must not leak in).
    start = align_down(first)
    records: list[tuple[object, ...]] = [
        (device, "m1", start + timedelta(minutes=20 * i), "power_w", float(i % 97), i, True)
        for i in range(SPAN_DAYS * 72)
        for device in ("dev-p", "dev-other")
    ]
    await _ingest(pg, records)
    if backend is PLAIN:  # every reading found its day's partition
        assert await pg.fetchval(f"SELECT count(*) FROM {DEFAULT_PARTITION}") == 0
    days_before = await _raw_days(pg, backend)
    assert await refresh_pending(pg, backend) > 0

    end = start + timedelta(hours=6) * (SPAN_DAYS * 4 + 1)
    # Raw queries from a whole hour well inside the window, to the same end.
    kept_from = start + timedelta(hours=24 * (SPAN_DAYS - RETENTION_DAYS + 1))
    before = await _answers(engine, backend, start, end, kept_from)
    assert sum(b.count for b in before[0]) == SPAN_DAYS * 72

    # A marker for an old bucket (a late reading not yet rolled up) holds its day back: a
    # reading of the oldest day, so no day before it may go. (It was first + 1 h, which from
    # 23:00 UTC fell on the next day and let the oldest day go: a failure one hour a day.)
    late_ts = start
    await _ingest(pg, [("dev-late", "m1", late_ts, "power_w", 5.0, 1, True)])
    held = await maintain(pg, backend, now=now, retention_days=RETENTION_DAYS)
    assert held is not None
    assert held.dropped == []
    assert await _raw_days(pg, backend) == days_before
    assert await refresh_pending(pg, backend) == 1

    done = await maintain(pg, backend, now=now, retention_days=RETENTION_DAYS)
    assert done is not None
    cutoff = now - timedelta(days=RETENTION_DAYS)
    gone = {
        d
        for d in days_before
        if datetime(d.year, d.month, d.day, tzinfo=UTC) + timedelta(days=1) <= cutoff
    }
    assert len(gone) >= SPAN_DAYS - RETENTION_DAYS
    assert len(done.dropped) == len(gone)
    if backend is PLAIN:
        assert sorted(done.dropped) == sorted(partition_name(d) for d in gone)
    assert await _raw_days(pg, backend) == days_before - gone
    oldest_kept = min(datetime(d.year, d.month, d.day, tzinfo=UTC) for d in days_before - gone)
    assert await pg.fetchval("SELECT min(ts) FROM telemetry") >= oldest_kept
    assert await pg.fetchval("SELECT count(*) FROM telemetry WHERE ts < $1", oldest_kept) == 0

    after = await _answers(engine, backend, start, end, kept_from)
    assert after == before  # the rollup across the boundary, raw inside the window, the newest


async def test_a_day_without_partition_lands_in_the_default_and_moves_when_created(
    pg: PgConnection, telemetry_backend: TelemetryBackend, caplog: pytest.LogCaptureFixture
) -> None:
    # At INFO the maintenance logs what it did (a reserved LogRecord key there once raised).
    caplog.set_level(logging.INFO, logger="cloud.telemetry.partitions")
    later = datetime.now(UTC) + timedelta(days=30)
    await _ingest(pg, [("dev-d", "m1", later, "power_w", 1.0, 1, True)])
    assert await pg.fetchval("SELECT count(*) FROM telemetry WHERE device_id = 'dev-d'") == 1
    if telemetry_backend is not PLAIN:
        return  # Timescale made the day's chunk as the reading arrived: nothing to move
    assert await pg.fetchval(f"SELECT count(*) FROM {DEFAULT_PARTITION}") == 1
    done = await maintain(pg, PLAIN, now=later, retention_days=36500)
    assert done is not None
    name = partition_name(later.date())
    assert name in done.created
    assert await pg.fetchval(f"SELECT count(*) FROM {DEFAULT_PARTITION}") == 0
    assert await pg.fetchval(f"SELECT count(*) FROM {name}") == 1
    assert any(r.message == "telemetry maintenance" for r in caplog.records)
    for made in done.created:  # the far-future days are this test's alone
        await pg.execute(f"DROP TABLE {made}")


async def test_timescale_markers_stay_until_the_refresh_went_through(
    pg: PgConnection, telemetry_backend: TelemetryBackend
) -> None:
    # The Timescale refresh fails — on plain PostgreSQL there is no such procedure; on
    # Timescale the aggregate is moved out of the way — exactly the case of a refresher that
    # dies mid-refresh. The markers must still be there for the next round.
    ts = datetime(2026, 3, 1, 10, 5, tzinfo=UTC)
    await _ingest(pg, [("dev-t", "m1", ts, "power_w", 1.0, 1, True)])
    timescale = telemetry_backend is TelemetryBackend.TIMESCALE
    if timescale:
        await pg.execute("ALTER MATERIALIZED VIEW telemetry_15m RENAME TO telemetry_15m_away")
    try:
        with pytest.raises(Exception, match=r"refresh_continuous_aggregate|telemetry_15m"):
            await refresh_pending(pg, TelemetryBackend.TIMESCALE)
    finally:
        if timescale:
            await pg.execute("ALTER MATERIALIZED VIEW telemetry_15m_away RENAME TO telemetry_15m")
    assert await pg.fetchval("SELECT count(*) FROM telemetry_rollup_pending") == 1
    # And the session lock was let go: the next round takes them.
    assert await refresh_pending(pg, telemetry_backend) == 1
