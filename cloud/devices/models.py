"""Devices (one edge agent each), their pairing codes and the commands sent to them."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, DateTime, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from cloud.columns import ULID_LEN, text_enum, ulid_pk
from cloud.db import Base, Timestamped
from protocols.enums import CommandName, CommandStatus


class DeviceStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class Device(Timestamped, Base):
    __tablename__ = "devices"

    #: The wire device id (protocols.ids): also the broker username and topic level.
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"), index=True)
    status: Mapped[DeviceStatus] = mapped_column(
        text_enum(DeviceStatus, "device_status"),
        default=DeviceStatus.ACTIVE,
        server_default=DeviceStatus.ACTIVE.value,
    )
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    agent_version: Mapped[str | None] = mapped_column(String(32))
    online: Mapped[bool] = mapped_column(default=False, server_default="false")
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: The last ``status`` message applied; older ones (lower seq) arriving late are ignored.
    last_status_seq: Mapped[int] = mapped_column(BigInteger, default=-1, server_default="-1")
    last_status: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    #: The per-device secret booking PINs are derived from (protocols.pins); handed to the
    #: agent once, at claim. Stored as is: whoever reads this table can also sign tokens.
    pin_secret: Mapped[bytes | None] = mapped_column(LargeBinary)


class DeviceMeter(Base):
    """A meter the device's latest status names, with its health as of that status
    (cloud/ingest/writer.py writes it; meters the status no longer names are deleted).

    ``last_good_at`` is the cloud's estimate of the meter's last good reading: the status's
    time (the agent's clock when synced, else the cloud's receipt) minus the agent's
    monotonic ``last_reading_age_s``. It is kept when a status has no age (an agent restarted
    while the meter is dead has not read it since), so it says when the meter last answered
    at all.
    """

    __tablename__ = "device_meters"

    device_id: Mapped[str] = mapped_column(
        ForeignKey("devices.id", ondelete="CASCADE"), primary_key=True
    )
    meter_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    model: Mapped[str] = mapped_column(String(32))
    available: Mapped[bool]
    #: Failed polls since the agent started, and since the meter's last good poll.
    errors: Mapped[int] = mapped_column(Integer)
    consecutive_errors: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(String(120))
    last_good_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    #: Register blocks the meter refused (partial map), e.g. ``input 342-351``.
    unavailable_blocks: Mapped[list[str]] = mapped_column(ARRAY(Text), server_default="{}")
    #: When the cloud applied the status this row comes from, and that status's seq.
    reported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    status_seq: Mapped[int] = mapped_column(BigInteger)


class DownlinkSequence(Base):
    """The cloud → device ``seq`` counter (acks, commands), shared by every worker.

    Kept apart from :class:`Device` so ingest can ack a device before (or without) its
    listing row, and so the hot counter row does not bloat the device row.
    """

    __tablename__ = "downlink_sequences"

    device_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class PairingCode(Base):
    """A one-time code a host gives an agent to claim its identity (stored hashed)."""

    __tablename__ = "pairing_codes"

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"), index=True)
    charger_id: Mapped[str | None] = mapped_column(ForeignKey("chargers.id"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    claimed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    device_id: Mapped[str | None] = mapped_column(ForeignKey("devices.id"))


class DeviceCommand(Base):
    """A command sent to a device and, once it answers, its result."""

    __tablename__ = "device_commands"

    cmd_id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True)
    device_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[CommandName | None] = mapped_column(text_enum(CommandName, "command_name"))
    payload: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    sent_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    result_status: Mapped[CommandStatus | None] = mapped_column(
        text_enum(CommandStatus, "command_status")
    )
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    result_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
