"""The notification outbox (events, then one delivery per recipient and channel), each
user's channel choices, and their Web Push subscriptions."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cloud.columns import ULID_LEN, text_enum, ulid_pk
from cloud.db import Base, Timestamped


class EventKind(StrEnum):
    """What happened; each user chooses channels per kind."""

    BOOKING_CONFIRMED = "booking_confirmed"
    BOOKING_PENDING = "booking_pending"
    BOOKING_APPROVED = "booking_approved"
    BOOKING_DECLINED = "booking_declined"
    BOOKING_CANCELLED = "booking_cancelled"
    SESSION_STARTED = "session_started"
    SESSION_STOPPED = "session_stopped"
    CHARGER_OFFLINE = "charger_offline"
    PAYOUT_PAID = "payout_paid"
    DISPUTE_UPDATED = "dispute_updated"


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    #: Given up: the channel refused it for good, or every attempt failed.
    FAILED = "failed"


class NotificationEvent(Base):
    """One thing to tell people about, written in the transaction of the change it reports
    (the outbox). The delivery job turns it into :class:`NotificationDelivery` rows."""

    __tablename__ = "notification_events"
    __table_args__ = (
        Index(
            "ix_notification_events_due",
            "not_before",
            "id",
            postgresql_where=text("expanded_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    kind: Mapped[EventKind] = mapped_column(text_enum(EventKind, "notification_event_kind"))
    #: The booking, session (its ``sessions.id``), device, payout or dispute it is about.
    subject_id: Mapped[str] = mapped_column(String(64))
    #: The one person it is for when the writer knows them; else found when it is expanded
    #: (a session's driver, a device's host).
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    #: What the message says, as it stood at the change (amounts, times, who cancelled).
    facts: Mapped[dict[str, Any]] = mapped_column(JSONB, default=dict, server_default="{}")
    #: Set for events written once however often their change is replayed (ingest's
    #: redelivered session events): a second insert of the same key does nothing.
    dedupe_key: Mapped[str | None] = mapped_column(String(120), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    #: Not expanded before this (a charger offline waits out a short blip).
    not_before: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expanded_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class NotificationDelivery(Base):
    """One message to one address over one channel, with its retries."""

    __tablename__ = "notification_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "user_id", "channel", "address"),
        Index(
            "ix_notification_deliveries_due",
            "next_attempt_at",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[int] = mapped_column(
        ForeignKey("notification_events.id", ondelete="CASCADE"), index=True
    )
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    channel: Mapped[Channel] = mapped_column(text_enum(Channel, "notification_channel"))
    #: An e-mail address, an E.164 number, or a push subscription's id.
    address: Mapped[str] = mapped_column(String(254))
    subject: Mapped[str] = mapped_column(String(200))
    body_text: Mapped[str] = mapped_column(Text)
    body_html: Mapped[str | None] = mapped_column(Text)
    status: Mapped[DeliveryStatus] = mapped_column(
        text_enum(DeliveryStatus, "notification_delivery_status"),
        default=DeliveryStatus.PENDING,
        server_default=DeliveryStatus.PENDING.value,
    )
    attempts: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    next_attempt_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class NotificationPreference(Base):
    """A user's channels for one kind of event; a kind without a row uses the defaults
    (:data:`cloud.notifications.preferences.DEFAULTS`)."""

    __tablename__ = "notification_preferences"

    user_id: Mapped[str] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[EventKind] = mapped_column(
        text_enum(EventKind, "notification_preference_kind"), primary_key=True
    )
    email: Mapped[bool]
    sms: Mapped[bool]
    push: Mapped[bool]
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


class PushSubscription(Timestamped, Base):
    """A browser's Web Push subscription (``PushSubscription.toJSON()``) for one user."""

    __tablename__ = "push_subscriptions"

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    #: The push service's URL for this browser: a capability, unique.
    endpoint: Mapped[str] = mapped_column(String(2048), unique=True)
    #: The browser's P-256 ECDH public key and auth secret, base64url (RFC 8291).
    p256dh: Mapped[str] = mapped_column(String(128))
    auth: Mapped[str] = mapped_column(String(64))
