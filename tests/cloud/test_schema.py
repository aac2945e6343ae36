"""The schema as migrated: it matches the models, and PostgreSQL enforces the invariants."""

from __future__ import annotations

import asyncio
import random
import re
from datetime import UTC, datetime, timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from cloud.models import metadata
from cloud.pg import (
    CheckViolation,
    DeadlockDetected,
    ExclusionViolation,
    PgConnection,
    close,
    connect,
)
from cloud.settings import DbSettings, sqlalchemy_url

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _diff(connection: Connection) -> list[object]:
    def include(obj: object, name: str | None, type_: str, reflected: bool, _other: object) -> bool:
        # Created by the telemetry storage step (its shape depends on the server), not models;
        # telemetry's partitions (plain) are made by the maintenance job.
        if name is not None and re.fullmatch(r"telemetry_(p\d{8}|default)", name):
            return False
        return name not in {"telemetry_15m", "alembic_version"}

    context = MigrationContext.configure(
        connection, opts={"include_object": include, "compare_type": True}
    )
    return list(compare_metadata(context, metadata))


async def test_migration_matches_models(db_url: str) -> None:
    engine = create_async_engine(sqlalchemy_url(db_url))
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(_diff)
    finally:
        await engine.dispose()
    assert diff == []


async def _seed_connector(pg: PgConnection) -> str:
    await pg.execute("INSERT INTO users (id, name) VALUES ('U1', 'Asha')")
    await pg.execute(
        "INSERT INTO hosts (id, user_id, display_name, kyc_status) "
        "VALUES ('H1', 'U1', 'Asha EV', 'verified')"
    )
    await pg.execute(
        "INSERT INTO chargers (id, host_id, name, address, city, state, pincode, latitude, "
        "longitude, price_per_kwh_paise, qr_code, moderation_status) VALUES ('C1', 'H1', "
        "'Home', 'MG Road', 'Pune', 'MH', '411001', 18.52, 73.85, 1800, 'QR1', 'approved')"
    )
    await pg.execute(
        "INSERT INTO connectors (id, charger_id, number, type, max_power_w, status) "
        "VALUES ('K1', 'C1', 1, 'Type2', 7400, 'Available')"
    )
    return "K1"


async def _book(
    pg: PgConnection, booking_id: str, start: datetime, end: datetime, status: str = "confirmed"
) -> None:
    await pg.execute(
        "INSERT INTO bookings (id, user_id, charger_id, connector_id, period, status, "
        "amount_paise) VALUES ($1, 'U1', 'C1', 'K1', tstzrange($2, $3, '[)'), $4, 0)",
        booking_id,
        start,
        end,
        status,
    )


async def test_overlapping_active_booking_is_rejected_by_the_database(pg: PgConnection) -> None:
    await _seed_connector(pg)
    await _book(pg, "B1", T0, T0 + timedelta(hours=1))
    with pytest.raises(ExclusionViolation):
        await _book(pg, "B2", T0 + timedelta(minutes=30), T0 + timedelta(hours=2))


async def test_adjacent_and_inactive_bookings_do_not_conflict(pg: PgConnection) -> None:
    await _seed_connector(pg)
    await _book(pg, "B1", T0, T0 + timedelta(hours=1))
    await _book(pg, "B2", T0 + timedelta(hours=1), T0 + timedelta(hours=2))  # [a,b) then [b,c)
    await _book(pg, "B3", T0, T0 + timedelta(hours=2), status="cancelled")
    count = await pg.fetchval("SELECT count(*) FROM bookings")
    assert count == 3


async def test_concurrent_overlapping_inserts_admit_exactly_one(
    db_url: str, pg: PgConnection
) -> None:
    await _seed_connector(pg)
    conns = [await connect(DbSettings(url=db_url)) for _ in range(8)]

    # Every first attempt runs at once: that is the race the constraint must settle. An
    # insert PostgreSQL picks as a deadlock victim retries, but one retry at a time: retries
    # that raced each other again could livelock (the survivor of a cycle rechecks the index
    # the moment the victim aborts, and a retry landing in that moment forms a new cycle in
    # which the survivor, now the longer waiter, is the victim; CI saw 30 rounds of backoff
    # all deadlock). One retrier can still meet a first attempt in flight, but there are only
    # eight of those and each ends, so the retries then run alone and cannot deadlock. The
    # booking service avoids the cycle with an advisory lock per connector; this test checks
    # the constraint without it.
    one_retry_at_a_time = asyncio.Lock()

    async def book(i: int, conn: PgConnection) -> bool:
        start = T0 + timedelta(minutes=i)
        try:
            await _book(conn, f"R{i}", start, start + timedelta(hours=1))
        except ExclusionViolation:
            return False
        return True

    async def attempt(i: int, conn: PgConnection) -> bool:
        try:
            return await book(i, conn)
        except DeadlockDetected:
            pass
        async with one_retry_at_a_time:
            for _ in range(len(conns) * 4):
                try:
                    return await book(i, conn)
                except DeadlockDetected:
                    await asyncio.sleep(random.uniform(0.05, 0.1))
        raise AssertionError("kept deadlocking")

    try:
        results = await asyncio.gather(*(attempt(i, c) for i, c in enumerate(conns)))
    finally:
        for c in conns:
            await close(c)
    assert sum(results) == 1
    assert await pg.fetchval("SELECT count(*) FROM bookings") == 1


