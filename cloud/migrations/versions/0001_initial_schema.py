"""Initial schema: the whole platform, and telemetry storage chosen by what the server has.

Revision ID: 0001
Revises:
Create Date: 2026-11-24 03:14:43.918585
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from cloud.telemetry import storage

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


#: btree_gist for the bookings exclusion constraint (``=`` on text inside GiST);
#: cube + earthdistance for radius search. Never dropped on downgrade: other databases and
#: the bootstrap share them.
EXTENSIONS = ("btree_gist", "cube", "earthdistance")


def upgrade() -> None:  # noqa: PLR0915 -- one statement per table, as generated
    for extension in EXTENSIONS:
        op.execute(f"CREATE EXTENSION IF NOT EXISTS {extension}")
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("topic", sa.String(length=300), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("payload", sa.LargeBinary(), nullable=False),
        sa.Column("payload_bytes", sa.Integer(), nullable=False),
        sa.Column("error_kind", sa.String(length=40), nullable=False),
        sa.Column("reason", sa.String(length=2000), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letters")),
    )
    op.create_index(op.f("ix_dead_letters_device_id"), "dead_letters", ["device_id"], unique=False)
    op.create_index(
        op.f("ix_dead_letters_received_at"), "dead_letters", ["received_at"], unique=False
    )
    op.create_table(
        "device_commands",
        sa.Column("cmd_id", sa.String(length=26), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column(
            "name",
            sa.Enum(
                "start_session",
                "stop_session",
                "auth_list_update",
                "config_update",
                "diagnostics",
                "relay_test",
                name="command_name",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=True,
        ),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "result_status",
            sa.Enum(
                "Accepted",
                "Rejected",
                "Expired",
                "Failed",
                "NotSupported",
                name="command_status",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=True,
        ),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("result_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("cmd_id", name=op.f("pk_device_commands")),
    )
    op.create_index(
        op.f("ix_device_commands_device_id"), "device_commands", ["device_id"], unique=False
    )
    op.create_table(
        "downlink_sequences",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_downlink_sequences")),
    )
    op.create_table(
        "provider_events",
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("provider", "event_id", name=op.f("pk_provider_events")),
    )
    op.create_table(
        "session_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("device_session_id", sa.String(length=26), nullable=False),
        sa.Column("event_seq", sa.Integer(), nullable=False),
        sa.Column(
            "event",
            sa.Enum(
                "started",
                "updated",
                "stopped",
                name="session_event_type",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("msg_id", sa.String(length=26), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_session_events")),
        sa.UniqueConstraint(
            "device_id",
            "device_session_id",
            "event_seq",
            name=op.f("uq_session_events_device_id_device_session_id_event_seq"),
        ),
    )
    op.create_table(
        "telemetry",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("meter_id", sa.String(length=32), nullable=False),
        sa.Column("ts", sa.DateTime(timezone=True), nullable=False),
        sa.Column("quantity", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("clock_synced", sa.Boolean(), nullable=False),
    )
    op.create_index(
        "ix_telemetry_device_quantity_ts",
        "telemetry",
        ["device_id", "quantity", "ts"],
        unique=False,
    )
    op.create_table(
        "telemetry_batches",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("msg_id", sa.String(length=26), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("points", sa.Integer(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("device_id", "msg_id", name="pk_telemetry_batches"),
        sa.UniqueConstraint("device_id", "seq", name=op.f("uq_telemetry_batches_device_id_seq")),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("phone", sa.String(length=16), nullable=True),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=True),
        sa.Column("locale", sa.String(length=10), server_default="en-IN", nullable=False),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_users")),
        sa.UniqueConstraint("email", name=op.f("uq_users_email")),
        sa.UniqueConstraint("phone", name=op.f("uq_users_phone")),
    )
    op.create_table(
        "audit_log",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("actor_user_id", sa.String(length=26), nullable=True),
        sa.Column("actor_kind", sa.String(length=20), nullable=False),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("entity", sa.String(length=40), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column(
            "data", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("client_ip", postgresql.INET(), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_user_id"], ["users.id"], name=op.f("fk_audit_log_actor_user_id_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_log")),
    )
    op.create_index("ix_audit_log_entity", "audit_log", ["entity", "entity_id"], unique=False)
    op.create_table(
        "hosts",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("display_name", sa.String(length=120), nullable=False),
        sa.Column(
            "kyc_status",
            sa.Enum(
                "not_started",
                "submitted",
                "verified",
                "rejected",
                name="kyc_status",
                native_enum=False,
                create_constraint=True,
            ),
            server_default="not_started",
            nullable=False,
        ),
        sa.Column("kyc_ref", sa.String(length=128), nullable=True),
        sa.Column("kyc_verified_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("kyc_rejection_reason", sa.String(length=500), nullable=True),
        sa.Column("payout_account_ref", sa.String(length=128), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_hosts_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_hosts")),
        sa.UniqueConstraint("user_id", name=op.f("uq_hosts_user_id")),
    )
    op.create_table(
        "user_roles",
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "driver", "host", "admin", name="role", native_enum=False, create_constraint=True
            ),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_user_roles_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", "role", name=op.f("pk_user_roles")),
    )
    op.create_table(
        "devices",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("host_id", sa.String(length=26), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "active", "revoked", name="device_status", native_enum=False, create_constraint=True
            ),
            server_default="active",
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("agent_version", sa.String(length=32), nullable=True),
        sa.Column("online", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_status_seq", sa.BigInteger(), server_default="-1", nullable=False),
        sa.Column("last_status", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], name=op.f("fk_devices_host_id_hosts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
    )
    op.create_index(op.f("ix_devices_host_id"), "devices", ["host_id"], unique=False)
    op.create_table(
        "payouts",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("host_id", sa.String(length=26), nullable=False),
        sa.Column("amount_paise", sa.BigInteger(), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "processing",
                "paid",
                "failed",
                name="payout_status",
                native_enum=False,
                create_constraint=True,
            ),
            server_default="pending",
            nullable=False,
        ),
        sa.Column("provider_ref", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount_paise >= 0", name=op.f("ck_payouts_amount_paise_non_negative")),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], name=op.f("fk_payouts_host_id_hosts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payouts")),
        sa.UniqueConstraint("provider_ref", name=op.f("uq_payouts_provider_ref")),
    )
    op.create_index(op.f("ix_payouts_host_id"), "payouts", ["host_id"], unique=False)
    op.create_table(
        "chargers",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("host_id", sa.String(length=26), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=120), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column("address", sa.String(length=300), nullable=False),
        sa.Column("city", sa.String(length=80), nullable=False),
        sa.Column("state", sa.String(length=80), nullable=False),
        sa.Column("pincode", sa.String(length=6), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=False),
        sa.Column("longitude", sa.Float(), nullable=False),
        sa.Column("price_per_kwh_paise", sa.BigInteger(), nullable=False),
        sa.Column("session_fee_paise", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("idle_fee_per_min_paise", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("rating_sum", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rating_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "moderation_status",
            sa.Enum(
                "pending",
                "approved",
                "rejected",
                "suspended",
                name="moderation_status",
                native_enum=False,
                create_constraint=True,
            ),
            server_default="pending",
            nullable=False,
        ),
        sa.Column("moderation_note", sa.String(length=500), nullable=True),
        sa.Column("qr_code", sa.String(length=12), nullable=False),
        sa.Column("is_listed", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("timezone", sa.String(length=40), server_default="Asia/Kolkata", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "idle_fee_per_min_paise >= 0",
            name=op.f("ck_chargers_idle_fee_per_min_paise_non_negative"),
        ),
        sa.CheckConstraint("latitude BETWEEN -90 AND 90", name=op.f("ck_chargers_latitude_range")),
        sa.CheckConstraint(
            "longitude BETWEEN -180 AND 180", name=op.f("ck_chargers_longitude_range")
        ),
        sa.CheckConstraint(
            "price_per_kwh_paise >= 0", name=op.f("ck_chargers_price_per_kwh_paise_non_negative")
        ),
        sa.CheckConstraint(
            "rating_count >= 0 AND rating_sum >= 0", name=op.f("ck_chargers_ratings_non_negative")
        ),
        sa.CheckConstraint(
            "session_fee_paise >= 0", name=op.f("ck_chargers_session_fee_paise_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_chargers_device_id_devices")
        ),
        sa.ForeignKeyConstraint(["host_id"], ["hosts.id"], name=op.f("fk_chargers_host_id_hosts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chargers")),
        sa.UniqueConstraint("qr_code", name=op.f("uq_chargers_qr_code")),
    )
    op.create_index(op.f("ix_chargers_city"), "chargers", ["city"], unique=False)
    op.create_index(op.f("ix_chargers_device_id"), "chargers", ["device_id"], unique=False)
    op.create_index(
        "ix_chargers_earth",
        "chargers",
        [sa.literal_column("ll_to_earth(latitude, longitude)")],
        unique=False,
        postgresql_using="gist",
    )
    op.create_index(op.f("ix_chargers_host_id"), "chargers", ["host_id"], unique=False)
    op.create_table(
        "availability_windows",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("charger_id", sa.String(length=26), nullable=False),
        sa.Column("weekday", sa.SmallInteger(), nullable=False),
        sa.Column("opens_at", sa.Time(), nullable=False),
        sa.Column("closes_at", sa.Time(), nullable=False),
        sa.CheckConstraint(
            "opens_at < closes_at", name=op.f("ck_availability_windows_window_order")
        ),
        sa.CheckConstraint(
            "weekday BETWEEN 0 AND 6", name=op.f("ck_availability_windows_weekday_range")
        ),
        sa.ForeignKeyConstraint(
            ["charger_id"],
            ["chargers.id"],
            name=op.f("fk_availability_windows_charger_id_chargers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_availability_windows")),
    )
    op.create_index(
        op.f("ix_availability_windows_charger_id"),
        "availability_windows",
        ["charger_id"],
        unique=False,
    )
    op.create_table(
        "connectors",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("charger_id", sa.String(length=26), nullable=False),
        sa.Column("number", sa.SmallInteger(), nullable=False),
        sa.Column(
            "type",
            sa.Enum(
                "Type2",
                "CCS2",
                "CHAdeMO",
                "GB/T",
                "BharatAC001",
                "BharatDC001",
                "Socket3Pin16A",
                name="connector_type",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("max_power_w", sa.Integer(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "Available",
                "Preparing",
                "Charging",
                "SuspendedEV",
                "Finishing",
                "Faulted",
                "Unavailable",
                name="connector_status",
                native_enum=False,
                create_constraint=True,
            ),
            server_default="Unavailable",
            nullable=False,
        ),
        sa.Column("status_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("max_power_w > 0", name=op.f("ck_connectors_max_power_positive")),
        sa.CheckConstraint("number BETWEEN 1 AND 32", name=op.f("ck_connectors_number_range")),
        sa.ForeignKeyConstraint(
            ["charger_id"],
            ["chargers.id"],
            name=op.f("fk_connectors_charger_id_chargers"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_connectors")),
        sa.UniqueConstraint("charger_id", "number", name=op.f("uq_connectors_charger_id_number")),
    )
    op.create_table(
        "pairing_codes",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("host_id", sa.String(length=26), nullable=False),
        sa.Column("charger_id", sa.String(length=26), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("device_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["charger_id"], ["chargers.id"], name=op.f("fk_pairing_codes_charger_id_chargers")
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.id"], name=op.f("fk_pairing_codes_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_pairing_codes_host_id_hosts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pairing_codes")),
        sa.UniqueConstraint("code_hash", name=op.f("uq_pairing_codes_code_hash")),
    )
    op.create_index(op.f("ix_pairing_codes_host_id"), "pairing_codes", ["host_id"], unique=False)
    op.create_table(
        "sessions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("device_session_id", sa.String(length=26), nullable=False),
        sa.Column("connector_number", sa.SmallInteger(), nullable=False),
        sa.Column("charger_id", sa.String(length=26), nullable=True),
        sa.Column("booking_id", sa.String(length=64), nullable=True),
        sa.Column("user_id", sa.String(length=26), nullable=True),
        sa.Column(
            "credential_kind",
            sa.Enum(
                "IdTag",
                "Token",
                "Pin",
                "Remote",
                name="credential_kind",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("credential_ref", sa.String(length=128), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "active", "stopped", name="session_state", native_enum=False, create_constraint=True
            ),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("meter_start_wh", sa.BigInteger(), nullable=False),
        sa.Column("meter_stop_wh", sa.BigInteger(), nullable=False),
        sa.Column("energy_wh", sa.BigInteger(), nullable=False),
        sa.Column("power_w", sa.Float(), nullable=True),
        sa.Column(
            "stop_reason",
            sa.Enum(
                "Local",
                "Remote",
                "EVDisconnected",
                "PowerLoss",
                "Reboot",
                "EnergyLimitReached",
                "TimeLimitReached",
                "DeAuthorized",
                "MeterFailure",
                "OverCurrent",
                "StuckRelay",
                "Other",
                name="stop_reason",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=True,
        ),
        sa.Column("offline", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("meter_went_backwards", sa.Boolean(), server_default="false", nullable=False),
        sa.Column("last_event_seq", sa.Integer(), nullable=False),
        sa.Column("events_received", sa.Integer(), nullable=False),
        sa.Column(
            "billing_state",
            sa.Enum(
                "unbilled",
                "priced",
                "charged",
                "settled",
                "disputed",
                "waived",
                name="billing_state",
                native_enum=False,
                create_constraint=True,
            ),
            server_default="unbilled",
            nullable=False,
        ),
        sa.Column("amount_paise", sa.BigInteger(), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["charger_id"], ["chargers.id"], name=op.f("fk_sessions_charger_id_chargers")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_sessions_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
        sa.UniqueConstraint(
            "device_id", "device_session_id", name=op.f("uq_sessions_device_id_device_session_id")
        ),
    )
    op.create_index(op.f("ix_sessions_booking_id"), "sessions", ["booking_id"], unique=False)
    op.create_index(op.f("ix_sessions_charger_id"), "sessions", ["charger_id"], unique=False)
    op.create_index(op.f("ix_sessions_user_id"), "sessions", ["user_id"], unique=False)
    op.create_table(
        "bookings",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("charger_id", sa.String(length=26), nullable=False),
        sa.Column("connector_id", sa.String(length=26), nullable=False),
        sa.Column("period", postgresql.TSTZRANGE(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "confirmed",
                "cancelled",
                "completed",
                "expired",
                "no_show",
                name="booking_status",
                native_enum=False,
                create_constraint=True,
            ),
            server_default="pending",
            nullable=False,
        ),
        sa.Column("amount_paise", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("pin_hash", sa.String(length=128), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        postgresql.ExcludeConstraint(
            (sa.column("connector_id"), "="),
            (sa.column("period"), "&&"),
            where=sa.text("status IN ('pending', 'confirmed')"),
            using="gist",
            name="ex_bookings_connector_period",
        ),
        sa.CheckConstraint("amount_paise >= 0", name=op.f("ck_bookings_amount_paise_non_negative")),
        sa.ForeignKeyConstraint(
            ["charger_id"], ["chargers.id"], name=op.f("fk_bookings_charger_id_chargers")
        ),
        sa.ForeignKeyConstraint(
            ["connector_id"], ["connectors.id"], name=op.f("fk_bookings_connector_id_connectors")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_bookings_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bookings")),
    )
    op.create_index(op.f("ix_bookings_charger_id"), "bookings", ["charger_id"], unique=False)
    op.create_index(op.f("ix_bookings_user_id"), "bookings", ["user_id"], unique=False)
    op.create_table(
        "disputes",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("session_id", sa.BigInteger(), nullable=False),
        sa.Column("raised_by", sa.String(length=26), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "open",
                "under_review",
                "resolved_refund",
                "resolved_no_action",
                name="dispute_status",
                native_enum=False,
                create_constraint=True,
            ),
            server_default="open",
            nullable=False,
        ),
        sa.Column("resolution", sa.Text(), nullable=True),
        sa.Column("refund_paise", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("resolved_by", sa.String(length=26), nullable=True),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("refund_paise >= 0", name=op.f("ck_disputes_refund_paise_non_negative")),
        sa.ForeignKeyConstraint(
            ["raised_by"], ["users.id"], name=op.f("fk_disputes_raised_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["resolved_by"], ["users.id"], name=op.f("fk_disputes_resolved_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_disputes_session_id_sessions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_disputes")),
    )
    op.create_index(op.f("ix_disputes_session_id"), "disputes", ["session_id"], unique=False)
    op.create_table(
        "reviews",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("charger_id", sa.String(length=26), nullable=False),
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("session_id", sa.BigInteger(), nullable=False),
        sa.Column("rating", sa.SmallInteger(), nullable=False),
        sa.Column("body", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "moderation_status",
            sa.Enum(
                "pending",
                "approved",
                "rejected",
                "suspended",
                name="review_moderation",
                native_enum=False,
                create_constraint=True,
            ),
            server_default="pending",
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("rating BETWEEN 1 AND 5", name=op.f("ck_reviews_rating_range")),
        sa.ForeignKeyConstraint(
            ["charger_id"], ["chargers.id"], name=op.f("fk_reviews_charger_id_chargers")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_reviews_session_id_sessions")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_reviews_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reviews")),
        sa.UniqueConstraint("session_id", name=op.f("uq_reviews_session_id")),
    )
    op.create_index(op.f("ix_reviews_charger_id"), "reviews", ["charger_id"], unique=False)
    op.create_table(
        "payments",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("booking_id", sa.String(length=26), nullable=True),
        sa.Column("session_id", sa.BigInteger(), nullable=True),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("provider_order_id", sa.String(length=64), nullable=True),
        sa.Column("provider_payment_id", sa.String(length=64), nullable=True),
        sa.Column("amount_paise", sa.BigInteger(), nullable=False),
        sa.Column("captured_paise", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("currency", sa.String(length=3), server_default="INR", nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "created",
                "authorized",
                "captured",
                "failed",
                "refunded",
                "partially_refunded",
                name="payment_status",
                native_enum=False,
                create_constraint=True,
            ),
            server_default="created",
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount_paise > 0", name=op.f("ck_payments_amount_positive")),
        sa.CheckConstraint(
            "captured_paise >= 0", name=op.f("ck_payments_captured_paise_non_negative")
        ),
        sa.ForeignKeyConstraint(
            ["booking_id"], ["bookings.id"], name=op.f("fk_payments_booking_id_bookings")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_payments_session_id_sessions")
        ),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_payments_user_id_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_payments")),
        sa.UniqueConstraint("provider_order_id", name=op.f("uq_payments_provider_order_id")),
        sa.UniqueConstraint("provider_payment_id", name=op.f("uq_payments_provider_payment_id")),
    )
    op.create_index(op.f("ix_payments_booking_id"), "payments", ["booking_id"], unique=False)
    op.create_index(op.f("ix_payments_session_id"), "payments", ["session_id"], unique=False)
    op.create_index(op.f("ix_payments_user_id"), "payments", ["user_id"], unique=False)
    op.create_table(
        "refunds",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("payment_id", sa.String(length=26), nullable=False),
        sa.Column("amount_paise", sa.BigInteger(), nullable=False),
        sa.Column("provider_refund_id", sa.String(length=64), nullable=True),
        sa.Column(
            "status",
            sa.Enum(
                "pending",
                "processed",
                "failed",
                name="refund_status",
                native_enum=False,
                create_constraint=True,
            ),
            server_default="pending",
            nullable=False,
        ),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount_paise > 0", name=op.f("ck_refunds_amount_positive")),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_refunds_payment_id_payments")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refunds")),
        sa.UniqueConstraint("provider_refund_id", name=op.f("uq_refunds_provider_refund_id")),
    )
    op.create_index(op.f("ix_refunds_payment_id"), "refunds", ["payment_id"], unique=False)
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("txn_id", sa.String(length=26), nullable=False),
        sa.Column("account", sa.String(length=80), nullable=False),
        sa.Column("amount_paise", sa.BigInteger(), nullable=False),
        sa.Column("payment_id", sa.String(length=26), nullable=True),
        sa.Column("refund_id", sa.String(length=26), nullable=True),
        sa.Column("payout_id", sa.String(length=26), nullable=True),
        sa.Column("memo", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("amount_paise <> 0", name=op.f("ck_ledger_entries_amount_non_zero")),
        sa.ForeignKeyConstraint(
            ["payment_id"], ["payments.id"], name=op.f("fk_ledger_entries_payment_id_payments")
        ),
        sa.ForeignKeyConstraint(
            ["payout_id"], ["payouts.id"], name=op.f("fk_ledger_entries_payout_id_payouts")
        ),
        sa.ForeignKeyConstraint(
            ["refund_id"], ["refunds.id"], name=op.f("fk_ledger_entries_refund_id_refunds")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    op.create_index(op.f("ix_ledger_entries_account"), "ledger_entries", ["account"], unique=False)
    op.create_index(op.f("ix_ledger_entries_txn_id"), "ledger_entries", ["txn_id"], unique=False)
    storage.create_storage(op.get_bind(), autocommit_block=op.get_context().autocommit_block)


def downgrade() -> None:  # noqa: PLR0915 -- one statement per table, as generated
    storage.drop_storage(op.get_bind(), autocommit_block=op.get_context().autocommit_block)
    op.drop_index(op.f("ix_ledger_entries_txn_id"), table_name="ledger_entries")
    op.drop_index(op.f("ix_ledger_entries_account"), table_name="ledger_entries")
    op.drop_table("ledger_entries")
    op.drop_index(op.f("ix_refunds_payment_id"), table_name="refunds")
    op.drop_table("refunds")
    op.drop_index(op.f("ix_payments_user_id"), table_name="payments")
    op.drop_index(op.f("ix_payments_session_id"), table_name="payments")
    op.drop_index(op.f("ix_payments_booking_id"), table_name="payments")
    op.drop_table("payments")
    op.drop_index(op.f("ix_reviews_charger_id"), table_name="reviews")
    op.drop_table("reviews")
    op.drop_index(op.f("ix_disputes_session_id"), table_name="disputes")
    op.drop_table("disputes")
    op.drop_index(op.f("ix_bookings_user_id"), table_name="bookings")
    op.drop_index(op.f("ix_bookings_charger_id"), table_name="bookings")
    op.drop_table("bookings")
    op.drop_index(op.f("ix_sessions_user_id"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_charger_id"), table_name="sessions")
    op.drop_index(op.f("ix_sessions_booking_id"), table_name="sessions")
    op.drop_table("sessions")
    op.drop_index(op.f("ix_pairing_codes_host_id"), table_name="pairing_codes")
    op.drop_table("pairing_codes")
    op.drop_table("connectors")
    op.drop_index(op.f("ix_availability_windows_charger_id"), table_name="availability_windows")
    op.drop_table("availability_windows")
    op.drop_index(op.f("ix_chargers_host_id"), table_name="chargers")
    op.drop_index("ix_chargers_earth", table_name="chargers", postgresql_using="gist")
    op.drop_index(op.f("ix_chargers_device_id"), table_name="chargers")
    op.drop_index(op.f("ix_chargers_city"), table_name="chargers")
    op.drop_table("chargers")
    op.drop_index(op.f("ix_payouts_host_id"), table_name="payouts")
    op.drop_table("payouts")
    op.drop_index(op.f("ix_devices_host_id"), table_name="devices")
    op.drop_table("devices")
    op.drop_table("user_roles")
    op.drop_table("hosts")
    op.drop_index("ix_audit_log_entity", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_table("users")
    op.drop_table("telemetry_batches")
    op.drop_index("ix_telemetry_device_quantity_ts", table_name="telemetry")
    op.drop_table("telemetry")
    op.drop_table("session_events")
    op.drop_table("provider_events")
    op.drop_table("downlink_sequences")
    op.drop_index(op.f("ix_device_commands_device_id"), table_name="device_commands")
    op.drop_table("device_commands")
    op.drop_index(op.f("ix_dead_letters_received_at"), table_name="dead_letters")
    op.drop_index(op.f("ix_dead_letters_device_id"), table_name="dead_letters")
    op.drop_table("dead_letters")
