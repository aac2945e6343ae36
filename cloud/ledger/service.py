"""Writing ledger transactions and reading balances (the I/O around :mod:`cloud.ledger.entries`).

:func:`post` writes one balanced transaction in the caller's database transaction, so the
money moves with the state change that caused it (a captured payment, a billed session) or
not at all. PostgreSQL holds the ledger to its rules whatever the caller (migration 0009):
entries cannot be updated or deleted, and a transaction that does not sum to zero fails at
COMMIT.

Balances are sums over the entries, computed when asked, never stored: a stored balance
could disagree with the entries; a sum cannot.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.columns import ulid_pk
from cloud.ledger.accounts import EntrySource, PlatformAccount, driver_account, host_account
from cloud.ledger.entries import Txn

#: Every entry of one or more transactions in one statement (one round trip however many):
#: the columns as arrays, unnested row by row in order.
_INSERT_ENTRIES = text(
    """
INSERT INTO ledger_entries (txn_id, account, amount_paise, source, session_id, payment_id,
                            refund_id, payout_id, memo)
SELECT * FROM unnest(CAST(:txn_id AS text[]), CAST(:account AS text[]),
                     CAST(:amount AS bigint[]), CAST(:source AS text[]),
                     CAST(:session_id AS bigint[]), CAST(:payment_id AS text[]),
                     CAST(:refund_id AS text[]), CAST(:payout_id AS text[]),
                     CAST(:memo AS text[]))"""
)


async def post(db: AsyncSession, txn: Txn) -> str:
    """Write ``txn`` (already checked balanced when built); return its new ``txn_id``."""
    return (await post_all(db, [txn]))[0]


async def post_all(db: AsyncSession, txns: Iterable[Txn]) -> list[str]:
    """Write several transactions, in order, in the caller's database transaction, in one
    statement (the settle job and the webhook batch post many at once); their new ids."""
    ids: list[str] = []
    columns: dict[str, list[object]] = {
        k: []
        for k in (
            "txn_id",
            "account",
            "amount",
            "source",
            "session_id",
            "payment_id",
            "refund_id",
            "payout_id",
            "memo",
        )
    }
    for txn in txns:
        txn_id = ulid_pk()
        ids.append(txn_id)
        memo = txn.memo[:200]
        for e in txn.entries:
            columns["txn_id"].append(txn_id)
            columns["account"].append(e.account)
            columns["amount"].append(e.amount_paise)
            columns["source"].append(e.source.value)
            columns["session_id"].append(e.session_id)
            columns["payment_id"].append(e.payment_id)
            columns["refund_id"].append(e.refund_id)
            columns["payout_id"].append(e.payout_id)
            columns["memo"].append(memo)
    if columns["txn_id"]:
        await db.execute(_INSERT_ENTRIES, columns)
    return ids


async def account_balance(db: AsyncSession, account: str) -> int:
    """The sum of ``account``'s entries (debits positive, credits negative)."""
    total = await db.scalar(
        text("SELECT coalesce(sum(amount_paise), 0) FROM ledger_entries WHERE account = :a"),
        {"a": account},
    )
    return int(total or 0)


async def ledger_total(db: AsyncSession) -> int:
    """The sum of every entry: 0, always (a nonzero sum is a broken ledger)."""
    total = await db.scalar(text("SELECT coalesce(sum(amount_paise), 0) FROM ledger_entries"))
    return int(total or 0)


@dataclass(frozen=True, slots=True)
class HostBalance:
    """A host's money, in paise. ``earned = held + requested + payable + paid``.

    * earned — everything billing has credited the host (net of the GST on commission and
      the TCS withheld, and of dispute adjustments);
    * held — the part earned within the hold period (disputes and chargebacks come early),
      and the earnings of a session under an open dispute, whatever their age;
    * requested — asked for in payouts not yet paid (pending or processing): reserved, so
      two requests cannot both take the same money;
    * payable — earned, past the hold, neither requested nor paid: what a new payout may
      take (negative only when a dispute took back more than was left);
    * paid — paid out (the payout entries of the ledger).
    """

    earned_paise: int
    held_paise: int
    requested_paise: int
    payable_paise: int
    paid_paise: int
    #: Of ``earned``, the part under an open dispute (held, whatever its age).
    disputed_paise: int = 0


#: Disputes that hold a session's earnings until they are resolved (cloud.disputes.models).
HOLDING_DISPUTES = ("open", "under_review")

