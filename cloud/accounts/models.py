"""Users, their roles, and hosts (with KYC state)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from cloud.columns import ULID_LEN, text_enum, ulid_pk
from cloud.db import Base, Timestamped


class Role(StrEnum):
    DRIVER = "driver"
    HOST = "host"
    ADMIN = "admin"
    TECHNICIAN = "technician"


class KycStatus(StrEnum):
    NOT_STARTED = "not_started"
    SUBMITTED = "submitted"
    VERIFIED = "verified"
    REJECTED = "rejected"


class User(Timestamped, Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    email: Mapped[str | None] = mapped_column(String(254), unique=True)
    #: E.164, e.g. +919812345678: most Indian users sign in with their phone.
    phone: Mapped[str | None] = mapped_column(String(16), unique=True)
    name: Mapped[str] = mapped_column(String(120))
    password_hash: Mapped[str | None] = mapped_column(String(255))
    locale: Mapped[str] = mapped_column(String(10), default="en-IN", server_default="en-IN")
    disabled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Set when the user proved the phone number with a one-time code.
    phone_verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Access tokens carry the version they were issued at and are refused once it moves:
    #: bumped on a password change and "log out everywhere", and by a trigger when
    #: ``disabled_at`` changes (migration 0007, :mod:`cloud.accounts.principals`).
    token_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class UserRole(Base):
    __tablename__ = "user_roles"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    role: Mapped[Role] = mapped_column(text_enum(Role, "role"), primary_key=True)


#: A GSTIN's shape: state code, PAN, entity number, ``Z``, check character (its checksum is
#: verified in Python, cloud.invoices.gstin). Frozen in migration 0010.
GSTIN_PATTERN = "^[0-9]{2}[A-Z]{5}[0-9]{4}[A-Z][1-9A-Z]Z[0-9A-Z]$"


class Host(Timestamped, Base):
    __tablename__ = "hosts"
    __table_args__ = (
        CheckConstraint(f"gstin ~ '{GSTIN_PATTERN}'", name="gstin_format"),
        # A registered supplier's invoices carry its legal name and address (CGST Rule 46).
        CheckConstraint(
            "gstin IS NULL OR (legal_name IS NOT NULL AND address IS NOT NULL)",
            name="gstin_has_address",
        ),
    )

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), unique=True)
    display_name: Mapped[str] = mapped_column(String(120))
    kyc_status: Mapped[KycStatus] = mapped_column(
        text_enum(KycStatus, "kyc_status"),
        default=KycStatus.NOT_STARTED,
        server_default=KycStatus.NOT_STARTED.value,
    )
    #: The KYC provider's reference (documents stay with the provider, not here).
    kyc_ref: Mapped[str | None] = mapped_column(String(128))
    kyc_verified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    kyc_rejection_reason: Mapped[str | None] = mapped_column(String(500))
    #: Where the host is paid: cloud.payments.models.PayoutAccount (``payout_accounts``).
    #: The host's setting: their payable balance is paid out every week by
    #: ``chargemitra-cloud payouts run`` (cloud/payouts/service.py), without asking.
    weekly_payouts: Mapped[bool] = mapped_column(default=False, server_default="false")
    #: GST registration, when the host has one: they are then the supplier of record of their
    #: sessions and their invoices carry this GSTIN, legal name and address (cloud/invoices/).
    gstin: Mapped[str | None] = mapped_column(String(15), unique=True)
    legal_name: Mapped[str | None] = mapped_column(String(200))
    address: Mapped[str | None] = mapped_column(String(300))
    pincode: Mapped[str | None] = mapped_column(String(6))

    @property
    def host_gst_registered(self) -> bool:
        """What the ledger's bill builder takes (cloud.ledger.entries.bill_txn)."""
        return self.gstin is not None


class RefreshToken(Base):
    """One issued refresh token (stored hashed). Each use rotates it: the old row gets
    ``rotated_at`` and a new row joins the same ``family_id``. Presenting a rotated token again
    means it was stolen (or replayed): the whole family is revoked."""

    __tablename__ = "refresh_tokens"

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    family_id: Mapped[str] = mapped_column(String(ULID_LEN), index=True)
    #: SHA-256 of the token (hex): the token is 256 random bits, so no slow hash is needed.
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
