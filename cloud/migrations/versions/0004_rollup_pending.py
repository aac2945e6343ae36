"""Rollup markers: which (device, 15-minute bucket) pairs ingest wrote into since the last
refresh of ``telemetry_15m`` (see cloud.telemetry.rollup).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24 05:55:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "telemetry_rollup_pending",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("bucket", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_telemetry_rollup_pending")),
    )
    # Telemetry already stored before this revision is not in the rollup on the plain
    # backend: mark every bucket it spans, so the first refresh brings the rollup level.
    op.execute(
        """INSERT INTO telemetry_rollup_pending (device_id, bucket)
        SELECT DISTINCT device_id,
               date_bin(INTERVAL '15 minutes', ts, TIMESTAMPTZ '2000-01-03 00:00:00+00')
        FROM telemetry"""
    )


def downgrade() -> None:
    op.drop_table("telemetry_rollup_pending")
