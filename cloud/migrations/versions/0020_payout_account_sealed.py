"""Payout account numbers sealed at rest (issue 16).

``payout_accounts.account_number`` (plaintext) becomes ``account_number_sealed`` (AES-256-GCM
under the KYC key, ``CHARGEMITRA_KYC_KEY_FILE``, with ``payout_account|{host_id}``
authenticated beside it: cloud/kyc/storage.py ``Sealer``, cloud/payouts/accounts.py) and
``account_number_masked`` (``X``s and the last four digits, all that answers show).

Also ``uq_ledger_entries_payout_once`` (a payout's debit to its host, once) covers the debit
only (``amount_paise > 0``): a payout pulled back after it was paid (Stripe
``transfer.reversed``, cloud/payouts/service.py) is credited back to the host as entries of
the same payout.

Existing rows are sealed here, so the upgrade needs the key when any bank account is stored
(and refuses, naming the variable, without it); with none stored it needs nothing. The
downgrade opens them again with the same key. The plaintext is cleared and the table
rewritten (CLUSTER), so the numbers do not linger in its pages behind the dropped column
(the server's WAL and freed disk blocks are beyond a migration's reach).

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 03:10:00.000000
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op

from cloud.kyc.storage import Sealer, load_key

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ACCOUNT_NUMBER = "^[0-9]{9,18}$"
MASKED = "^X{5,14}[0-9]{4}$"
KEY_VARIABLE = "CHARGEMITRA_KYC_KEY_FILE"

_KINDS_SEALED = (
    "(kind = 'bank_account' AND ifsc IS NOT NULL AND account_number_sealed IS NOT NULL "
    "AND account_number_masked IS NOT NULL AND vpa IS NULL "
    "AND stripe_account_id IS NULL) OR "
    "(kind = 'vpa' AND vpa IS NOT NULL AND ifsc IS NULL "
    "AND account_number_sealed IS NULL AND account_number_masked IS NULL "
    "AND stripe_account_id IS NULL) OR "
    "(kind = 'stripe_account' AND stripe_account_id IS NOT NULL AND ifsc IS NULL "
    "AND account_number_sealed IS NULL AND account_number_masked IS NULL "
    "AND vpa IS NULL)"
)
_KINDS_PLAIN = (
    "(kind = 'bank_account' AND ifsc IS NOT NULL AND account_number IS NOT NULL "
    "AND vpa IS NULL AND stripe_account_id IS NULL) OR "
    "(kind = 'vpa' AND vpa IS NOT NULL AND ifsc IS NULL AND account_number IS NULL "
    "AND stripe_account_id IS NULL) OR "
    "(kind = 'stripe_account' AND stripe_account_id IS NOT NULL AND ifsc IS NULL "
    "AND account_number IS NULL AND vpa IS NULL)"
)


def _sealer(rows: int) -> Sealer:
    path = os.environ.get(KEY_VARIABLE, "").strip()
    if not path:
        raise RuntimeError(
            f"{rows} payout account number(s) to seal (or open): set {KEY_VARIABLE} to the "
            "KYC key file the API uses"
        )
    return Sealer(load_key(Path(path)))


def _associated(host_id: str) -> bytes:
    # As cloud/payouts/accounts.py authenticates it (kept literal: a migration is history).
    return f"payout_account|{host_id}".encode()


_PAYOUT_ONCE = "uq_ledger_entries_payout_once"
_DEBIT_ONLY = "source = 'payout' AND account LIKE 'host:%' AND amount_paise > 0"
_ANY_ENTRY = "source = 'payout' AND account LIKE 'host:%'"


def _payout_once(where: str) -> None:
    op.execute(f"DROP INDEX IF EXISTS {_PAYOUT_ONCE}")
    op.create_index(
        _PAYOUT_ONCE,
        "ledger_entries",
        ["payout_id"],
        unique=True,
        postgresql_where=sa.text(where),
    )


def upgrade() -> None:
    _payout_once(_DEBIT_ONLY)
    op.add_column("payout_accounts", sa.Column("account_number_sealed", sa.LargeBinary()))
    op.add_column("payout_accounts", sa.Column("account_number_masked", sa.String(length=18)))
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT host_id, account_number FROM payout_accounts "
            "WHERE account_number IS NOT NULL FOR UPDATE"
        )
    ).all()
    # The checks name the plaintext column (and want it set for a bank account): dropped
    # before the number is cleared below.
    op.drop_constraint(op.f("ck_payout_accounts_fields_of_kind"), "payout_accounts", type_="check")
    op.drop_constraint(op.f("ck_payout_accounts_account_format"), "payout_accounts", type_="check")
    if rows:
        sealer = _sealer(len(rows))
        for host_id, number in rows:
            conn.execute(
                sa.text(
                    "UPDATE payout_accounts SET account_number_sealed = :sealed, "
                    "account_number_masked = :masked, account_number = NULL "
                    "WHERE host_id = :host"
                ),
                {
                    "sealed": sealer.seal(number.encode(), _associated(host_id)),
                    "masked": "X" * (len(number) - 4) + number[-4:],
                    "host": host_id,
                },
            )
    op.drop_column("payout_accounts", "account_number")
    # DROP COLUMN only hides the column, and the UPDATE above leaves the old row versions in
    # the table's pages: the plaintext numbers stay on disk until the table is rewritten.
    # VACUUM FULL cannot run in the transaction alembic runs this in; CLUSTER of a named
    # table can: it copies only the live rows, with dropped columns as NULL, into a new
    # file and unlinks the old one at commit. The clustering mark is removed again.
    op.execute("CLUSTER payout_accounts USING pk_payout_accounts")
    op.execute("ALTER TABLE payout_accounts SET WITHOUT CLUSTER")
    op.create_check_constraint(
        op.f("ck_payout_accounts_masked_account_format"),
        "payout_accounts",
        f"account_number_masked ~ '{MASKED}'",
    )
    op.create_check_constraint(
        op.f("ck_payout_accounts_fields_of_kind"), "payout_accounts", _KINDS_SEALED
    )


def downgrade() -> None:
    _payout_once(_ANY_ENTRY)
    op.add_column("payout_accounts", sa.Column("account_number", sa.String(length=18)))
    conn = op.get_bind()
    rows = conn.execute(
        sa.text(
            "SELECT host_id, account_number_sealed FROM payout_accounts "
            "WHERE account_number_sealed IS NOT NULL FOR UPDATE"
        )
    ).all()
    if rows:
        sealer = _sealer(len(rows))
        for host_id, sealed in rows:
            number = sealer.open(bytes(sealed), _associated(host_id), what=host_id).decode()
            conn.execute(
                sa.text(
                    "UPDATE payout_accounts SET account_number = :number WHERE host_id = :host"
                ),
                {"number": number, "host": host_id},
            )
    op.drop_constraint(op.f("ck_payout_accounts_fields_of_kind"), "payout_accounts", type_="check")
    op.drop_constraint(
        op.f("ck_payout_accounts_masked_account_format"), "payout_accounts", type_="check"
    )
    op.drop_column("payout_accounts", "account_number_sealed")
    op.drop_column("payout_accounts", "account_number_masked")
    op.create_check_constraint(
        op.f("ck_payout_accounts_account_format"),
        "payout_accounts",
        f"account_number ~ '{ACCOUNT_NUMBER}'",
    )
    op.create_check_constraint(
        op.f("ck_payout_accounts_fields_of_kind"), "payout_accounts", _KINDS_PLAIN
    )
