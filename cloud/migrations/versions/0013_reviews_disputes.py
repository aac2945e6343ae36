"""Reviews, host replies, driver ratings and disputes (issue 18).

* ``reviews``: the host's reply (``host_reply``, ``host_replied_at``); hiding by an admin with
  a reason (``hidden_at``, ``hidden_by``, ``hidden_reason``: both set or neither) instead of
  the unused pre-moderation status (a review is public when written); text bounds.
* ``driver_ratings`` (new): a host's private rating of the driver of one session.
* ``disputes``: a reason code beside the driver's text (``reason`` becomes ``description``),
  the host's response, who a refund is charged to (host or platform); one dispute per
  session (the index on ``session_id`` becomes unique); indexes for the queues by status and
  by driver.
* ``dispute_photos`` (new): evidence, bytes in the photo store.
* ``refunds``: one live (not failed) refund per (payment, reason), a partial unique index —
  the database's backstop against two resolutions of one dispute both refunding.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-05 00:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REASONS = ("charger_did_not_start", "stopped_early", "billed_wrong", "damage", "other")


def _timestamps() -> list[sa.Column[datetime]]:
    return [
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
    ]


def upgrade() -> None:
    # --- reviews
    op.drop_column("reviews", "moderation_status")
    op.add_column("reviews", sa.Column("host_reply", sa.Text(), nullable=True))
    op.add_column(
        "reviews", sa.Column("host_replied_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column("reviews", sa.Column("hidden_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("reviews", sa.Column("hidden_by", sa.String(length=26), nullable=True))
    op.add_column("reviews", sa.Column("hidden_reason", sa.String(length=500), nullable=True))
    op.create_foreign_key(
        op.f("fk_reviews_hidden_by_users"), "reviews", "users", ["hidden_by"], ["id"]
    )
    op.create_check_constraint(
        op.f("ck_reviews_body_length"), "reviews", "char_length(body) <= 2000"
    )
    op.create_check_constraint(
        op.f("ck_reviews_reply_length"), "reviews", "char_length(host_reply) <= 1000"
    )
    op.create_check_constraint(
        op.f("ck_reviews_hidden_with_reason"),
        "reviews",
        "(hidden_at IS NULL) = (hidden_reason IS NULL)",
    )

    # --- driver ratings
    op.create_table(
        "driver_ratings",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("session_id", sa.BigInteger(), nullable=False),
        sa.Column("driver_id", sa.String(length=26), nullable=False),
        sa.Column("host_id", sa.String(length=26), nullable=False),
        sa.Column("rated_by", sa.String(length=26), nullable=False),
        sa.Column("rating", sa.SmallInteger(), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        *_timestamps(),
        sa.CheckConstraint("rating BETWEEN 1 AND 5", name=op.f("ck_driver_ratings_rating_range")),
        sa.CheckConstraint("char_length(note) <= 500", name=op.f("ck_driver_ratings_note_length")),
        sa.ForeignKeyConstraint(
            ["driver_id"], ["users.id"], name=op.f("fk_driver_ratings_driver_id_users")
        ),
        sa.ForeignKeyConstraint(
            ["host_id"], ["hosts.id"], name=op.f("fk_driver_ratings_host_id_hosts")
        ),
        sa.ForeignKeyConstraint(
            ["rated_by"], ["users.id"], name=op.f("fk_driver_ratings_rated_by_users")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"], ["sessions.id"], name=op.f("fk_driver_ratings_session_id_sessions")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_driver_ratings")),
        sa.UniqueConstraint("session_id", name=op.f("uq_driver_ratings_session_id")),
    )
    op.create_index(op.f("ix_driver_ratings_driver_id"), "driver_ratings", ["driver_id"])
    op.create_index(op.f("ix_driver_ratings_host_id"), "driver_ratings", ["host_id"])

    # --- disputes
    op.alter_column("disputes", "reason", new_column_name="description")
    op.create_check_constraint(
        op.f("ck_disputes_description_length"), "disputes", "char_length(description) <= 2000"
    )
    op.add_column(
        "disputes",
        sa.Column(
            "reason_code",
            sa.Enum(*REASONS, name="dispute_reason", native_enum=False, create_constraint=True),
            nullable=True,
        ),
    )
    # Rows opened before reason codes existed (none in practice) were free text: "other".
    op.execute("UPDATE disputes SET reason_code = 'other'")
    op.alter_column("disputes", "reason_code", nullable=False)
    op.add_column("disputes", sa.Column("host_response", sa.Text(), nullable=True))
    op.add_column(
        "disputes", sa.Column("host_responded_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_check_constraint(
        op.f("ck_disputes_response_length"), "disputes", "char_length(host_response) <= 2000"
    )
    op.add_column(
        "disputes",
        sa.Column(
            "charged_to",
            sa.Enum(
                "host",
                "platform",
                name="dispute_charged_to",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=True,
        ),
    )
    op.drop_index(op.f("ix_disputes_session_id"), table_name="disputes")
    op.create_index(op.f("ix_disputes_session_id"), "disputes", ["session_id"], unique=True)
    op.create_index(op.f("ix_disputes_raised_by"), "disputes", ["raised_by"])
    op.create_index(op.f("ix_disputes_status"), "disputes", ["status"])

    op.create_table(
        "dispute_photos",
        sa.Column("id", sa.String(length=26), nullable=False),
        sa.Column("dispute_id", sa.String(length=26), nullable=False),
        sa.Column("storage_key", sa.String(length=200), nullable=False),
        sa.Column("content_type", sa.String(length=40), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("size_bytes > 0", name=op.f("ck_dispute_photos_size_positive")),
        sa.ForeignKeyConstraint(
            ["dispute_id"],
            ["disputes.id"],
            name=op.f("fk_dispute_photos_dispute_id_disputes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dispute_photos")),
        sa.UniqueConstraint("storage_key", name=op.f("uq_dispute_photos_storage_key")),
    )
    op.create_index(op.f("ix_dispute_photos_dispute_id"), "dispute_photos", ["dispute_id"])
    # --- refunds: one live refund per (payment, reason), the backstop for two resolutions
    # of one dispute at once (cloud/payments/models.py)
    op.create_index(
        "uq_refunds_payment_reason_live",
        "refunds",
        ["payment_id", "reason"],
        unique=True,
        postgresql_where=sa.text("status <> 'failed'"),
    )


def downgrade() -> None:
    op.drop_index("uq_refunds_payment_reason_live", table_name="refunds")
    op.drop_index(op.f("ix_dispute_photos_dispute_id"), table_name="dispute_photos")
    op.drop_table("dispute_photos")
    op.drop_index(op.f("ix_disputes_status"), table_name="disputes")
    op.drop_index(op.f("ix_disputes_raised_by"), table_name="disputes")
    op.drop_index(op.f("ix_disputes_session_id"), table_name="disputes")
    op.create_index(op.f("ix_disputes_session_id"), "disputes", ["session_id"], unique=False)
    op.drop_column("disputes", "charged_to")
    op.drop_constraint(op.f("ck_disputes_response_length"), "disputes", type_="check")
    op.drop_column("disputes", "host_responded_at")
    op.drop_column("disputes", "host_response")
    op.drop_column("disputes", "reason_code")
    op.drop_constraint(op.f("ck_disputes_description_length"), "disputes", type_="check")
    op.alter_column("disputes", "description", new_column_name="reason")

    op.drop_index(op.f("ix_driver_ratings_host_id"), table_name="driver_ratings")
    op.drop_index(op.f("ix_driver_ratings_driver_id"), table_name="driver_ratings")
    op.drop_table("driver_ratings")

    op.drop_constraint(op.f("ck_reviews_hidden_with_reason"), "reviews", type_="check")
    op.drop_constraint(op.f("ck_reviews_reply_length"), "reviews", type_="check")
    op.drop_constraint(op.f("ck_reviews_body_length"), "reviews", type_="check")
    op.drop_constraint(op.f("fk_reviews_hidden_by_users"), "reviews", type_="foreignkey")
    op.drop_column("reviews", "hidden_reason")
    op.drop_column("reviews", "hidden_by")
    op.drop_column("reviews", "hidden_at")
    op.drop_column("reviews", "host_replied_at")
    op.drop_column("reviews", "host_reply")
    op.add_column(
        "reviews",
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
    )
