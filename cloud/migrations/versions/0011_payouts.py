"""Host payouts: requests, admin decisions, weekly automatic payouts, a ledger debit once.

* ``payouts.status`` gains ``rejected`` (an admin refused the request).
* ``payouts.automatic``, ``requested_by``, ``decided_by``, ``decided_at``, ``note``: who asked
  (a host's user, or the weekly job), which admin approved or rejected, why it was rejected
  or failed.
* ``uq_payouts_automatic_week`` — one automatic payout per host per week (``period_end`` of
  an automatic payout is the Monday its week starts), however often the job runs.
* ``hosts.weekly_payouts`` — the host's setting: pay my payable balance every week.
* ``uq_ledger_entries_payout_once`` — a payout's debit to its host is written once: a
  retried execution that reaches the posting a second time fails instead of paying twice.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04 22:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATUSES = ("pending", "processing", "paid", "failed", "rejected")
OLD_STATUSES = ("pending", "processing", "paid", "failed")


def _status_check(values: Sequence[str]) -> None:
    op.drop_constraint(op.f("ck_payouts_payout_status"), "payouts", type_="check")
    listed = ", ".join(f"'{v}'" for v in values)
    op.create_check_constraint(op.f("ck_payouts_payout_status"), "payouts", f"status IN ({listed})")


def upgrade() -> None:
    _status_check(STATUSES)
    op.add_column(
        "payouts",
        sa.Column("automatic", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.add_column("payouts", sa.Column("requested_by", sa.String(length=26), nullable=True))
    op.add_column("payouts", sa.Column("decided_by", sa.String(length=26), nullable=True))
    op.add_column("payouts", sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("payouts", sa.Column("note", sa.String(length=500), nullable=True))
    op.create_foreign_key(
        op.f("fk_payouts_requested_by_users"), "payouts", "users", ["requested_by"], ["id"]
    )
    op.create_foreign_key(
        op.f("fk_payouts_decided_by_users"), "payouts", "users", ["decided_by"], ["id"]
    )
    op.create_index(
        "uq_payouts_automatic_week",
        "payouts",
        ["host_id", "period_end"],
        unique=True,
        postgresql_where=sa.text("automatic"),
    )
    op.add_column(
        "hosts",
        sa.Column("weekly_payouts", sa.Boolean(), server_default=sa.false(), nullable=False),
    )
    op.create_index(
        "uq_ledger_entries_payout_once",
        "ledger_entries",
        ["payout_id"],
        unique=True,
        postgresql_where=sa.text("source = 'payout' AND account LIKE 'host:%'"),
    )


def downgrade() -> None:
    op.drop_index("uq_ledger_entries_payout_once", table_name="ledger_entries")
    op.drop_column("hosts", "weekly_payouts")
    op.drop_index("uq_payouts_automatic_week", table_name="payouts")
    op.drop_constraint(op.f("fk_payouts_decided_by_users"), "payouts", type_="foreignkey")
    op.drop_constraint(op.f("fk_payouts_requested_by_users"), "payouts", type_="foreignkey")
    for column in ("note", "decided_at", "decided_by", "requested_by", "automatic"):
        op.drop_column("payouts", column)
    op.execute("DELETE FROM payouts WHERE status = 'rejected'")
    _status_check(OLD_STATUSES)
