"""Payments, refunds, the double-entry ledger, host payouts and provider webhook events.

Every amount is integer paise (BIGINT). Ledger entries of one ``txn_id`` sum to zero: debit
positive, credit negative.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    false,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cloud.columns import ULID_LEN, Paise, non_negative, text_enum, ulid_pk
from cloud.db import Base, Timestamped
from cloud.ledger.accounts import ACCOUNT_PATTERN, EntrySource


class PaymentStatus(StrEnum):
    CREATED = "created"
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    FAILED = "failed"
    REFUNDED = "refunded"
    PARTIALLY_REFUNDED = "partially_refunded"


class RefundStatus(StrEnum):
    PENDING = "pending"
    PROCESSED = "processed"
    FAILED = "failed"


class PayoutStatus(StrEnum):
    """A payout's life (cloud/payouts/rules.py): ``pending`` (requested, awaiting an admin)
    → ``processing`` (approved, sent to the provider) → ``paid`` or ``failed``; or
    ``pending`` → ``rejected``. Pending and processing payouts hold their amount out of the
    host's payable balance."""

    PENDING = "pending"
    PROCESSING = "processing"
    PAID = "paid"
    FAILED = "failed"
    REJECTED = "rejected"


class PayoutAccountKind(StrEnum):
    """Where a host is paid: a bank account or a UPI VPA (RazorpayX fund accounts), or a
    Stripe Connect account."""

    BANK_ACCOUNT = "bank_account"
    VPA = "vpa"
    STRIPE_ACCOUNT = "stripe_account"


#: An Indian Financial System Code: 4 letters (the bank), ``0``, 6 letters or digits (the
#: branch). Shared by the column's CHECK and the request body's pattern.
IFSC_PATTERN = "^[A-Z]{4}0[A-Z0-9]{6}$"
ACCOUNT_NUMBER_PATTERN = "^[0-9]{9,18}$"
MASKED_ACCOUNT_PATTERN = "^X{5,14}[0-9]{4}$"
VPA_PATTERN = "^[A-Za-z0-9._-]{2,255}@[A-Za-z][A-Za-z0-9]{1,63}$"
STRIPE_ACCOUNT_PATTERN = "^acct_[A-Za-z0-9]{1,58}$"


