"""Authorization decisions reported by devices (``auth`` topic): one row per decision.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 05:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: protocols.enums.CredentialKind and AuthorizationStatus, as stored (varchar + CHECK).
CREDENTIAL_KINDS = ("IdTag", "Token", "Pin", "Remote")
AUTHORIZATION_STATUSES = (
    "Accepted",
    "Blocked",
    "Expired",
    "Invalid",
    "ConcurrentTx",
    "NotAtThisCharger",
    "NotAtThisTime",
    "Replayed",
    "Unknown",
    "ClockUnsynced",
)


def upgrade() -> None:
    op.create_table(
        "auth_decisions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("msg_id", sa.String(length=26), nullable=False),
        sa.Column("connector", sa.SmallInteger(), nullable=False),
        sa.Column(
            "credential_kind",
            sa.Enum(
                *CREDENTIAL_KINDS,
                name="credential_kind",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("credential_ref", sa.String(length=128), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                *AUTHORIZATION_STATUSES,
                name="authorization_status",
                native_enum=False,
                create_constraint=True,
            ),
            nullable=False,
        ),
        sa.Column("reason", sa.String(length=500), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("clock_synced", sa.Boolean(), nullable=False),
        sa.Column("device_session_id", sa.String(length=26), nullable=True),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_decisions")),
        sa.UniqueConstraint("device_id", "msg_id", name=op.f("uq_auth_decisions_device_id_msg_id")),
        sa.UniqueConstraint("device_id", "seq", name=op.f("uq_auth_decisions_device_id_seq")),
    )
    op.create_index(
        "ix_auth_decisions_device_id_decided_at",
        "auth_decisions",
        ["device_id", "decided_at"],
        unique=False,
    )
    op.create_index(
        "ix_auth_decisions_credential_ref", "auth_decisions", ["credential_ref"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_auth_decisions_credential_ref", table_name="auth_decisions")
    op.drop_index("ix_auth_decisions_device_id_decided_at", table_name="auth_decisions")
    op.drop_table("auth_decisions")
