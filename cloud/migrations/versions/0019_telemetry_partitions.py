"""Telemetry that stays small (issue 21): plain ``telemetry`` becomes partitioned by day; under
Timescale the fixed 365-day retention policy goes (one rule for both, cloud.telemetry.partitions).

The existing rows are kept: the table is renamed, a partitioned one created in its place with
a partition for every UTC day that holds data (and today and the next few), the rows copied
across, the old table dropped — all in the migration's transaction.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 03:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

from cloud.telemetry.partitions import AHEAD_DAYS, DEFAULT_PARTITION, create_partition_sql
from cloud.telemetry.storage import INSTALLED_SQL

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: What Timescale kept before this revision (restored on downgrade).
OLD_TIMESCALE_RETENTION = "365 days"


def _timescale() -> bool:
    return op.get_bind().execute(sa.text(INSTALLED_SQL)).first() is not None


def upgrade() -> None:
    bind = op.get_bind()
    if _timescale():
        op.execute("SELECT remove_retention_policy('telemetry', if_exists => true)")
        return
    op.execute("ALTER TABLE telemetry RENAME TO telemetry_unpartitioned")
    op.execute("DROP INDEX IF EXISTS ix_telemetry_device_quantity_ts")
    op.execute("DROP INDEX IF EXISTS ix_telemetry_ts_brin")
    op.execute("DROP INDEX IF EXISTS telemetry_ts_idx")
    op.execute(
        "CREATE TABLE telemetry (LIKE telemetry_unpartitioned INCLUDING DEFAULTS "
        "INCLUDING CONSTRAINTS) PARTITION BY RANGE (ts)"
    )
    op.execute(
        "CREATE INDEX ix_telemetry_device_quantity_ts ON telemetry (device_id, quantity, ts)"
    )
    op.execute("CREATE INDEX telemetry_ts_idx ON telemetry (ts DESC)")
    op.execute(f"CREATE TABLE {DEFAULT_PARTITION} PARTITION OF telemetry DEFAULT")
    rows = bind.execute(
        sa.text("SELECT DISTINCT (ts AT TIME ZONE 'UTC')::date FROM telemetry_unpartitioned")
    )
    today = datetime.now(UTC).date()
    days = {r[0] for r in rows} | {today + timedelta(days=n) for n in range(AHEAD_DAYS + 1)}
    for day in sorted(days):
        for sql in create_partition_sql(day):
            op.execute(sql)
    op.execute("INSERT INTO telemetry SELECT * FROM telemetry_unpartitioned")
    op.execute("DROP TABLE telemetry_unpartitioned")


def downgrade() -> None:
    if _timescale():
        op.execute(
            f"SELECT add_retention_policy('telemetry', INTERVAL '{OLD_TIMESCALE_RETENTION}')"
        )
        return
    kind = op.get_bind().execute(
        sa.text("SELECT relkind::text FROM pg_class WHERE relname = 'telemetry'")
    )
    if kind.scalar() != "p":
        # A database migrated while this slot was still empty: nothing of ours to undo.
        return
    op.execute("ALTER TABLE telemetry RENAME TO telemetry_partitioned")
    op.execute("ALTER INDEX ix_telemetry_device_quantity_ts RENAME TO ix_telemetry_part_dqt")
    op.execute("ALTER INDEX telemetry_ts_idx RENAME TO ix_telemetry_part_ts")
    op.execute(
        "CREATE TABLE telemetry (LIKE telemetry_partitioned INCLUDING DEFAULTS "
        "INCLUDING CONSTRAINTS)"
    )
    op.execute("INSERT INTO telemetry SELECT * FROM telemetry_partitioned")
    op.execute("DROP TABLE telemetry_partitioned")
    op.execute(
        "CREATE INDEX ix_telemetry_device_quantity_ts ON telemetry (device_id, quantity, ts)"
    )
    op.execute("CREATE INDEX telemetry_ts_idx ON telemetry (ts DESC)")
