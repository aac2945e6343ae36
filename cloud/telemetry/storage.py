"""How telemetry is stored: a Timescale hypertable when the extension exists, else plain.

The decision is made per database by the migration — Timescale only when the extension can
actually be *loaded* here (:func:`timescale_loadable`: already created, or available with its
loader preloaded, and a ``CREATE EXTENSION`` in a savepoint succeeds): a server that merely
ships the package (``pg_available_extensions``) but does not preload the library falls back to
plain instead of failing the migration (issue 21) — and read back at start by
:func:`detect_backend`. Both backends expose the same 15-minute rollup
``telemetry_15m`` (``bucket, device_id, meter_id, quantity, n, total, min_value,
max_value``), so :mod:`cloud.telemetry.queries` answers identically on both.

The Timescale statements follow its documented API (TimescaleDB 2.x: ``create_hypertable``,
``ALTER TABLE … SET (timescaledb.compress …)``, ``add_compression_policy``,
``add_retention_policy``, ``CREATE MATERIALIZED VIEW … WITH (timescaledb.continuous)``,
``add_continuous_aggregate_policy``, ``refresh_continuous_aggregate``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager
from enum import StrEnum

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection

from cloud.db_errors import refusals
from cloud.errors import DatabaseRefused
from protocols.meters.quantities import LARGEST_BOUND

log = logging.getLogger(__name__)

ROLLUP_BUCKET = "15 minutes"
#: time_bucket's default origin for sub-month widths (2000-01-03, a Monday); date_bin on the
#: plain backend uses the same origin so both cut identical buckets.
BUCKET_ORIGIN = "2000-01-03 00:00:00+00"
CHUNK_INTERVAL = "1 day"
COMPRESS_AFTER = "7 days"


def clamped(column: str) -> str:
    """SQL for ``column`` clamped to ±:data:`~protocols.meters.quantities.LARGEST_BOUND`.

    Every aggregate of telemetry values reads them through this (issue 13): float8 ``sum``
    and ``avg`` raise "value out of range: overflow" on two readings of 1e308 — stored before
    the wire contract bounded each quantity — and the error took down the rollup refresh and
    the host's chart. Clamped, a bucket of even 10**290 readings stays finite, ``avg``'s
    sum of squares too; within the bounds (everything the contract now accepts) it changes
    nothing. NaN and ±Infinity, never valid JSON, clamp to the bound as well.
    """
    bound = int(LARGEST_BOUND)
    return f"LEAST(GREATEST({column}, -{bound}::float8), {bound}::float8)"


class TelemetryBackend(StrEnum):
    TIMESCALE = "timescale"
    PLAIN = "plain"


INSTALLED_SQL = "SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"
AVAILABLE_SQL = "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
#: Defined by Timescale's loader only when it is in shared_preload_libraries.
PRELOADED_SQL = "SELECT 1 FROM pg_settings WHERE name = 'timescaledb.disable_load'"
CREATE_EXTENSION = "CREATE EXTENSION IF NOT EXISTS timescaledb"

#: No add_retention_policy: raw retention is one rule for both backends, applied by the
#: maintenance job (cloud.telemetry.partitions) only once the rollup covers what it drops.
TIMESCALE_SETUP = (
    f"SELECT create_hypertable('telemetry', by_range('ts', INTERVAL '{CHUNK_INTERVAL}'))",
    (
        "ALTER TABLE telemetry SET (timescaledb.compress, "
        "timescaledb.compress_segmentby = 'device_id, quantity', "
        "timescaledb.compress_orderby = 'ts DESC')"
    ),
    f"SELECT add_compression_policy('telemetry', INTERVAL '{COMPRESS_AFTER}')",
)

#: Continuous aggregates cannot be created inside a transaction: run in autocommit.
TIMESCALE_ROLLUP = (
    f"""CREATE MATERIALIZED VIEW telemetry_15m WITH (timescaledb.continuous,
        timescaledb.materialized_only = true) AS
    SELECT time_bucket(INTERVAL '{ROLLUP_BUCKET}', ts) AS bucket, device_id, meter_id, quantity,
           count(*) AS n, sum({clamped("value")}) AS total,
           min({clamped("value")}) AS min_value, max({clamped("value")}) AS max_value
    FROM telemetry GROUP BY 1, 2, 3, 4 WITH NO DATA""",  # noqa: S608 -- our constants only
    (
        "SELECT add_continuous_aggregate_policy('telemetry_15m', "
        "start_offset => INTERVAL '3 days', end_offset => INTERVAL '15 minutes', "
        "schedule_interval => INTERVAL '15 minutes')"
    ),
)

TIMESCALE_TEARDOWN = ("DROP MATERIALIZED VIEW IF EXISTS telemetry_15m",)

PLAIN_SETUP = (
    # The index create_hypertable makes on the Timescale path, so both schemas match the models.
    "CREATE INDEX telemetry_ts_idx ON telemetry (ts DESC)",
    """CREATE TABLE telemetry_15m (
        bucket timestamptz NOT NULL,
        device_id varchar(64) NOT NULL,
        meter_id varchar(32) NOT NULL,
        quantity varchar(32) NOT NULL,
        n bigint NOT NULL,
        total double precision NOT NULL,
        min_value double precision NOT NULL,
        max_value double precision NOT NULL,
        CONSTRAINT pk_telemetry_15m PRIMARY KEY (device_id, quantity, meter_id, bucket))""",
)

PLAIN_TEARDOWN = ("DROP TABLE IF EXISTS telemetry_15m", "DROP INDEX IF EXISTS telemetry_ts_idx")

#: Recompute the plain rollup for [:start, :end), both on bucket boundaries (the caller aligns
#: them, as Timescale refreshes only whole buckets): buckets are replaced, emptied ones removed.
PLAIN_REFRESH = (
    """DELETE FROM telemetry_15m
    WHERE bucket >= :start AND bucket < :end""",
    f"""INSERT INTO telemetry_15m
    SELECT date_bin(INTERVAL '{ROLLUP_BUCKET}', ts, TIMESTAMPTZ '{BUCKET_ORIGIN}') AS bucket,
           device_id, meter_id, quantity, count(*), sum({clamped("value")}),
           min({clamped("value")}), max({clamped("value")})
    FROM telemetry
    WHERE ts >= :start AND ts < :end
    GROUP BY 1, 2, 3, 4""",  # noqa: S608 -- our constants only
)

#: Typed: a CALL's parameters are otherwise of unknown type and Timescale's
#: refresh_continuous_aggregate(regclass, "any", "any") cannot infer them
#: (IndeterminateDatatypeError, issue 21).
TIMESCALE_REFRESH = (
    "CALL refresh_continuous_aggregate('telemetry_15m', "
    "CAST(:start AS timestamptz), CAST(:end AS timestamptz))"
)


def _has(connection: Connection, sql: str) -> bool:
    return connection.execute(text(sql)).first() is not None


def timescale_loadable(connection: Connection) -> bool:
    """Whether Timescale is installed here or can be, creating it in the latter case.

    Installable means: the package is on the server (``pg_available_extensions``) *and* its
    loader is preloaded — it then defines ``timescaledb.disable_load``, visible to any role in
    ``pg_settings`` (``shared_preload_libraries`` itself is readable only by privileged roles).
    Both are needed before trying: ``CREATE EXTENSION`` of a package that is not preloaded is
    FATAL in Timescale (it ends the connection, no savepoint catches it). The create itself
    then runs in a savepoint, so any other refusal (a role that may not create it) falls back
    to plain instead of failing the migration.
    """
    if _has(connection, INSTALLED_SQL):
        return True
    if not (_has(connection, AVAILABLE_SQL) and _has(connection, PRELOADED_SQL)):
        return False
    savepoint = connection.begin_nested()
    try:
        with refusals():
            connection.execute(text(CREATE_EXTENSION))
    except DatabaseRefused:
        savepoint.rollback()
        return False
    savepoint.commit()
    return True


def create_storage(
    connection: Connection, *, autocommit_block: Callable[[], AbstractContextManager[object]]
) -> TelemetryBackend:
    """Turn the freshly created ``telemetry`` table into the best storage the server offers.

    Called by the initial migration, inside its transaction; ``autocommit_block`` is
    Alembic's, for the statements Timescale refuses to run in a transaction.
    """
    if timescale_loadable(connection):
        for sql in TIMESCALE_SETUP:
            connection.execute(text(sql))
        with autocommit_block():
            for sql in TIMESCALE_ROLLUP:
                connection.execute(text(sql))
        backend = TelemetryBackend.TIMESCALE
    else:
        for sql in PLAIN_SETUP:
            connection.execute(text(sql))
        backend = TelemetryBackend.PLAIN
    log.info("telemetry storage created", extra={"telemetry_backend": backend.value})
    return backend


def drop_storage(
    connection: Connection, *, autocommit_block: Callable[[], AbstractContextManager[object]]
) -> None:
    """Undo :func:`create_storage` (the ``telemetry`` table itself is dropped by the caller)."""
    if _has(connection, INSTALLED_SQL):
        with autocommit_block():
            for sql in TIMESCALE_TEARDOWN:
                connection.execute(text(sql))
    else:
        for sql in PLAIN_TEARDOWN:
            connection.execute(text(sql))


async def detect_backend(connection: AsyncConnection) -> TelemetryBackend:
    """Which storage this database has (the extension is installed only on the Timescale path)."""
    result = await connection.execute(text(INSTALLED_SQL))
    return TelemetryBackend.TIMESCALE if result.first() is not None else TelemetryBackend.PLAIN
