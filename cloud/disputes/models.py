"""Disputes about sessions and the photos that back them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, Integer, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from cloud.columns import ULID_LEN, Paise, non_negative, text_enum, ulid_pk
from cloud.db import Base, Timestamped

DESCRIPTION_MAX = 2000
RESPONSE_MAX = 2000
RESOLUTION_MAX = 1000


class DisputeStatus(StrEnum):
    """``open`` (the driver opened it) → ``under_review`` (the host answered) → resolved by an
    admin: ``resolved_refund`` (full or partial, ``refund_paise``) or ``resolved_no_action``
    (rejected). Open and under review hold the session's earning out of payouts
    (:data:`cloud.ledger.service.HOLDING_DISPUTES`)."""

    OPEN = "open"
    UNDER_REVIEW = "under_review"
    RESOLVED_REFUND = "resolved_refund"
    RESOLVED_NO_ACTION = "resolved_no_action"


class DisputeReason(StrEnum):
    CHARGER_DID_NOT_START = "charger_did_not_start"
    STOPPED_EARLY = "stopped_early"
    BILLED_WRONG = "billed_wrong"
    DAMAGE = "damage"
    OTHER = "other"


class ChargedTo(StrEnum):
    """Who gives a refund back: the host's earning, or the platform's commission."""

    HOST = "host"
    PLATFORM = "platform"


class Dispute(Timestamped, Base):
    __tablename__ = "disputes"
    __table_args__ = (
        non_negative("refund_paise"),
        CheckConstraint(
            f"char_length(description) <= {DESCRIPTION_MAX}", name="description_length"
        ),
        CheckConstraint(f"char_length(host_response) <= {RESPONSE_MAX}", name="response_length"),
    )

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    #: One dispute per session.
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"), index=True, unique=True)
    raised_by: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    reason_code: Mapped[DisputeReason] = mapped_column(text_enum(DisputeReason, "dispute_reason"))
    description: Mapped[str] = mapped_column(Text)
    status: Mapped[DisputeStatus] = mapped_column(
        text_enum(DisputeStatus, "dispute_status"),
        default=DisputeStatus.OPEN,
        server_default=DisputeStatus.OPEN.value,
        index=True,
    )
    host_response: Mapped[str | None] = mapped_column(Text)
    host_responded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The admin's note on the outcome.
    resolution: Mapped[str | None] = mapped_column(Text)
    refund_paise: Mapped[int] = mapped_column(Paise, default=0, server_default="0")
    charged_to: Mapped[ChargedTo | None] = mapped_column(text_enum(ChargedTo, "dispute_charged_to"))
    resolved_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DisputePhoto(Base):
    """Evidence for a dispute: the bytes live in photo storage under ``storage_key``."""

    __tablename__ = "dispute_photos"
    __table_args__ = (CheckConstraint("size_bytes > 0", name="size_positive"),)

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    dispute_id: Mapped[str] = mapped_column(
        ForeignKey("disputes.id", ondelete="CASCADE"), index=True
    )
    storage_key: Mapped[str] = mapped_column(String(200), unique=True)
    content_type: Mapped[str] = mapped_column(String(40))
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
