"""Billing extensions (issue 16): invoices for a kept cancellation fee; the
``extend_session`` command of an extended booking (cloud/bookings/extension.py) among the
names ``device_commands`` admits.

A late cancellation's fee is billed to the host like a session (cloud/payments/
cancellation.py), and its GST tax invoice is a supply without a session: ``invoices``
gains ``booking_id`` and ``session_id`` becomes optional, exactly one of the two is set
(``ck_invoices_one_supply``), and a booking has at most one invoice
(``uq_invoices_booking_id_invoice``, as ``uq_invoices_session_id_invoice`` for sessions).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 00:10:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COMMANDS_BEFORE = (
    "start_session",
    "stop_session",
    "auth_list_update",
    "config_update",
    "diagnostics",
    "relay_test",
    "revoke_pins",
)
COMMANDS_AFTER = (*COMMANDS_BEFORE, "extend_session")


def _command_check(names: tuple[str, ...]) -> None:
    listed = ", ".join(f"'{n}'" for n in names)
    name = op.f("ck_device_commands_command_name")
    op.drop_constraint(name, "device_commands", type_="check")
    op.create_check_constraint(name, "device_commands", f"name IN ({listed})")


def upgrade() -> None:
    _command_check(COMMANDS_AFTER)
    op.add_column("invoices", sa.Column("booking_id", sa.String(length=26), nullable=True))
    op.create_foreign_key(
        op.f("fk_invoices_booking_id_bookings"), "invoices", "bookings", ["booking_id"], ["id"]
    )
    op.create_index(op.f("ix_invoices_booking_id"), "invoices", ["booking_id"], unique=False)
    op.create_index(
        "uq_invoices_booking_id_invoice",
        "invoices",
        ["booking_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'invoice'"),
    )
    op.alter_column("invoices", "session_id", existing_type=sa.BigInteger(), nullable=True)
    op.create_check_constraint(
        op.f("ck_invoices_one_supply"),
        "invoices",
        "(session_id IS NULL) <> (booking_id IS NULL)",
    )


def downgrade() -> None:
    op.execute("DELETE FROM device_commands WHERE name = 'extend_session'")
    _command_check(COMMANDS_BEFORE)
    # IF EXISTS: this slot was reserved empty first, so databases migrated then stand at
    # head without these objects, and their first downgrade comes through here.
    op.execute("ALTER TABLE invoices DROP CONSTRAINT IF EXISTS ck_invoices_one_supply")
    # A downgrade drops what only this revision can hold: the invoices of cancellation fees
    # go with their column. They are frozen (migration 0010's trigger refuses DELETE), so the
    # trigger is set aside for this one statement, inside the migration's transaction.
    op.execute(
        """
DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM information_schema.columns
             WHERE table_name = 'invoices' AND column_name = 'booking_id') THEN
    ALTER TABLE invoices DISABLE TRIGGER invoices_frozen;
    DELETE FROM invoices WHERE booking_id IS NOT NULL AND kind = 'credit_note';
    DELETE FROM invoices WHERE booking_id IS NOT NULL;
    ALTER TABLE invoices ENABLE TRIGGER invoices_frozen;
  END IF;
END $$"""
    )
    op.alter_column("invoices", "session_id", existing_type=sa.BigInteger(), nullable=False)
    op.execute("DROP INDEX IF EXISTS uq_invoices_booking_id_invoice")
    op.execute("DROP INDEX IF EXISTS ix_invoices_booking_id")
    op.execute("ALTER TABLE invoices DROP COLUMN IF EXISTS booking_id")  # and its foreign key