_HOST_BALANCE = text(
    """
WITH disputed AS (
  SELECT DISTINCT session_id FROM disputes WHERE status = ANY(:holding)
)
SELECT
  coalesce(-sum(amount_paise) FILTER (WHERE source <> :payout), 0) AS earned,
  coalesce(-sum(amount_paise) FILTER (
    WHERE source <> :payout
      AND (created_at > :cutoff OR session_id IN (SELECT session_id FROM disputed))), 0)
    AS withheld,
  coalesce(-sum(amount_paise) FILTER (
    WHERE source <> :payout AND session_id IN (SELECT session_id FROM disputed)), 0)
    AS disputed,
  coalesce(sum(amount_paise) FILTER (WHERE source = :payout), 0) AS paid,
  (SELECT coalesce(sum(p.amount_paise), 0) FROM payouts p
    WHERE p.host_id = :host_id AND p.status IN ('pending', 'processing')) AS requested
FROM ledger_entries WHERE account = :account
"""
)


async def host_balance(
    db: AsyncSession, host_id: str, *, now: datetime, hold: timedelta
) -> HostBalance:
    """The balance of ``host_id`` at ``now`` with earnings held for ``hold``. A caller about
    to take money from it (a payout request) locks the host's row first
    (cloud/payouts/service.py), so two callers never read the same payable."""
    row = (
        await db.execute(
            _HOST_BALANCE,
            {
                "account": host_account(host_id),
                "host_id": host_id,
                "payout": EntrySource.PAYOUT.value,
                "cutoff": now - hold,
                "holding": list(HOLDING_DISPUTES),
            },
        )
    ).one()
    earned, withheld, paid = int(row.earned), int(row.withheld), int(row.paid)
    requested = int(row.requested)
    # Payouts take the oldest earnings first, so what is held is the recent part of what is
    # left; a recent dispute debit must not make it negative (it reduces the payable).
    held = max(0, min(withheld, earned - paid - requested))
    return HostBalance(
        earned_paise=earned,
        held_paise=held,
        requested_paise=requested,
        payable_paise=earned - held - requested - paid,
        paid_paise=paid,
        disputed_paise=int(row.disputed),
    )


#: A host's earnings per week (Monday 00:00 IST), as ``earned`` counts them: every entry on
#: the host's account but payouts (billing net of commission, GST and TCS; dispute debits).
_HOST_WEEKLY = text(
    """
SELECT date_trunc('week', created_at AT TIME ZONE 'Asia/Kolkata') AS week,
       coalesce(-sum(amount_paise), 0) AS earned
FROM ledger_entries
WHERE account = :account AND source <> :payout AND created_at >= :since
GROUP BY week ORDER BY week
"""
)


async def host_weekly_earned(db: AsyncSession, host_id: str, *, since: datetime) -> dict[date, int]:
    """What ``host_id`` earned each week since ``since``, keyed by the week's Monday (IST);
    weeks without an entry are absent."""
    rows = await db.execute(
        _HOST_WEEKLY,
        {"account": host_account(host_id), "payout": EntrySource.PAYOUT.value, "since": since},
    )
    return {row.week.date(): int(row.earned) for row in rows}


async def driver_balance(db: AsyncSession, user_id: str) -> int:
    """The driver's money we hold (positive: prepaid and not yet billed or refunded) or the
    amount the driver owes (negative: billed beyond the prepayment)."""
    return -await account_balance(db, driver_account(user_id))


async def commission_earned(db: AsyncSession) -> int:
    """The platform's commission, net of dispute adjustments it absorbed."""
    return -await account_balance(db, PlatformAccount.PLATFORM_COMMISSION.value)


async def gst_collected(db: AsyncSession) -> int:
    """Output GST the platform owes (on unregistered hosts' charges and on commissions)."""
    return -await account_balance(db, PlatformAccount.GST_PAYABLE.value)


async def tcs_collected(db: AsyncSession) -> int:
    return -await account_balance(db, PlatformAccount.TCS_PAYABLE.value)


@dataclass(frozen=True, slots=True)
class SessionMoney:
    """A session's money movements, in paise: for a settled session without an amount
    due, ``captured - refunded == billed``."""

    captured_paise: int
    refunded_paise: int
    billed_paise: int


# Captures and refunds read on the clearing account, the bill on the driver's.
_SESSION_MONEY = text(
    """
SELECT
  coalesce(sum(amount_paise) FILTER (
    WHERE account = :clearing AND source IN ('capture', 'payment')), 0) AS captured,
  coalesce(-sum(amount_paise) FILTER (
    WHERE account = :clearing AND source = 'refund'), 0) AS refunded,
  coalesce(sum(amount_paise) FILTER (
    WHERE account LIKE 'driver:%' AND source = 'bill'), 0) AS billed
FROM ledger_entries WHERE session_id = :session_id
"""
)


async def session_money(db: AsyncSession, session_id: int) -> SessionMoney:
    params = {"session_id": session_id, "clearing": PlatformAccount.PROVIDER_CLEARING.value}
    row = (await db.execute(_SESSION_MONEY, params)).one()
    return SessionMoney(int(row.captured), int(row.refunded), int(row.billed))
