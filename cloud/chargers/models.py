"""Chargers (listings), their connectors and weekly availability."""

from __future__ import annotations

from datetime import datetime, time
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    Time,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB, TSTZRANGE, Range
from sqlalchemy.orm import Mapped, mapped_column

from cloud.columns import ULID_LEN, Paise, ShortCode, non_negative, text_enum, ulid_pk
from cloud.db import Base, Timestamped
from protocols.enums import ConnectorStatus, ConnectorType


class PricingMode(StrEnum):
    PER_KWH = "per_kwh"
    PER_HOUR = "per_hour"


class CurrentType(StrEnum):
    AC = "ac"
    DC = "dc"


class ModerationStatus(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    SUSPENDED = "suspended"


class Charger(Timestamped, Base):
    __tablename__ = "chargers"
    __table_args__ = (
        non_negative("price_per_kwh_paise"),
        non_negative("session_fee_paise"),
        non_negative("idle_fee_per_min_paise"),
        non_negative("price_per_hour_paise"),
        non_negative("min_charge_paise"),
        non_negative("late_cancel_fee_paise"),
        non_negative("idle_grace_min"),
        non_negative("free_cancel_before_min"),
        CheckConstraint("latitude BETWEEN -90 AND 90", name="latitude_range"),
        CheckConstraint("longitude BETWEEN -180 AND 180", name="longitude_range"),
        CheckConstraint("rating_count >= 0 AND rating_sum >= 0", name="ratings_non_negative"),
        # Radius search with the earthdistance extension: a GiST index on ll_to_earth().
        Index(
            "ix_chargers_earth",
            text("ll_to_earth(latitude, longitude)"),
            postgresql_using="gist",
        ),
        # The same over the chargers whose device is online: "available now" scans only
        # these, so a radius whose devices are all offline is not read charger by charger.
        Index(
            "ix_chargers_earth_online",
            text("ll_to_earth(latitude, longitude)"),
            postgresql_using="gist",
            postgresql_where=text("device_online AND moderation_status = 'approved' AND is_listed"),
        ),
    )

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"), index=True)
    device_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id"), index=True)
    #: ``online AND status = 'active'`` of the device (false without one), kept by the
    #: database's triggers whatever writes (migration 0022); the app never sets it. It only
    #: narrows "available now" to an index: the search still checks the device itself.
    device_online: Mapped[bool] = mapped_column(server_default="false")
    name: Mapped[str] = mapped_column(String(120))
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    address: Mapped[str] = mapped_column(String(300))
    city: Mapped[str] = mapped_column(String(80), index=True)
    state: Mapped[str] = mapped_column(String(80))
    pincode: Mapped[str] = mapped_column(String(6))
    latitude: Mapped[float] = mapped_column(Float)
    longitude: Mapped[float] = mapped_column(Float)
    pricing_mode: Mapped[PricingMode] = mapped_column(
        text_enum(PricingMode, "pricing_mode"),
        default=PricingMode.PER_KWH,
        server_default=PricingMode.PER_KWH.value,
    )
    price_per_kwh_paise: Mapped[int] = mapped_column(Paise)
    price_per_hour_paise: Mapped[int] = mapped_column(Paise, default=0, server_default="0")
    #: The least a session costs (a 2-minute top-up still pays this).
    min_charge_paise: Mapped[int] = mapped_column(Paise, default=0, server_default="0")
    session_fee_paise: Mapped[int] = mapped_column(Paise, default=0, server_default="0")
    idle_fee_per_min_paise: Mapped[int] = mapped_column(Paise, default=0, server_default="0")
    #: Minutes of idling (plugged in, not charging, after the session) before the idle fee.
    idle_grace_min: Mapped[int] = mapped_column(Integer, default=10, server_default="10")
    amenities: Mapped[list[str]] = mapped_column(JSONB, default=list, server_default="[]")
    #: Instant book confirms at once; otherwise the host approves each booking.
    instant_book: Mapped[bool] = mapped_column(default=True, server_default="true")
    #: Cancellation rule: free until this many minutes before the start, then the fee.
    free_cancel_before_min: Mapped[int] = mapped_column(Integer, default=60, server_default="60")
    late_cancel_fee_paise: Mapped[int] = mapped_column(Paise, default=0, server_default="0")
    #: Ratings kept as sum and count so the average is exact and updates are one statement.
    rating_sum: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    rating_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    moderation_status: Mapped[ModerationStatus] = mapped_column(
        text_enum(ModerationStatus, "moderation_status"),
        default=ModerationStatus.PENDING,
        server_default=ModerationStatus.PENDING.value,
    )
    moderation_note: Mapped[str | None] = mapped_column(String(500))
    #: Printed on the charger's QR code; short enough to type when the camera fails.
    qr_code: Mapped[str] = mapped_column(ShortCode, unique=True)
    is_listed: Mapped[bool] = mapped_column(default=False, server_default="false")
    timezone: Mapped[str] = mapped_column(
        String(40), default="Asia/Kolkata", server_default="Asia/Kolkata"
    )


class Connector(Base):
    __tablename__ = "connectors"
    __table_args__ = (
        UniqueConstraint("charger_id", "number"),
        CheckConstraint("number BETWEEN 1 AND 32", name="number_range"),
        CheckConstraint("max_power_w > 0", name="max_power_positive"),
    )

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    charger_id: Mapped[str] = mapped_column(ForeignKey("chargers.id", ondelete="CASCADE"))
    #: The connector number the device uses on the wire (protocols ``connector``).
    number: Mapped[int] = mapped_column(SmallInteger)
    type: Mapped[ConnectorType] = mapped_column(text_enum(ConnectorType, "connector_type"))
    current: Mapped[CurrentType] = mapped_column(
        text_enum(CurrentType, "current_type"),
        default=CurrentType.AC,
        server_default=CurrentType.AC.value,
    )
    max_power_w: Mapped[int] = mapped_column(Integer)
    status: Mapped[ConnectorStatus] = mapped_column(
        text_enum(ConnectorStatus, "connector_status"),
        default=ConnectorStatus.UNAVAILABLE,
        server_default=ConnectorStatus.UNAVAILABLE.value,
    )
    status_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AvailabilityWindow(Base):
    """A weekly opening window in the charger's local time (weekday 0 = Monday)."""

    __tablename__ = "availability_windows"
    __table_args__ = (
        CheckConstraint("weekday BETWEEN 0 AND 6", name="weekday_range"),
        CheckConstraint("opens_at < closes_at", name="window_order"),
    )

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(
        ForeignKey("chargers.id", ondelete="CASCADE"), index=True
    )
    weekday: Mapped[int] = mapped_column(SmallInteger)
    opens_at: Mapped[time] = mapped_column(Time)
    closes_at: Mapped[time] = mapped_column(Time)


class BlockedPeriod(Base):
    """A period the host closed the charger (holiday, maintenance): nothing can be booked."""

    __tablename__ = "blocked_periods"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    charger_id: Mapped[str] = mapped_column(
        ForeignKey("chargers.id", ondelete="CASCADE"), index=True
    )
    period: Mapped[Range[datetime]] = mapped_column(TSTZRANGE)
    reason: Mapped[str] = mapped_column(String(200), default="", server_default="")


class ChargerPhoto(Base):
    """A listing photo: the bytes live in photo storage under ``storage_key``."""

    __tablename__ = "charger_photos"
    __table_args__ = (CheckConstraint("size_bytes > 0", name="size_positive"),)

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    charger_id: Mapped[str] = mapped_column(
        ForeignKey("chargers.id", ondelete="CASCADE"), index=True
    )
    storage_key: Mapped[str] = mapped_column(String(200), unique=True)
    content_type: Mapped[str] = mapped_column(String(40))
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
