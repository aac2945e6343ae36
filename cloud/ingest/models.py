"""What ingest stores beside the feature tables: messages it could not accept, kept with the
reason (and acked to the device), and every authorization decision devices report."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    SmallInteger,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.columns import ULID_LEN, text_enum
from cloud.db import Base
from protocols.enums import AuthorizationStatus, CredentialKind


class DeadLetter(Base):
    """A message ingest refused, with why. One row per distinct message: a redelivery (the
    device resends what was not acked) adds to ``deliveries``, not a row."""

    __tablename__ = "dead_letters"
    __table_args__ = (UniqueConstraint("topic", "payload_sha256"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )
    topic: Mapped[str] = mapped_column(String(300))
    device_id: Mapped[str | None] = mapped_column(String(64), index=True)
    #: The payload, cut to the configured bound; ``payload_bytes`` is the full size.
    payload: Mapped[bytes] = mapped_column(LargeBinary)
    payload_bytes: Mapped[int] = mapped_column(Integer)
    error_kind: Mapped[str] = mapped_column(String(40))
    reason: Mapped[str] = mapped_column(String(2000))
    seq: Mapped[int | None] = mapped_column(BigInteger)
    #: SHA-256 of the full payload (``payload`` may be cut): with the topic, the message.
    payload_sha256: Mapped[bytes] = mapped_column(LargeBinary)
    deliveries: Mapped[int] = mapped_column(Integer, server_default=text("1"))
    last_received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class AuthDecisionRecord(Base):
    """One authorization decision a device reported (``auth`` topic), append-only.

    Unique by ``(device_id, seq)`` and by ``(device_id, msg_id)``: a redelivered report is
    dropped. ``credential_ref`` is never the credential (the wire model refuses it): an id-tag
    hash, a token ``jti``, a PIN's keyed hash. ``device_session_id`` is the session an
    accepted decision started (``sessions.device_session_id``), when it started one.
    """

    __tablename__ = "auth_decisions"
    __table_args__ = (
        UniqueConstraint("device_id", "seq"),
        UniqueConstraint("device_id", "msg_id"),
        Index("ix_auth_decisions_device_id_decided_at", "device_id", "decided_at"),
        Index("ix_auth_decisions_credential_ref", "credential_ref"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    device_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    msg_id: Mapped[str] = mapped_column(String(ULID_LEN))
    connector: Mapped[int] = mapped_column(SmallInteger)
    credential_kind: Mapped[CredentialKind] = mapped_column(
        text_enum(CredentialKind, "credential_kind")
    )
    credential_ref: Mapped[str] = mapped_column(String(128))
    status: Mapped[AuthorizationStatus] = mapped_column(
        text_enum(AuthorizationStatus, "authorization_status")
    )
    reason: Mapped[str] = mapped_column(String(500))
    #: The device's clock; read ``clock_synced`` before trusting it (a Pi without NTP: 1970).
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    clock_synced: Mapped[bool] = mapped_column()
    device_session_id: Mapped[str | None] = mapped_column(String(ULID_LEN))
    received_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
