"""Message factories for tests: the wire messages a device sends, built with the protocols
models and valid as the cloud parses them.

Production code never imports this module (``tests/test_testing_modules.py`` fails if a
module of ``protocols``, ``edge_agent``, ``cloud`` or ``firmware_sim`` other than a
``testing`` module does). It offers :func:`telemetry` (a batch of one-second readings),
:func:`session_events` (started, updated..., stopped), :func:`status`,
:func:`auth_decision` and :func:`command_result`, all stamped from :data:`T0`.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from protocols.enums import (
    AuthorizationStatus,
    CommandStatus,
    CredentialKind,
    SessionEventType,
    StopReason,
)
from protocols.ids import new_ulid
from protocols.messages import (
    AuthDecision,
    CommandResult,
    CredentialRef,
    MeterReading,
    SessionEvent,
    Status,
    TelemetryBatch,
)
from protocols.meters.quantities import Quantity

#: The time every factory's messages are stamped from.
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def telemetry(device_id: str, seq: int, *, readings: int, first_index: int = 0) -> TelemetryBatch:
    """``readings`` one-second readings of meter m1, numbered from ``first_index``."""
    return TelemetryBatch(
        msg_id=new_ulid(),
        device_id=device_id,
        seq=seq,
        ts=T0,
        clock_synced=True,
        readings=[
            MeterReading(
                meter_id="m1",
                ts=T0 + timedelta(seconds=first_index + i),
                clock_synced=True,
                values={
                    Quantity.POWER_W: float((first_index + i) % 7000),
                    Quantity.ENERGY_IMPORT_WH: float(first_index + i),
                },
            )
            for i in range(readings)
        ],
    )


def session_events(
    device_id: str,
    session_id: str,
    first_seq: int,
    *,
    updates: int,
    stop: bool = True,
    ref: str = "a" * 64,
) -> list[SessionEvent]:
    """started, ``updates`` updated events, then stopped: seqs from ``first_seq``, in order."""
    events = []
    base: dict[str, Any] = {
        "device_id": device_id,
        "session_id": session_id,
        "ts": T0,
        "clock_synced": True,
        "connector": 1,
        "offline": False,
        "credential": CredentialRef(kind=CredentialKind.ID_TAG, ref=ref),
        "started_at": T0,
        "meter_start_wh": 1000,
    }
    n = updates + (2 if stop else 1)
    for i in range(n):
        kind = (
            SessionEventType.STARTED
            if i == 0
            else SessionEventType.STOPPED
            if stop and i == n - 1
            else SessionEventType.UPDATED
        )
        stopping = kind is SessionEventType.STOPPED
        events.append(
            SessionEvent(
                msg_id=new_ulid(),
                seq=first_seq + i,
                event=kind,
                event_seq=i + 1,
                meter_wh=1000 + 100 * i,
                energy_wh=100 * i,
                power_w=None if stopping else 3500.0,
                stopped_at=T0 + timedelta(minutes=i) if stopping else None,
                stop_reason=StopReason.EV_DISCONNECTED if stopping else None,
                **base,
            )
        )
    return events


def status(device_id: str, seq: int, *, online: bool = True) -> Status:
    return Status(
        msg_id=new_ulid(), device_id=device_id, seq=seq, ts=T0, clock_synced=True, online=online
    )


def auth_decision(
    device_id: str,
    seq: int,
    status: AuthorizationStatus = AuthorizationStatus.ACCEPTED,
    *,
    session_id: str | None = None,
    reason: str = "local list: Accepted",
) -> AuthDecision:
    """A decision on an id tag (by its hash) at connector 1."""
    return AuthDecision(
        msg_id=new_ulid(),
        device_id=device_id,
        seq=seq,
        ts=T0,
        clock_synced=True,
        connector=1,
        credential=CredentialRef(kind=CredentialKind.ID_TAG, ref=f"{seq:064x}"),
        status=status,
        reason=reason,
        decided_at=T0 + timedelta(seconds=seq),
        session_id=session_id,
    )


def command_result(
    device_id: str, seq: int, cmd_id: str, status: CommandStatus = CommandStatus.ACCEPTED
) -> CommandResult:
    """The device's answer to the command ``cmd_id``."""
    return CommandResult(
        msg_id=new_ulid(),
        device_id=device_id,
        seq=seq,
        ts=T0,
        clock_synced=True,
        cmd_id=cmd_id,
        status=status,
    )
