"""Building blocks for sync tests: a store with queued messages, a service, a broker."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.auth.decision import AuthVerdict
from edge_agent.backoff import Backoff
from edge_agent.store import outbox
from edge_agent.store.auth import record_decision
from edge_agent.store.db import transaction
from edge_agent.store.readings import add_batch
from edge_agent.sync.downlink import WallClock
from edge_agent.sync.link import LinkSettings
from edge_agent.sync.service import SyncService, SyncSettings
from edge_agent.sync.uplink import UplinkSettings
from protocols.enums import (
    AuthorizationStatus,
    CredentialKind,
    SessionEventType,
    StopReason,
)
from protocols.ids import new_ulid
from protocols.messages import CredentialRef, MeterReading, SessionEvent
from protocols.meters import Quantity

DEVICE = "site-7"
DEVICE_PASSWORD = "device-secret-7"
INGEST_PASSWORD = "ingest-secret"
API_PASSWORD = "api-secret"
T0 = datetime(2026, 11, 24, 6, 0, tzinfo=UTC)

USERS = {DEVICE: DEVICE_PASSWORD, "cloud-ingest": INGEST_PASSWORD, "cloud-api": API_PASSWORD}


def sync_settings(tls_port: int, ca: Path, **uplink: float) -> SyncSettings:
    return SyncSettings(
        link=LinkSettings(
            device_id=DEVICE,
            host="127.0.0.1",
            port=tls_port,
            username=DEVICE,
            password=DEVICE_PASSWORD,
            tls=True,
            ca_file=ca,
            keepalive_s=5,
            connect_timeout_s=3.0,
        ),
        uplink=UplinkSettings(**uplink),  # type: ignore[arg-type]
        backoff=Backoff(initial_s=0.05, max_s=0.5),
        status_interval_s=1.0,
    )


def wall_clock() -> WallClock:
    return WallClock(now=lambda: datetime.now(UTC), synced=lambda: True)


def queue_readings(
    conn: sqlite3.Connection, batches: int, per_batch: int = 4, *, device_id: str = DEVICE
) -> None:
    """Queue ``batches`` telemetry messages of ``per_batch`` readings each (as the agent does)."""
    for i in range(batches):
        ts = T0 + timedelta(seconds=i)
        add_batch(
            conn,
            [
                MeterReading(
                    meter_id=f"m{m}",
                    ts=ts,
                    clock_synced=True,
                    values={Quantity.POWER_W: 7400.0 + i, Quantity.ENERGY_IMPORT_WH: 1000.0 + i},
                )
                for m in range(per_batch)
            ],
            device_id=device_id,
            now=ts,
            clock_synced=True,
        )


def queue_session(conn: sqlite3.Connection, *, events: int = 3, device_id: str = DEVICE) -> str:
    """Queue a session's events (started, updated…, stopped) as the agent would."""
    session_id = new_ulid()
    for n in range(1, events + 1):
        kind = (
            SessionEventType.STARTED
            if n == 1
            else SessionEventType.STOPPED
            if n == events
            else SessionEventType.UPDATED
        )

        def build(seq: int, n: int = n, kind: SessionEventType = kind) -> SessionEvent:
            stopping = kind is SessionEventType.STOPPED
            return SessionEvent(
                msg_id=new_ulid(),
                device_id=device_id,
                seq=seq,
                ts=T0,
                clock_synced=True,
                session_id=session_id,
                event=kind,
                event_seq=n,
                connector=1,
                offline=True,
                credential=CredentialRef(kind=CredentialKind.ID_TAG, ref="a" * 64),
                started_at=T0,
                meter_start_wh=1000,
                meter_wh=1000 + 10 * n,
                energy_wh=10 * n,
                stopped_at=T0 + timedelta(minutes=n) if stopping else None,
                stop_reason=StopReason.LOCAL if stopping else None,
            )

        with transaction(conn):
            outbox.enqueue(conn, build, now=T0)
    return session_id


def queue_decision(
    conn: sqlite3.Connection,
    status: AuthorizationStatus = AuthorizationStatus.UNKNOWN,
    *,
    device_id: str = DEVICE,
) -> int:
    """Record a decision (an unknown tag by default) as the agent does; return its seq."""
    decision = AuthVerdict(status, f"test: {status.value}", CredentialKind.ID_TAG, "b" * 64)
    with transaction(conn):
        message = record_decision(
            conn, decision, device_id=device_id, connector=1, now=T0, clock_synced=True
        )
    return message.seq


def outbox_empty(conn: sqlite3.Connection) -> bool:
    return conn.execute("SELECT 1 FROM outbox LIMIT 1").fetchone() is None


def outbox_seqs(conn: sqlite3.Connection) -> set[int]:
    return {int(r[0]) for r in conn.execute("SELECT seq FROM outbox")}


async def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running(service: SyncService) -> AsyncIterator[SyncService]:
    """Run ``service`` in a task group for the body of the ``async with``."""
    async with asyncio.TaskGroup() as group:
        task = group.create_task(service.run(), name="sync-under-test")
        try:
            yield service
        finally:
            task.cancel()
