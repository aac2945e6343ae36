"""Telemetry tables: one row per (reading, quantity), and the batch index used to dedupe.

``telemetry`` has no unique key on purpose: duplicates are dropped one level up, by
``telemetry_batches`` (one row per received batch, unique by device and ``msg_id`` and by
device and ``seq``), so the
big table carries only the index its queries need and can be a hypertable (whose unique
keys would have to include the time column).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    UniqueConstraint,
    func,
    text,
)

from cloud.db import Base

telemetry = Table(
    "telemetry",
    Base.metadata,
    Column("device_id", String(64), nullable=False),
    Column("meter_id", String(32), nullable=False),
    Column("ts", DateTime(timezone=True), nullable=False),
    Column("quantity", String(32), nullable=False),
    Column("value", Float, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("clock_synced", Boolean, nullable=False),
    Index("ix_telemetry_device_quantity_ts", "device_id", "quantity", "ts"),
    # Named as create_hypertable names it; the plain migration creates the same (issue 21).
    Index("telemetry_ts_idx", text("ts DESC")),
)

telemetry_batches = Table(
    "telemetry_batches",
    Base.metadata,
    Column("device_id", String(64), nullable=False),
    Column("msg_id", String(26), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("points", Integer, nullable=False),
    Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("device_id", "msg_id", name="pk_telemetry_batches"),
    # A resend is the same batch whether the agent kept its msg_id or only its seq.
    UniqueConstraint("device_id", "seq"),
)

#: Rollup buckets to recompute: one row per (device, bucket) a committed ingest batch wrote
#: into (cloud.telemetry.rollup). No unique key on purpose: concurrent batches never wait on
#: each other's markers.
telemetry_rollup_pending = Table(
    "telemetry_rollup_pending",
    Base.metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("device_id", String(64), nullable=False),
    Column("bucket", DateTime(timezone=True), nullable=False),
)

#: The 15-minute rollup: a continuous aggregate under Timescale, a table otherwise. Created by
#: the migration (cloud.telemetry.storage), not declared here: its kind depends on the server.
ROLLUP_NAME = "telemetry_15m"
