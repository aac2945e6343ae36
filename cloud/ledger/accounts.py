"""The ledger's accounts and entry sources (pure).

Sign: an entry's ``amount_paise`` is a debit when positive, a credit when negative; the
entries of one transaction sum to zero. Accounts, and what their balance (the sum of their
entries) means:

=======================  ================================================================
``provider_clearing``    asset: money held for us at the payment provider (debit = ours)
``driver:<user id>``     liability to a driver: prepaid money not yet billed (credit);
                         a debit balance is an amount the driver owes (overstay)
``host:<host id>``       liability to a host: earnings not yet paid out (credit)
``platform_commission``  revenue: the platform's commission (credit)
``gst_payable``          liability: output GST the platform owes the government (credit)
``tcs_payable``          liability: GST TCS (CGST Act s. 52) collected from hosts (credit)
=======================  ================================================================
"""

from __future__ import annotations

import re
from enum import StrEnum


class LedgerError(Exception):
    """Base of the ledger's errors."""


class UnbalancedTransaction(LedgerError):
    def __init__(self, txn_id: str, total_paise: int) -> None:
        super().__init__(f"ledger transaction {txn_id} sums to {total_paise} paise, not 0")
        self.txn_id = txn_id
        self.total_paise = total_paise


class InvalidEntry(LedgerError):
    def __init__(self, account: str, amount_paise: object, reason: str) -> None:
        super().__init__(f"ledger entry {account} {amount_paise!r}: {reason}")
        self.account = account
        self.amount_paise = amount_paise
        self.reason = reason


class EntrySource(StrEnum):
    """Why an entry exists. Stored in ``ledger_entries.source`` (migration 0009)."""

    #: Money received in one step (an auto-captured payment, e.g. settling an amount due).
    PAYMENT = "payment"
    #: An authorization captured at the provider.
    CAPTURE = "capture"
    #: A session's bill charged to the driver (the total, GST included).
    BILL = "bill"
    #: Money returned to the driver through the provider.
    REFUND = "refund"
    COMMISSION = "commission"
    GST = "gst"
    TCS = "tcs"
    HOST_EARNING = "host_earning"
    PAYOUT = "payout"
    DISPUTE_ADJUSTMENT = "dispute_adjustment"


class PlatformAccount(StrEnum):
    PROVIDER_CLEARING = "provider_clearing"
    PLATFORM_COMMISSION = "platform_commission"
    GST_PAYABLE = "gst_payable"
    TCS_PAYABLE = "tcs_payable"


#: Every account the ledger accepts; the database checks the same (migration 0009).
ACCOUNT_PATTERN = (
    "^(provider_clearing|platform_commission|gst_payable|tcs_payable"
    "|driver:[A-Za-z0-9_-]{1,64}|host:[A-Za-z0-9_-]{1,64})$"
)
_ACCOUNT = re.compile(ACCOUNT_PATTERN)


def driver_account(user_id: str) -> str:
    return _checked(f"driver:{user_id}")


def host_account(host_id: str) -> str:
    return _checked(f"host:{host_id}")


def is_account(account: str) -> bool:
    return _ACCOUNT.fullmatch(account) is not None


def _checked(account: str) -> str:
    if not is_account(account):
        raise InvalidEntry(account, None, "not a ledger account")
    return account
