"""The notification outbox, channel preferences and push subscriptions (issue 18).

* ``notification_events`` — the outbox: one row per thing to tell people about, written in
  the transaction of the change it reports (``dedupe_key`` unique where set: ingest replays);
* ``notification_deliveries`` — one row per recipient, channel and address, with attempts
  and the next attempt's time (``ix_notification_deliveries_due``: only pending ones);
* ``notification_preferences`` — a user's channels per event kind (absent: the defaults);
* ``push_subscriptions`` — browsers' Web Push subscriptions, one endpoint one row.

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-05 00:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = (
    "booking_confirmed",
    "booking_pending",
    "booking_approved",
    "booking_declined",
    "booking_cancelled",
    "session_started",
    "session_stopped",
    "charger_offline",
    "payout_paid",
    "dispute_updated",
)
_KINDS = ", ".join(f"'{k}'" for k in KINDS)


def _now() -> sa.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "notification_events",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("kind", sa.String(length=17), nullable=False),
        sa.Column("subject_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=26), nullable=True),
        sa.Column(
            "facts", postgresql.JSONB(astext_type=sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("dedupe_key", sa.String(length=120), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("not_before", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("expanded_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            f"kind IN ({_KINDS})", name=op.f("ck_notification_events_notification_event_kind")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notification_events_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_events")),
        sa.UniqueConstraint("dedupe_key", name=op.f("uq_notification_events_dedupe_key")),
    )
    op.create_index(
        "ix_notification_events_due",
        "notification_events",
        ["not_before", "id"],
        postgresql_where=sa.text("expanded_at IS NULL"),
    )
    op.create_table(
        "notification_deliveries",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("channel", sa.String(length=5), nullable=False),
        sa.Column("address", sa.String(length=254), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("body_text", sa.Text(), nullable=False),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=7), server_default="pending", nullable=False),
        sa.Column("attempts", sa.SmallInteger(), server_default="0", nullable=False),
        sa.Column(
            "next_attempt_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False
        ),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "channel IN ('email', 'sms', 'push')",
            name=op.f("ck_notification_deliveries_notification_channel"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'failed')",
            name=op.f("ck_notification_deliveries_notification_delivery_status"),
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["notification_events.id"],
            name=op.f("fk_notification_deliveries_event_id_notification_events"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notification_deliveries_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_deliveries")),
        sa.UniqueConstraint(
            "event_id",
            "user_id",
            "channel",
            "address",
            name=op.f("uq_notification_deliveries_event_id_user_id_channel_address"),
        ),
    )
    op.create_index(
        "ix_notification_deliveries_due",
        "notification_deliveries",
        ["next_attempt_at", "id"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        op.f("ix_notification_deliveries_event_id"), "notification_deliveries", ["event_id"]
    )
    op.create_index(
        op.f("ix_notification_deliveries_user_id"), "notification_deliveries", ["user_id"]
    )
    op.create_table(
        "notification_preferences",
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("kind", sa.String(length=17), nullable=False),
        sa.Column("email", sa.Boolean(), nullable=False),
        sa.Column("sms", sa.Boolean(), nullable=False),
        sa.Column("push", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.CheckConstraint(
            f"kind IN ({_KINDS})",
            name=op.f("ck_notification_preferences_notification_preference_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_notification_preferences_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("user_id", "kind", name=op.f("pk_notification_preferences")),
    )
    op.create_table(
        "push_subscriptions",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("user_id", sa.String(length=26), nullable=False),
        sa.Column("endpoint", sa.String(length=2048), nullable=False),
        sa.Column("p256dh", sa.String(length=128), nullable=False),
        sa.Column("auth", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_push_subscriptions_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_subscriptions")),
        sa.UniqueConstraint("endpoint", name=op.f("uq_push_subscriptions_endpoint")),
    )
    op.create_index(op.f("ix_push_subscriptions_user_id"), "push_subscriptions", ["user_id"])


def downgrade() -> None:
    op.drop_table("push_subscriptions")
    op.drop_table("notification_preferences")
    op.drop_table("notification_deliveries")
    op.drop_table("notification_events")
