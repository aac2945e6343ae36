"""Bookings: a connector held for a time range, with no overlap enforced by PostgreSQL."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import DateTime, ForeignKey, SmallInteger, String, text
from sqlalchemy.dialects.postgresql import TSTZRANGE, ExcludeConstraint, Range
from sqlalchemy.orm import Mapped, mapped_column

from cloud.columns import ULID_LEN, Paise, non_negative, text_enum, ulid_pk
from cloud.db import Base, Timestamped


class BookingStatus(StrEnum):
    PENDING = "pending"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"
    DECLINED = "declined"
    COMPLETED = "completed"
    EXPIRED = "expired"
    NO_SHOW = "no_show"


#: Statuses that hold the connector; only these take part in the exclusion constraint.
ACTIVE_BOOKING_STATUSES = (BookingStatus.PENDING, BookingStatus.CONFIRMED)


class Booking(Timestamped, Base):
    __tablename__ = "bookings"
    __table_args__ = (
        # Double booking is impossible by construction: two active bookings of one connector
        # with overlapping [start, end) ranges violate this (btree_gist gives `=` on text).
        ExcludeConstraint(
            ("connector_id", "="),
            ("period", "&&"),
            name="ex_bookings_connector_period",
            using="gist",
            where=text("status IN ('pending', 'confirmed')"),
        ),
        non_negative("amount_paise"),
        non_negative("cancellation_fee_paise"),
    )

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    charger_id: Mapped[str] = mapped_column(ForeignKey("chargers.id"), index=True)
    connector_id: Mapped[str] = mapped_column(ForeignKey("connectors.id"))
    period: Mapped[Range[datetime]] = mapped_column(TSTZRANGE)
    status: Mapped[BookingStatus] = mapped_column(
        text_enum(BookingStatus, "booking_status"),
        default=BookingStatus.PENDING,
        server_default=BookingStatus.PENDING.value,
    )
    amount_paise: Mapped[int] = mapped_column(Paise, default=0, server_default="0")
    #: A pending booking lapses (status expired) if the host has not decided by then.
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_by: Mapped[str | None] = mapped_column(String(ULID_LEN))
    cancellation_fee_paise: Mapped[int] = mapped_column(Paise, default=0, server_default="0")
    note: Mapped[str] = mapped_column(String(500), default="", server_default="")
    #: Hash of the keypad PIN (protocols.pins); the PIN itself is shown to the driver once.
    pin_hash: Mapped[str | None] = mapped_column(String(128))
    #: The PIN's nonce: tells this booking's PIN from those of earlier bookings of the same
    #: connector and window (cloud.bookings.pins). Set when a PIN is first computed.
    pin_nonce: Mapped[int | None] = mapped_column(SmallInteger)
    #: protocols.pins.pin_ref of the PIN: what the agent reports for a session it starts and
    #: what a revocation names. Unique: one PIN, one booking.
    pin_ref: Mapped[str | None] = mapped_column(String(36), unique=True)
