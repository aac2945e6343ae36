"""Telemetry that stays small: daily partitions on plain PostgreSQL, one retention rule on both.

On plain PostgreSQL ``telemetry`` is declaratively partitioned by range of ``ts``, one
partition per UTC day (``telemetry_pYYYYMMDD``), plus ``telemetry_default`` for readings on a
day that has none yet (a device's week-old backlog, a clock far off): nothing is refused for
want of a partition. The project's own maintenance job (:func:`maintain`, run by the ingest
workers under an advisory lock, so one at a time) keeps it so — no pg_partman, so no extra
server package and the same code path in tests and production:

* partitions exist for today and the next :data:`AHEAD_DAYS` days; a day created later takes
  its rows out of the default partition in the same transaction as it is attached;
* raw data older than ``ingest.raw_retention_days`` is dropped — whole partitions, and the
  default partition's old rows — but never past the *horizon* of the rollup: the oldest
  bucket with a pending marker (cloud.telemetry.rollup). What is dropped is therefore already
  in ``telemetry_15m``, which keeps it (the rollup is never expired).

Under Timescale the same rule and horizon apply through ``drop_chunks`` (the migration
removed the fixed 365-day retention policy), so raw data lives equally long on both backends
and :mod:`cloud.telemetry.queries` answers identically.

A late reading older than the retention window still lands (in the default partition, or a
new chunk) and is rolled up; recomputing its bucket from raw then covers only the readings
still stored. Devices upload backlogs of days, not of the retention window (≥ 7 days).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from cloud.pg import PgConnection
from cloud.telemetry.storage import TelemetryBackend

log = logging.getLogger(__name__)

#: pg_advisory_xact_lock key: "partman" in ASCII, one maintainer at a time across workers.
MAINTENANCE_LOCK_KEY = 0x706172746D616E
AHEAD_DAYS = 3
DEFAULT_PARTITION = "telemetry_default"
_NAME = re.compile(r"telemetry_p(\d{8})")

#: The partitions of telemetry with their day (from the name this module gives them).
LIST_PARTITIONS = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = 'telemetry'::regclass"""

#: The oldest bucket the rollup has not caught up with yet (NULL when it is level).
ROLLUP_HORIZON = "SELECT min(bucket) FROM telemetry_rollup_pending"


def partition_name(day: date) -> str:
    return f"telemetry_p{day:%Y%m%d}"


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=UTC)


def partition_day(name: str) -> date | None:
    match = _NAME.fullmatch(name)
    return (
        None if match is None else datetime.strptime(match[1], "%Y%m%d").replace(tzinfo=UTC).date()
    )


def create_partition_sql(day: date) -> list[str]:
    """Statements (one transaction) that add ``day``'s partition, moving its rows out of the
    default partition first — ATTACH refuses while the default holds rows of the range."""
    name, lower, upper = partition_name(day), day_start(day), day_start(day + timedelta(days=1))
    bounds = f"FROM ('{lower.isoformat()}') TO ('{upper.isoformat()}')"
    where = f"ts >= '{lower.isoformat()}' AND ts < '{upper.isoformat()}'"
    return [
        f"CREATE TABLE {name} (LIKE telemetry INCLUDING DEFAULTS INCLUDING CONSTRAINTS)",
        (
            f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE {where} RETURNING *) "  # noqa: S608 -- our names and dates
            f"INSERT INTO {name} SELECT * FROM moved"
        ),
        f"ALTER TABLE telemetry ATTACH PARTITION {name} FOR VALUES {bounds}",
    ]


@dataclass(frozen=True, slots=True)
class Maintained:
    created: list[str]
    dropped: list[str]
    default_rows_dropped: int
    horizon: datetime


async def existing_days(conn: PgConnection) -> set[date]:
    days = {partition_day(str(r["relname"])) for r in await conn.fetch(LIST_PARTITIONS)}
    return {d for d in days if d is not None}


async def retention_horizon(conn: PgConnection, now: datetime, retention_days: int) -> datetime:
    """Raw telemetry before this instant may go: past the window and in the rollup."""
    cutoff = now - timedelta(days=retention_days)
    pending: datetime | None = await conn.fetchval(ROLLUP_HORIZON)
    return cutoff if pending is None else min(cutoff, pending)


async def maintain(
    conn: PgConnection, backend: TelemetryBackend, *, now: datetime, retention_days: int
) -> Maintained | None:
    """One maintenance round; None when another worker holds the round."""
    async with conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", MAINTENANCE_LOCK_KEY):
            return None
        horizon = await retention_horizon(conn, now, retention_days)
        if backend is TelemetryBackend.TIMESCALE:
            dropped = await conn.fetch(
                "SELECT drop_chunks('telemetry', older_than => $1::timestamptz)", horizon
            )
            return Maintained([], [str(r[0]) for r in dropped], 0, horizon)
        days = await existing_days(conn)
        created: list[str] = []
        today = now.astimezone(UTC).date()
        for offset in range(AHEAD_DAYS + 1):
            day = today + timedelta(days=offset)
            if day not in days:
                for sql in create_partition_sql(day):
                    await conn.execute(sql)
                created.append(partition_name(day))
        dropped_names: list[str] = []
        for day in sorted(days):
            if day_start(day + timedelta(days=1)) <= horizon:
                await conn.execute(f"DROP TABLE {partition_name(day)}")
                dropped_names.append(partition_name(day))
        status = await conn.execute(
            f"DELETE FROM {DEFAULT_PARTITION} WHERE ts < $1",  # noqa: S608 -- our constant
            horizon,
        )
        default_rows = int(status.rsplit(" ", 1)[-1])
    result = Maintained(created, dropped_names, default_rows, horizon)
    if created or dropped_names or default_rows:
        log.info(
            "telemetry maintenance",
            extra={
                "partitions_created": created,
                "dropped": dropped_names,
                "default_rows": default_rows,
            },
        )
    return result
