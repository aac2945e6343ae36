"""What the web pages need in the database (issue 19): nothing, on purpose.

Reserved in the migration chain for the pages; it stays empty because the pages' cookie
sessions live in Redis over the accounts' own refresh tokens (cloud/web/websession.py,
docs/decisions.md "Pages (issue 19)"), so the chain keeps the revision as a no-op.

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 00:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
