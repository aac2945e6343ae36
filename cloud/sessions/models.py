"""Charging sessions (one row per device session) and the raw events that built them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cloud.columns import ULID_LEN, Paise, text_enum, ulid_pk
from cloud.db import Base
from protocols.enums import CredentialKind, SessionEventType, StopReason


class SessionState(StrEnum):
    ACTIVE = "active"
    STOPPED = "stopped"


class BillingState(StrEnum):
    UNBILLED = "unbilled"
    PRICED = "priced"
    CHARGED = "charged"
    SETTLED = "settled"
    DISPUTED = "disputed"
    WAIVED = "waived"


class ChargingSession(Base):
    __tablename__ = "sessions"
    __table_args__ = (
        UniqueConstraint("device_id", "device_session_id"),
        # Whose session: the unlock whose token_jti is the credential ref on this device
        # (cloud.sessions.service joins on it, from the session or from a driver's unlocks).
        Index("ix_sessions_device_id_credential_ref", "device_id", "credential_ref"),
        # The settle job's question (cloud.payments.settlement.due_sessions; migration 0012).
        Index(
            "ix_sessions_to_settle",
            "stopped_at",
            "id",
            postgresql_where=text("state = 'stopped' AND billing_state IN ('unbilled', 'priced')"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    #: The session id the edge generated (a ULID), unique per device.
    device_session_id: Mapped[str] = mapped_column(String(ULID_LEN))
    connector_number: Mapped[int] = mapped_column(SmallInteger)
    charger_id: Mapped[str | None] = mapped_column(ForeignKey("chargers.id"), index=True)
    booking_id: Mapped[str | None] = mapped_column(String(64), index=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"), index=True)
    credential_kind: Mapped[CredentialKind] = mapped_column(
        text_enum(CredentialKind, "credential_kind")
    )
    credential_ref: Mapped[str] = mapped_column(String(128))
    state: Mapped[SessionState] = mapped_column(text_enum(SessionState, "session_state"))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stopped_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    meter_start_wh: Mapped[int] = mapped_column(BigInteger)
    #: The cumulative register at the latest applied event (at stop once stopped).
    meter_stop_wh: Mapped[int] = mapped_column(BigInteger)
    energy_wh: Mapped[int] = mapped_column(BigInteger)
    power_w: Mapped[float | None] = mapped_column(Float)
    stop_reason: Mapped[StopReason | None] = mapped_column(text_enum(StopReason, "stop_reason"))
    #: True when any event of the session happened while the device was offline.
    offline: Mapped[bool] = mapped_column(default=False, server_default="false")
    meter_went_backwards: Mapped[bool] = mapped_column(default=False, server_default="false")
    last_event_seq: Mapped[int] = mapped_column(Integer)
    events_received: Mapped[int] = mapped_column(Integer)
    billing_state: Mapped[BillingState] = mapped_column(
        text_enum(BillingState, "billing_state"),
        default=BillingState.UNBILLED,
        server_default=BillingState.UNBILLED.value,
    )
    amount_paise: Mapped[int | None] = mapped_column(Paise)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class SessionEventRow(Base):
    __tablename__ = "session_events"
    __table_args__ = (UniqueConstraint("device_id", "device_session_id", "event_seq"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    device_session_id: Mapped[str] = mapped_column(String(ULID_LEN))
    event_seq: Mapped[int] = mapped_column(Integer)
    event: Mapped[SessionEventType] = mapped_column(
        text_enum(SessionEventType, "session_event_type")
    )
    msg_id: Mapped[str] = mapped_column(String(ULID_LEN))
    seq: Mapped[int] = mapped_column(BigInteger)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class UnlockOutcome(StrEnum):
    PENDING = "pending"
    STARTED = "started"
    REFUSED = "refused"
    OFFLINE = "offline"
    TIMEOUT = "timeout"


class UnlockRequest(Base):
    """A driver's request to start charging through the API (``POST /chargers/{id}/sessions``).

    Links the API's world (user, booking, charger) to the device's: the unlock token's ``jti``
    is the credential ref the agent reports in its session events, so ingest and the API can
    find whose session a device session is. When the charger is offline the driver gets a
    booking PIN instead and ``outcome`` is ``offline``.
    """

    __tablename__ = "unlock_requests"

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    charger_id: Mapped[str] = mapped_column(ForeignKey("chargers.id"), index=True)
    connector_number: Mapped[int] = mapped_column(SmallInteger)
    booking_id: Mapped[str | None] = mapped_column(ForeignKey("bookings.id"), index=True)
    device_id: Mapped[str | None] = mapped_column(String(64))
    token_jti: Mapped[str] = mapped_column(String(64), unique=True)
    cmd_id: Mapped[str | None] = mapped_column(String(ULID_LEN), unique=True)
    outcome: Mapped[UnlockOutcome] = mapped_column(
        text_enum(UnlockOutcome, "unlock_outcome"),
        default=UnlockOutcome.PENDING,
        server_default=UnlockOutcome.PENDING.value,
    )
    #: The agent's authorization/command status when it refused.
    agent_status: Mapped[str | None] = mapped_column(String(40))
    device_session_id: Mapped[str | None] = mapped_column(String(ULID_LEN), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    resolved_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
