"""Index sessions by (device_id, credential_ref): a session's driver is the unlock request
whose token jti (or PIN reference) is the session's credential ref on that device, and
``GET /sessions`` looks them up that way.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 06:05:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_sessions_device_id_credential_ref", "sessions", ["device_id", "credential_ref"]
    )


def downgrade() -> None:
    op.drop_index("ix_sessions_device_id_credential_ref", table_name="sessions")
