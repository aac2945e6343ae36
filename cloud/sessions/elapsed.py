"""A session's billed time: the agent's monotonic elapsed seconds when its stop reports them.

The wall-clock duration ``stopped_at - started_at`` is wrong when the agent's clock stepped
during the session (an NTP step, an RTC restored late): a step back bills nothing, a step
forward bills hours that never were. An agent that measures the session with its monotonic
clock reports ``elapsed_s`` in the ``stopped`` event (protocols/messages.py
``SessionEvent``, persisted by the agent across restarts); ingest stores every event's payload
(``session_events.payload``), and :func:`billed_elapsed` reads it from there at pricing — no
column of its own. Without it (an older agent) the wall-clock duration is billed as before.

A session whose stop is before its start is flagged at pricing (:func:`flag_stepped_clock`):
a warning in the log and an audit row (``session.clock_stepped``, entity ``session``, the
device's session id) that the admin console's audit log lists, with both times and the
elapsed seconds the bill used.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.audit.service import SYSTEM, record
from cloud.sessions.models import ChargingSession, SessionEventRow
from protocols.enums import SessionEventType

log = logging.getLogger(__name__)


async def billed_elapsed(db: AsyncSession, row: ChargingSession) -> timedelta | None:
    """The monotonic elapsed time the agent reported with the session's stop; None when its
    stop carries none (an agent from before the field)."""
    elapsed = await db.scalar(
        select(SessionEventRow.payload["elapsed_s"].as_float()).where(
            SessionEventRow.device_id == row.device_id,
            SessionEventRow.device_session_id == row.device_session_id,
            SessionEventRow.event == SessionEventType.STOPPED,
        )
    )
    return None if elapsed is None else timedelta(seconds=elapsed)


async def flag_stepped_clock(
    db: AsyncSession, row: ChargingSession, elapsed: timedelta | None
) -> bool:
    """Log and audit a session whose stop is before its start (in ``db``'s transaction);
    whether it was one."""
    if row.stopped_at is None or row.stopped_at >= row.started_at:
        return False
    log.warning(
        "session %s on %s stopped (%s) before it started (%s): the agent's clock stepped; "
        "billed time %s",
        row.device_session_id,
        row.device_id,
        row.stopped_at.isoformat(),
        row.started_at.isoformat(),
        "from its monotonic elapsed" if elapsed else "zero",
    )
    await record(
        db,
        SYSTEM,
        action="session.clock_stepped",
        entity="session",
        entity_id=row.device_session_id,
        data={
            "device_id": row.device_id,
            "started_at": row.started_at,
            "stopped_at": row.stopped_at,
            "elapsed_s": None if elapsed is None else elapsed.total_seconds(),
        },
    )
    return True
