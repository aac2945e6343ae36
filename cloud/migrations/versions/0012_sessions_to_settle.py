"""Index the sessions the settle job looks for: stopped and not yet settled.

``cloud.payments.settlement.due_sessions`` asks every ``BILLING_SETTLE_INTERVAL_S`` for the
stopped sessions whose ``billing_state`` is ``unbilled`` or ``priced``, oldest stop first. A
partial index holds only those (a handful at any time, however many sessions were billed), so
the question costs the same with ten sessions or ten million.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 22:55:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TO_SETTLE = "state = 'stopped' AND billing_state IN ('unbilled', 'priced')"


def upgrade() -> None:
    op.create_index(
        "ix_sessions_to_settle",
        "sessions",
        ["stopped_at", "id"],
        postgresql_where=sa.text(TO_SETTLE),
    )


def downgrade() -> None:
    op.drop_index("ix_sessions_to_settle", table_name="sessions")
