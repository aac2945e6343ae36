"""Reviews of chargers and disputes about sessions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cloud.chargers.models import ModerationStatus
from cloud.columns import ULID_LEN, Paise, non_negative, text_enum, ulid_pk
from cloud.db import Base, Timestamped


class DisputeStatus(StrEnum):
    OPEN = "open"
    UNDER_REVIEW = "under_review"
    RESOLVED_REFUND = "resolved_refund"
    RESOLVED_NO_ACTION = "resolved_no_action"


class Review(Timestamped, Base):
    __tablename__ = "reviews"
    __table_args__ = (CheckConstraint("rating BETWEEN 1 AND 5", name="rating_range"),)

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    charger_id: Mapped[str] = mapped_column(ForeignKey("chargers.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    #: One review per session: only drivers who charged review.
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"), unique=True)
    rating: Mapped[int] = mapped_column(SmallInteger)
    body: Mapped[str] = mapped_column(Text, default="", server_default="")
    moderation_status: Mapped[ModerationStatus] = mapped_column(
        text_enum(ModerationStatus, "review_moderation"),
        default=ModerationStatus.PENDING,
        server_default=ModerationStatus.PENDING.value,
    )


class Dispute(Timestamped, Base):
    __tablename__ = "disputes"
    __table_args__ = (non_negative("refund_paise"),)

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"), index=True)
    raised_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[DisputeStatus] = mapped_column(
        text_enum(DisputeStatus, "dispute_status"),
        default=DisputeStatus.OPEN,
        server_default=DisputeStatus.OPEN.value,
    )
    resolution: Mapped[str | None] = mapped_column(Text)
    refund_paise: Mapped[int] = mapped_column(Paise, default=0, server_default="0")
    resolved_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