class PayoutAccount(Timestamped, Base):
    """A host's payout destination (one per host; ``PUT /host/payout-account`` replaces it).

    The provider's own records for it are created on the first payout and kept here:
    RazorpayX's contact and fund account, or the Stripe account id itself. Replacing the
    destination clears them, so the next payout creates them afresh for the new one."""

    __tablename__ = "payout_accounts"
    __table_args__ = (
        CheckConstraint(f"ifsc ~ '{IFSC_PATTERN}'", name="ifsc_format"),
        CheckConstraint(
            f"account_number_masked ~ '{MASKED_ACCOUNT_PATTERN}'", name="masked_account_format"
        ),
        CheckConstraint(
            f"stripe_account_id ~ '{STRIPE_ACCOUNT_PATTERN}'", name="stripe_account_format"
        ),
        # Each kind has exactly the fields it needs (and the others are empty).
        CheckConstraint(
            "(kind = 'bank_account' AND ifsc IS NOT NULL AND account_number_sealed IS NOT NULL "
            "AND account_number_masked IS NOT NULL AND vpa IS NULL "
            "AND stripe_account_id IS NULL) OR "
            "(kind = 'vpa' AND vpa IS NOT NULL AND ifsc IS NULL "
            "AND account_number_sealed IS NULL AND account_number_masked IS NULL "
            "AND stripe_account_id IS NULL) OR "
            "(kind = 'stripe_account' AND stripe_account_id IS NOT NULL AND ifsc IS NULL "
            "AND account_number_sealed IS NULL AND account_number_masked IS NULL "
            "AND vpa IS NULL)",
            name="fields_of_kind",
        ),
    )

    host_id: Mapped[str] = mapped_column(
        ForeignKey("hosts.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[PayoutAccountKind] = mapped_column(
        text_enum(PayoutAccountKind, "payout_account_kind")
    )
    holder_name: Mapped[str] = mapped_column(String(120))
    ifsc: Mapped[str | None] = mapped_column(String(11))
    #: The account number sealed with the KYC key (AES-256-GCM, the host id authenticated
    #: with it: cloud/kyc/storage.py ``Sealer``); only a provider registration opens it.
    account_number_sealed: Mapped[bytes | None] = mapped_column(LargeBinary)
    #: What answers and the audit log show: ``X``s and the last four digits.
    account_number_masked: Mapped[str | None] = mapped_column(String(18))
    vpa: Mapped[str | None] = mapped_column(String(320))
    stripe_account_id: Mapped[str | None] = mapped_column(String(64))
    #: RazorpayX's contact for the host (``cont_…``), created once.
    contact_ref: Mapped[str | None] = mapped_column(String(64))
    #: What a payout is sent to: RazorpayX's fund account (``fa_…``), created once, or the
    #: Stripe account id.
    destination_ref: Mapped[str | None] = mapped_column(String(64))


class Payment(Timestamped, Base):
    __tablename__ = "payments"
    __table_args__ = (
        CheckConstraint("amount_paise > 0", name="amount_positive"),
        non_negative("captured_paise"),
    )

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    booking_id: Mapped[str | None] = mapped_column(ForeignKey("bookings.id"), index=True)
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"), index=True)
    provider: Mapped[str] = mapped_column(String(20))
    provider_order_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    provider_payment_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    amount_paise: Mapped[int] = mapped_column(Paise)
    captured_paise: Mapped[int] = mapped_column(Paise, default=0, server_default="0")
    currency: Mapped[str] = mapped_column(String(3), default="INR", server_default="INR")
    status: Mapped[PaymentStatus] = mapped_column(
        text_enum(PaymentStatus, "payment_status"),
        default=PaymentStatus.CREATED,
        server_default=PaymentStatus.CREATED.value,
    )


class Refund(Timestamped, Base):
    __tablename__ = "refunds"
    __table_args__ = (
        CheckConstraint("amount_paise > 0", name="amount_positive"),
        # One live refund per (payment, reason): every writer (refund_many, a dispute's
        # resolution) means "refund this payment once for this reason"; a failed refund
        # may be followed by another (migration 0013, docs/decisions.md "Trust (issue 18)").
        Index(
            "uq_refunds_payment_reason_live",
            "payment_id",
            "reason",
            unique=True,
            postgresql_where=text("status <> 'failed'"),
        ),
    )

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    payment_id: Mapped[str] = mapped_column(ForeignKey("payments.id"), index=True)
    amount_paise: Mapped[int] = mapped_column(Paise)
    provider_refund_id: Mapped[str | None] = mapped_column(String(64), unique=True)
    status: Mapped[RefundStatus] = mapped_column(
        text_enum(RefundStatus, "refund_status"),
        default=RefundStatus.PENDING,
        server_default=RefundStatus.PENDING.value,
    )
    reason: Mapped[str] = mapped_column(String(200))


class Payout(Timestamped, Base):
    __tablename__ = "payouts"
    __table_args__ = (
        non_negative("amount_paise"),
        # One automatic payout per host per week, whoever runs the weekly job how often
        # (migration 0011): ``period_end`` of an automatic payout is its week's Monday.
        Index(
            "uq_payouts_automatic_week",
            "host_id",
            "period_end",
            unique=True,
            postgresql_where=text("automatic"),
        ),
    )

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"), index=True)
    amount_paise: Mapped[int] = mapped_column(Paise)
    period_start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    period_end: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status: Mapped[PayoutStatus] = mapped_column(
        text_enum(PayoutStatus, "payout_status"),
        default=PayoutStatus.PENDING,
        server_default=PayoutStatus.PENDING.value,
    )
    provider_ref: Mapped[str | None] = mapped_column(String(64), unique=True)
    #: Made by the weekly job (a host's ``weekly_payouts`` setting), not asked for by hand.
    automatic: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: The host's user who asked (None for an automatic payout).
    requested_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    #: The admin who approved or rejected it (None: not yet, or automatic).
    decided_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Why it was rejected, or what the provider said when it failed.
    note: Mapped[str | None] = mapped_column(String(500))


class LedgerEntry(Base):
    __tablename__ = "ledger_entries"
    __table_args__ = (
        CheckConstraint("amount_paise <> 0", name="amount_non_zero"),
        CheckConstraint(f"account ~ '{ACCOUNT_PATTERN}'", name="account_known"),
        # A payout is debited to its host once, however often its execution is retried
        # (migration 0011; cloud/payouts/service.py posts it with the move to ``paid``). The
        # debit only (amount > 0, migration 0020): a reversal's credits back to the host
        # (Stripe ``transfer.reversed``) are entries of the same payout.
        Index(
            "uq_ledger_entries_payout_once",
            "payout_id",
            unique=True,
            postgresql_where=text(
                "source = 'payout' AND account LIKE 'host:%' AND amount_paise > 0"
            ),
        ),
    )
    # Append-only and balanced per txn_id: triggers of migration 0009 (cloud.ledger).

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    #: Entries written together (one business event) share a txn id and sum to zero.
    txn_id: Mapped[str] = mapped_column(String(ULID_LEN), index=True)
    #: ``host:<id>``, ``driver:<id>``, ``platform:fees``, ``provider:clearing`` …
    account: Mapped[str] = mapped_column(String(80), index=True)
    amount_paise: Mapped[int] = mapped_column(Paise)
    payment_id: Mapped[str | None] = mapped_column(ForeignKey("payments.id"))
    refund_id: Mapped[str | None] = mapped_column(ForeignKey("refunds.id"))
    payout_id: Mapped[str | None] = mapped_column(ForeignKey("payouts.id"))
    source: Mapped[EntrySource] = mapped_column(text_enum(EntrySource, "ledger_source"))
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"), index=True)
    memo: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ProviderEvent(Base):
    """A payment-provider webhook event, stored once: webhooks are at-least-once."""

    __tablename__ = "provider_events"

    provider: Mapped[str] = mapped_column(String(20), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    event_type: Mapped[str] = mapped_column(String(64))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
