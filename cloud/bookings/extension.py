"""Telling the charger that a running session's booking was extended (the command path of
:mod:`cloud.sessions.commands`).

The ``extend_session`` command is recorded in the extension's own transaction
(:func:`extension_command`) and published after its commit (:func:`send_extension`), not
waited for: the slot and the amount are the cloud's to decide, and the charger, online or
not, keeps charging in the meantime — the agent does not stop a session at its booking's end.
What the command changes at the charger is the session's stored authorization
(``auth_expires_at``), which decides whether a session found open after an agent restart is
resumed or closed (edge_agent/sessions/recovery.py). Its message expiry is the new end: a
charger away until then has nothing left to extend.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession

from cloud.errors import BrokerError
from cloud.sessions.commands import PreparedCommand, record_command
from cloud.state import AppState
from protocols.enums import MessageKind
from protocols.messages import ExtendSession
from protocols.topics import topic

log = logging.getLogger(__name__)

#: A command is kept at least this long, however close the new end (the broker's expiry).
MIN_EXTENSION_TTL_S = 60


async def extension_command(
    db: AsyncSession, device_id: str, session_id: str, *, until: datetime, now: datetime
) -> PreparedCommand:
    """Record the ``extend_session`` command in ``db``'s transaction (call it last: the
    device's downlink counter row stays locked until the commit)."""
    ttl_s = max(MIN_EXTENSION_TTL_S, int((until - now).total_seconds()))
    action = ExtendSession(session_id=session_id, until=until)
    return await record_command(db, device_id, action, now=now, ttl_s=ttl_s)


async def send_extension(state: AppState, prepared: PreparedCommand | None) -> bool:
    """Publish a committed extension (QoS 1; the broker keeps it for a charger that is away
    until it expires); True when the broker acknowledged it."""
    if prepared is None:
        return False
    command = prepared.command
    try:
        await state.broker.publish(
            topic(command.device_id, MessageKind.CMD), prepared.payload, expiry_s=prepared.ttl_s
        )
    except BrokerError as exc:
        # Recorded (device_commands), not sent: the session charges on regardless.
        log.warning("extension %s not published: %s", command.cmd_id, exc)
        return False
    return True
