"""Meter health per device (issue 15): ``device_meters``.

One row per meter a device's latest status names — model, availability, failed polls
(since the agent started and in a row), the last error, the refused register blocks of a
partial map and the estimated time of the last good reading — written by ingest with the
status (cloud/ingest/writer.py) and shown in the host's charger view.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05 03:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "device_meters",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("meter_id", sa.String(length=32), nullable=False),
        sa.Column("model", sa.String(length=32), nullable=False),
        sa.Column("available", sa.Boolean(), nullable=False),
        sa.Column("errors", sa.Integer(), nullable=False),
        sa.Column("consecutive_errors", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.String(length=120), nullable=True),
        sa.Column("last_good_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "unavailable_blocks",
            postgresql.ARRAY(sa.Text()),
            server_default="{}",
            nullable=False,
        ),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status_seq", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_device_meters_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device_id", "meter_id", name=op.f("pk_device_meters")),
    )
    # Existing devices: their last stored status's meters, so the view is not empty until
    # each agent's next status (at most its status interval away).
    op.execute(
        """
        INSERT INTO device_meters (device_id, meter_id, model, available, errors,
            consecutive_errors, last_error, last_good_at, unavailable_blocks, reported_at,
            status_seq)
        SELECT d.id, m->>'meter_id', m->>'model', (m->>'available')::boolean,
            coalesce((m->>'errors')::int, 0), 0, NULL,
            d.last_seen_at - make_interval(secs => (m->>'last_reading_age_s')::float8),
            ARRAY(SELECT jsonb_array_elements_text(coalesce(m->'unavailable_blocks', '[]'))),
            coalesce(d.last_seen_at, now()), d.last_status_seq
        FROM devices d, jsonb_array_elements(d.last_status->'meters') m
        WHERE d.last_status IS NOT NULL AND jsonb_typeof(d.last_status->'meters') = 'array'
        ON CONFLICT DO NOTHING
        """
    )


def downgrade() -> None:
    op.drop_table("device_meters")
