"""Hosts' payout destinations (issue 16, item 4).

* ``payout_accounts`` — one per host: a bank account (IFSC, account number, holder) or a UPI
  VPA for RazorpayX, or a Stripe Connect account id; with the provider's records made for it
  on the first payout (RazorpayX contact and fund account ids).
* ``hosts.payout_account_ref`` goes: nothing ever wrote it, and the destination's provider
  reference now lives with the destination it belongs to (``payout_accounts.destination_ref``).

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 01:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

IFSC = "^[A-Z]{4}0[A-Z0-9]{6}$"
ACCOUNT_NUMBER = "^[0-9]{9,18}$"
STRIPE_ACCOUNT = "^acct_[A-Za-z0-9]{1,58}$"


def upgrade() -> None:
    op.create_table(
        "payout_accounts",
        sa.Column("host_id", sa.String(length=26), nullable=False),
        sa.Column("kind", sa.String(length=14), nullable=False),
        sa.Column("holder_name", sa.String(length=120), nullable=False),
        sa.Column("ifsc", sa.String(length=11), nullable=True),
        sa.Column("account_number", sa.String(length=18), nullable=True),
        sa.Column("vpa", sa.String(length=320), nullable=True),
        sa.Column("stripe_account_id", sa.String(length=64), nullable=True),
        sa.Column("contact_ref", sa.String(length=64), nullable=True),
        sa.Column("destination_ref", sa.String(length=64), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=False
        ),
        sa.CheckConstraint(
            "kind IN ('bank_account', 'vpa', 'stripe_account')",
            name=op.f("ck_payout_accounts_payout_account_kind"),
        ),
        sa.CheckConstraint(f"ifsc ~ '{IFSC}'", name=op.f("ck_payout_accounts_ifsc_format")),
        sa.CheckConstraint(
            f"account_number ~ '{ACCOUNT_NUMBER}'", name=op.f("ck_payout_accounts_account_format")
        ),
        sa.CheckConstraint(
            f"stripe_account_id ~ '{STRIPE_ACCOUNT}'",
            name=op.f("ck_payout_accounts_stripe_account_format"),
        ),
        sa.CheckConstraint(
            "(kind = 'bank_account' AND ifsc IS NOT NULL AND account_number IS NOT NULL "
            "AND vpa IS NULL AND stripe_account_id IS NULL) OR "
            "(kind = 'vpa' AND vpa IS NOT NULL AND ifsc IS NULL AND account_number IS NULL "
            "AND stripe_account_id IS NULL) OR "
            "(kind = 'stripe_account' AND stripe_account_id IS NOT NULL AND ifsc IS NULL "
            "AND account_number IS NULL AND vpa IS NULL)",
            name=op.f("ck_payout_accounts_fields_of_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["host_id"],
            ["hosts.id"],
            name=op.f("fk_payout_accounts_host_id_hosts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("host_id", name=op.f("pk_payout_accounts")),
    )
    op.drop_column("hosts", "payout_account_ref")


def downgrade() -> None:
    op.add_column("hosts", sa.Column("payout_account_ref", sa.String(length=128), nullable=True))
    op.drop_table("payout_accounts")