@pytest.mark.parametrize(
    ("table", "column", "value"),
    [
        ("chargers", "price_per_kwh_paise", -1),
        ("chargers", "latitude", 91.0),
    ],
)
async def test_check_constraints_refuse_impossible_values(
    pg: PgConnection, table: str, column: str, value: object
) -> None:
    await _seed_connector(pg)
    with pytest.raises(CheckViolation):
        await pg.execute(f"UPDATE {table} SET {column} = $1", value)


async def test_money_columns_are_bigint(pg: PgConnection) -> None:
    rows = await pg.fetch(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND column_name LIKE '%paise%'"
    )
    assert len(rows) >= 10
    assert {r["data_type"] for r in rows} == {"bigint"}


async def _device(pg: PgConnection, device_id: str, *, online: bool) -> None:
    await pg.execute(
        "INSERT INTO devices (id, host_id, online, last_seen_at) VALUES ($1, 'H1', $2, now())",
        device_id,
        online,
    )


async def _device_online(pg: PgConnection) -> bool:
    value = await pg.fetchval("SELECT device_online FROM chargers WHERE id = 'C1'")
    assert isinstance(value, bool)
    return value


async def test_a_chargers_device_online_follows_its_device_whatever_writes(
    pg: PgConnection,
) -> None:
    """``chargers.device_online`` (the "available now" index's predicate) is the device's
    ``online AND status = 'active'``, false without a device, after every kind of write."""
    await _seed_connector(pg)
    await _device(pg, "D-on", online=True)
    await _device(pg, "D-off", online=False)
    assert not await _device_online(pg)  # no device
    steps: list[tuple[str, bool]] = [
        ("UPDATE chargers SET device_id = 'D-on'", True),
        ("UPDATE devices SET online = false WHERE id = 'D-on'", False),
        ("UPDATE devices SET online = true WHERE id = 'D-on'", True),
        ("UPDATE devices SET last_seen_at = now() - interval '1 day'", True),  # age: the query's
        ("UPDATE devices SET status = 'revoked' WHERE id = 'D-on'", False),
        ("UPDATE devices SET status = 'active' WHERE id = 'D-on'", True),
        ("UPDATE chargers SET device_id = 'D-off'", False),
        ("UPDATE devices SET online = true WHERE id = 'D-off'", True),
        ("UPDATE chargers SET device_id = NULL", False),
        ("UPDATE chargers SET device_id = 'D-off'", True),
        # Written by hand, the column is computed again.
        ("UPDATE chargers SET device_online = false", True),
        ("UPDATE devices SET online = false WHERE id = 'D-on'", True),  # not its device
    ]
    for statement, online in steps:
        await pg.execute(statement)
        assert await _device_online(pg) is online, statement
    await pg.execute(
        "INSERT INTO chargers (id, host_id, device_id, name, address, city, state, pincode, "
        "latitude, longitude, price_per_kwh_paise, qr_code, device_online) VALUES ('C2', 'H1', "
        "'D-on', 'Two', 'MG Road', 'Pune', 'MH', '411001', 18.52, 73.85, 1800, 'QR2', true)"
    )
    assert await pg.fetchval("SELECT device_online FROM chargers WHERE id = 'C2'") is False


async def test_a_charger_linked_while_its_device_comes_online_reads_the_outcome(
    db_url: str, pg: PgConnection
) -> None:
    """A charger linked to a device whose going online is not yet committed waits for it and
    takes the outcome: the device's trigger cannot see the uncommitted link, so a link that
    read the device without waiting would stay false while the device is online."""
    await _seed_connector(pg)
    await _device(pg, "D1", online=False)
    device_side = await connect(DbSettings(url=db_url))
    charger_side = await connect(DbSettings(url=db_url))
    try:
        charger_pid = await charger_side.fetchval("SELECT pg_backend_pid()")

        async def link_waits() -> bool:
            return bool(
                await pg.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid = $1", charger_pid
                )
            )

        async with asyncio.TaskGroup() as tasks, device_side.transaction():
            await device_side.execute("UPDATE devices SET online = true WHERE id = 'D1'")
            link = tasks.create_task(
                charger_side.execute("UPDATE chargers SET device_id = 'D1' WHERE id = 'C1'")
            )
            # Commit once the link waits on the device's row (or has not waited at all).
            async with asyncio.timeout(10):
                while not link.done() and not await link_waits():  # noqa: ASYNC110 -- polls the server
                    await asyncio.sleep(0.02)
    finally:
        await close(device_side)
        await close(charger_side)
    assert await _device_online(pg)
