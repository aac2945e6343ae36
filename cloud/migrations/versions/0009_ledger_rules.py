"""The ledger's rules, enforced by PostgreSQL: entries are append-only, every transaction
balances, each entry names its source, its account is one the ledger knows, and it may name
the session it belongs to.

* ``ledger_entries.source`` — why the entry exists (``cloud.ledger.accounts.EntrySource``).
* ``ledger_entries.session_id`` — the charging session an entry bills, captures or refunds
  for, so "captured - refunded = billed" is a query per session.
* ``ck_ledger_entries_account_known`` — an account is a fixed platform account or
  ``driver:<id>`` / ``host:<id>`` (``cloud.ledger.accounts``).
* ``ledger_entries_append_only`` — a row trigger refusing UPDATE and DELETE: a mistake is
  corrected by a new, reversing transaction, never by editing history. (TRUNCATE, a statement
  an operator or the test harness runs on purpose, is not a row change and stays possible.)
* ``ledger_entries_stamp`` — ``created_at`` is the posting transaction's ``now()``, whatever
  the INSERT says, and a transaction id whose entries were written by an earlier database
  transaction is refused: a ledger transaction is written whole, once.
* ``ledger_txn_balanced`` — a deferred constraint trigger: at COMMIT, every ledger transaction
  touched sums to zero, or the database transaction fails.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04 22:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: cloud.ledger.accounts.EntrySource, frozen here as of this revision.
SOURCES = (
    "payment",
    "capture",
    "bill",
    "refund",
    "commission",
    "gst",
    "tcs",
    "host_earning",
    "payout",
    "dispute_adjustment",
)

#: cloud.ledger.accounts.ACCOUNT_PATTERN, frozen here as of this revision.
ACCOUNT_PATTERN = (
    "^(provider_clearing|platform_commission|gst_payable|tcs_payable"
    "|driver:[A-Za-z0-9_-]{1,64}|host:[A-Za-z0-9_-]{1,64})$"
)

APPEND_ONLY = (
    """
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'ledger_entries is append-only: % refused on entry %', TG_OP, OLD.id
    USING ERRCODE = 'integrity_constraint_violation';
END $$
""",
    """
CREATE TRIGGER ledger_entries_append_only BEFORE UPDATE OR DELETE ON ledger_entries
  FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()
""",
)

STAMP = (
    """
CREATE FUNCTION ledger_stamp() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  NEW.created_at := now();
  IF EXISTS (SELECT 1 FROM ledger_entries WHERE txn_id = NEW.txn_id AND created_at <> now())
  THEN
    RAISE EXCEPTION 'ledger transaction % was already posted', NEW.txn_id
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END $$
""",
    """
CREATE TRIGGER ledger_entries_stamp BEFORE INSERT ON ledger_entries
  FOR EACH ROW EXECUTE FUNCTION ledger_stamp()
""",
)

BALANCED = (
    """
CREATE FUNCTION ledger_txn_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  total numeric;
BEGIN
  SELECT sum(amount_paise) INTO total FROM ledger_entries WHERE txn_id = NEW.txn_id;
  IF total <> 0 THEN
    RAISE EXCEPTION 'ledger transaction % does not balance: its entries sum to % paise',
      NEW.txn_id, total
      USING ERRCODE = 'check_violation', CONSTRAINT = 'ledger_txn_balanced';
  END IF;
  RETURN NULL;
END $$
""",
    """
CREATE CONSTRAINT TRIGGER ledger_txn_balanced AFTER INSERT ON ledger_entries
  DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION ledger_txn_balanced()
""",
)


def upgrade() -> None:
    op.add_column(
        "ledger_entries",
        sa.Column(
            "source",
            sa.Enum(*SOURCES, name="ledger_source", native_enum=False, create_constraint=True),
            nullable=False,
        ),
    )
    op.add_column("ledger_entries", sa.Column("session_id", sa.BigInteger(), nullable=True))
    op.create_foreign_key(
        op.f("fk_ledger_entries_session_id_sessions"),
        "ledger_entries",
        "sessions",
        ["session_id"],
        ["id"],
    )
    op.create_index(
        op.f("ix_ledger_entries_session_id"), "ledger_entries", ["session_id"], unique=False
    )
    op.create_check_constraint(
        op.f("ck_ledger_entries_account_known"), "ledger_entries", f"account ~ '{ACCOUNT_PATTERN}'"
    )
    # One statement per execute: asyncpg prepares each, and a prepared statement is one.
    for statement in (*APPEND_ONLY, *STAMP, *BALANCED):
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP TRIGGER ledger_txn_balanced ON ledger_entries")
    op.execute("DROP FUNCTION ledger_txn_balanced()")
    op.execute("DROP TRIGGER ledger_entries_stamp ON ledger_entries")
    op.execute("DROP FUNCTION ledger_stamp()")
    op.execute("DROP TRIGGER ledger_entries_append_only ON ledger_entries")
    op.execute("DROP FUNCTION ledger_refuse_change()")
    op.drop_constraint(op.f("ck_ledger_entries_account_known"), "ledger_entries", type_="check")
    op.drop_index(op.f("ix_ledger_entries_session_id"), table_name="ledger_entries")
    op.drop_constraint(
        op.f("fk_ledger_entries_session_id_sessions"), "ledger_entries", type_="foreignkey"
    )
    op.drop_column("ledger_entries", "session_id")
    op.drop_column("ledger_entries", "source")
