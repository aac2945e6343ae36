"""One telemetry query interface: raw date_bin series and the 15-minute rollup agree.

Every test runs on the backend the test server's migration chose (``telemetry_backend``):
plain PostgreSQL here, TimescaleDB when ``CHARGEMITRA_TEST_DATABASE_URL`` points at one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from cloud.errors import InvalidRequest
from cloud.pg import PgConnection
from cloud.settings import sqlalchemy_url
from cloud.telemetry.queries import align_down, align_up, refresh_rollup, rollup_series, series
from cloud.telemetry.storage import TelemetryBackend, detect_backend, timescale_loadable

T0 = datetime(2026, 3, 1, 10, 7, 30, tzinfo=UTC)  # deliberately not on a bucket boundary


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(sqlalchemy_url(db_url))
    try:
        yield engine
    finally:
        await engine.dispose()


async def _fill(pg: PgConnection) -> None:
    # Two hours of 10-second power readings, plus a second device that must not leak in.
    records = [
        (device, "m1", T0 + timedelta(seconds=10 * i), "power_w", float((i * 37) % 5000), i, True)
        for i in range(720)
        for device in ("dev-q", "dev-other")
    ]
    await pg.copy_records_to_table(
        "telemetry",
        records=records,
        columns=("device_id", "meter_id", "ts", "quantity", "value", "seq", "clock_synced"),
    )


async def test_the_storage_matches_the_backend_the_server_offers(
    engine: AsyncEngine, pg: PgConnection
) -> None:
    async with engine.connect() as conn:
        backend = await detect_backend(conn)
    loaded = await pg.fetchval("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'")
    assert backend is (TelemetryBackend.TIMESCALE if loaded else TelemetryBackend.PLAIN)
    async with engine.begin() as conn:
        # The migration's probe. Where Timescale cannot load (not installed, or not in
        # shared_preload_libraries) it answers False and leaves the transaction usable.
        loadable = await conn.run_sync(timescale_loadable)
        assert (await conn.execute(text("SELECT 1"))).scalar() == 1
        assert loadable is (backend is TelemetryBackend.TIMESCALE)
        await conn.rollback()
    rows = await pg.fetch(
        "SELECT relname, relkind::text FROM pg_class "
        "WHERE relname IN ('telemetry', 'telemetry_15m', 'telemetry_ts_idx')"
    )
    kinds = {str(r[0]): str(r[1]) for r in rows}
    if backend is TelemetryBackend.PLAIN:
        # Partitioned by time (cloud.telemetry.partitions); the rollup a plain table.
        assert kinds == {"telemetry": "p", "telemetry_15m": "r", "telemetry_ts_idx": "I"}
    else:
        assert kinds["telemetry_15m"] == "v"  # a continuous aggregate
        assert kinds["telemetry_ts_idx"] == "i"


@pytest.mark.parametrize("width_min", [15, 60])
async def test_rollup_answers_like_the_raw_series(
    engine: AsyncEngine, pg: PgConnection, width_min: int, telemetry_backend: TelemetryBackend
) -> None:
    await _fill(pg)
    backend = telemetry_backend
    start, end = align_down(T0), align_up(T0 + timedelta(hours=2))
    await refresh_rollup(engine, backend, start, end)
    width = timedelta(minutes=width_min)
    async with engine.connect() as conn:
        raw = await series(
            conn, backend, device_id="dev-q", quantity="power_w", start=start, end=end, width=width
        )
        rolled = await rollup_series(
            conn, backend, device_id="dev-q", quantity="power_w", start=start, end=end, width=width
        )
    assert sum(b.count for b in raw) == 720
    assert [(b.start, b.count, b.min, b.max) for b in raw] == [
        (b.start, b.count, b.min, b.max) for b in rolled
    ]
    assert [b.mean for b in rolled] == pytest.approx([b.mean for b in raw], rel=1e-12)
    assert all(b.start == align_down(b.start) for b in raw)


async def test_refresh_recomputes_changed_buckets(
    engine: AsyncEngine, pg: PgConnection, telemetry_backend: TelemetryBackend
) -> None:
    await _fill(pg)
    backend = telemetry_backend
    start, end = align_down(T0), align_up(T0 + timedelta(hours=2))
    await refresh_rollup(engine, backend, start, end)
    await pg.execute(
        "DELETE FROM telemetry WHERE device_id = 'dev-q' AND ts < $1", start + timedelta(minutes=15)
    )
    await refresh_rollup(engine, backend, start, end)
    async with engine.connect() as conn:
        rolled = await rollup_series(
            conn, backend, device_id="dev-q", quantity="power_w", start=start, end=end
        )
    assert rolled[0].start == start + timedelta(minutes=15)


async def test_rollup_refuses_unaligned_windows(
    engine: AsyncEngine, telemetry_backend: TelemetryBackend
) -> None:
    async with engine.connect() as conn:
        with pytest.raises(InvalidRequest):
            await rollup_series(
                conn,
                telemetry_backend,
                device_id="dev-q",
                quantity="power_w",
                start=T0,
                end=T0 + timedelta(hours=1),
            )
