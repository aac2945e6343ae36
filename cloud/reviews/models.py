"""Reviews of chargers by drivers, and the private ratings hosts give drivers."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, DateTime, ForeignKey, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from cloud.columns import ULID_LEN, ulid_pk
from cloud.db import Base, Timestamped

#: Bounds of the texts, checked by the request models and by the database (migration 0013).
REVIEW_TEXT_MAX = 2000
REPLY_TEXT_MAX = 1000
RATING_NOTE_MAX = 500
HIDE_REASON_MAX = 500


class Review(Timestamped, Base):
    """A driver's review of the charger of one completed session (one per session). Hidden
    reviews (``hidden_at`` set by an admin, with a reason) are shown to nobody but admins and
    are out of the listing's ``rating_sum``/``rating_count`` (cloud/reviews/service.py)."""

    __tablename__ = "reviews"
    __table_args__ = (
        CheckConstraint("rating BETWEEN 1 AND 5", name="rating_range"),
        CheckConstraint(f"char_length(body) <= {REVIEW_TEXT_MAX}", name="body_length"),
        CheckConstraint(f"char_length(host_reply) <= {REPLY_TEXT_MAX}", name="reply_length"),
        CheckConstraint("(hidden_at IS NULL) = (hidden_reason IS NULL)", name="hidden_with_reason"),
    )

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    charger_id: Mapped[str] = mapped_column(ForeignKey("chargers.id"), index=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    #: One review per session: only drivers who charged review.
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"), unique=True)
    rating: Mapped[int] = mapped_column(SmallInteger)
    body: Mapped[str] = mapped_column(Text, default="", server_default="")
    #: The host's one public answer.
    host_reply: Mapped[str | None] = mapped_column(Text)
    host_replied_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    hidden_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    hidden_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    hidden_reason: Mapped[str | None] = mapped_column(String(HIDE_REASON_MAX))


class DriverRating(Timestamped, Base):
    """A host's rating of the driver of one session on their charger (one per session).
    Private: the driver never reads it; it decides whether an instant booking needs the
    host's approval (cloud/bookings/policy.py)."""

    __tablename__ = "driver_ratings"
    __table_args__ = (
        CheckConstraint("rating BETWEEN 1 AND 5", name="rating_range"),
        CheckConstraint(f"char_length(note) <= {RATING_NOTE_MAX}", name="note_length"),
    )

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id"), unique=True)
    driver_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"), index=True)
    rated_by: Mapped[str] = mapped_column(ForeignKey("users.id"))
    rating: Mapped[int] = mapped_column(SmallInteger)
    note: Mapped[str] = mapped_column(Text, default="", server_default="")
