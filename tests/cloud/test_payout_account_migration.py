"""Migration 0020 seals the payout account numbers already stored in the clear (issue 16):
it refuses without the KYC key, naming the variable, and with it leaves only the sealed
number (which the API opens for a provider registration) and its masked form."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cloud import migrate
from cloud.kyc.storage import Sealer, load_key
from cloud.payments.models import PayoutAccount, PayoutAccountKind
from cloud.payouts.accounts import destination
from cloud.pg import PgConnection
from tests.support.cloud_env import kyc_key_file

pytestmark = pytest.mark.integration

NUMBER = "50100012345678"


async def test_existing_account_numbers_are_sealed_by_the_migration(
    db_url: str, pg: PgConnection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = kyc_key_file(tmp_path)
    # Alembic's env runs its own event loop: in a thread, away from this one.
    await asyncio.to_thread(migrate.downgrade, db_url, "0019")
    try:
        await pg.execute("INSERT INTO users (id, name) VALUES ('U1', 'Asha')")
        await pg.execute("INSERT INTO hosts (id, user_id, display_name) VALUES ('H1', 'U1', 'A')")
        await pg.execute(
            "INSERT INTO payout_accounts (host_id, kind, holder_name, ifsc, account_number) "
            "VALUES ('H1', 'bank_account', 'Asha Rao', 'HDFC0001234', $1)",
            NUMBER,
        )
        plain_file = await pg.fetchval(
            "SELECT relfilenode FROM pg_class WHERE relname = 'payout_accounts'"
        )
        monkeypatch.delenv("CHARGEMITRA_KYC_KEY_FILE", raising=False)
        with pytest.raises(RuntimeError, match="CHARGEMITRA_KYC_KEY_FILE"):
            await asyncio.to_thread(migrate.upgrade, db_url, "0020")
        # Refused in its transaction: still the plaintext schema, the row untouched.
        assert await pg.fetchval("SELECT account_number FROM payout_accounts") == NUMBER
    finally:
        # With the key, whatever happened above: the database is left at head.
        monkeypatch.setenv("CHARGEMITRA_KYC_KEY_FILE", str(key))
        await asyncio.to_thread(migrate.upgrade, db_url, "head")

    columns = await pg.fetch(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'payout_accounts'"
    )
    assert "account_number" not in {c["column_name"] for c in columns}
    # The table was rewritten into a new file: the dropped column's plaintext (and the
    # cleared row versions) are not left in its pages. (Reading the file itself needs the
    # server's data directory and a CHECKPOINT, both superuser's: not from this role.)
    rewritten = await pg.fetchval(
        "SELECT relfilenode FROM pg_class WHERE relname = 'payout_accounts'"
    )
    assert rewritten != plain_file
    dumped = await pg.fetchval("SELECT row_to_json(a)::text FROM payout_accounts a")
    assert NUMBER not in dumped
    (row,) = await pg.fetch(
        "SELECT host_id, account_number_sealed, account_number_masked FROM payout_accounts"
    )
    assert row["account_number_masked"] == "XXXXXXXXXX5678"
    account = PayoutAccount(
        host_id=row["host_id"],
        kind=PayoutAccountKind.BANK_ACCOUNT,
        holder_name="Asha Rao",
        ifsc="HDFC0001234",
        account_number_sealed=row["account_number_sealed"],
        account_number_masked=row["account_number_masked"],
    )
    # The API opens it with the same key (and the host id it was sealed for).
    assert destination(account, Sealer(load_key(key))).account_number == NUMBER
    assert (await pg.fetchval("SELECT version_num FROM alembic_version")) >= "0020"
