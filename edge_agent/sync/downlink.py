"""Commands from the cloud: parse, refuse the stale and the repeated, execute, answer once.

Every command that carries a readable ``cmd_id`` gets exactly one
:class:`~protocols.messages.CommandResult`, queued in the outbox in the same transaction that
records the ``cmd_id`` as handled, so a redelivered command (persistent sessions redeliver
after a reconnect) is recognised and not run twice. A payload without a readable ``cmd_id`` is
logged and dropped: there is no one to answer.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from edge_agent.store.db import transaction
from edge_agent.store.outbox import enqueue
from protocols.enums import AuthorizationStatus, CommandStatus, MessageKind
from protocols.errors import MessageError
from protocols.ids import is_ulid, new_ulid
from protocols.messages import Command, CommandResult, JsonValue, parse_message

log = logging.getLogger(__name__)

#: Handled command ids are remembered this long: longer than the broker keeps our session
#: (a week), so nothing it can redeliver is forgotten.
REMEMBER_FOR = timedelta(days=8)


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What executing a command came to (the device's half of a CommandResult)."""

    status: CommandStatus
    detail: str = ""
    auth_status: AuthorizationStatus | None = None
    session_id: str | None = None
    data: dict[str, JsonValue] = field(default_factory=dict)


class CommandHandler(Protocol):
    """The agent's side: executes a valid, fresh, first-seen command."""

    async def execute(self, command: Command) -> CommandOutcome: ...


@dataclass(frozen=True, slots=True)
class WallClock:
    now: Callable[[], datetime]
    synced: Callable[[], bool]


def readable_cmd_id(payload: bytes) -> str | None:
    """The ``cmd_id`` of a payload that failed validation, if one can be read safely."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    cmd_id = data.get("cmd_id") if isinstance(data, dict) else None
    return cmd_id if isinstance(cmd_id, str) and is_ulid(cmd_id) else None


def _handled_key(cmd_id: str) -> str:
    return f"cmd:{cmd_id}"


def already_handled(conn: sqlite3.Connection, cmd_id: str) -> bool:
    row = conn.execute("SELECT 1 FROM kv WHERE key = ?", (_handled_key(cmd_id),)).fetchone()
    return row is not None


class Downlink:
    """Turns command payloads into results in the outbox."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        *,
        device_id: str,
        handler: CommandHandler,
        clock: WallClock,
        notify: Callable[[], None] = lambda: None,
    ) -> None:
        self._conn = conn
        self._device_id = device_id
        self._handler = handler
        self._clock = clock
        self._notify = notify

    async def on_command(self, payload: bytes) -> CommandResult | None:
        """Handle one ``cmd`` payload; return the result queued (None if none could be)."""
        try:
            message = parse_message(MessageKind.CMD, payload)
        except MessageError as exc:
            cmd_id = readable_cmd_id(payload)
            log.warning("refused a command (%s): %s", cmd_id or "no readable cmd_id", exc)
            if cmd_id is None or already_handled(self._conn, cmd_id):
                return None
            return self._answer(cmd_id, CommandOutcome(CommandStatus.REJECTED, str(exc)[:1000]))
        assert isinstance(message, Command)
        command = message
        if command.device_id != self._device_id:
            log.warning("command %s is for %s, not us", command.cmd_id, command.device_id)
            return self._answer(
                command.cmd_id,
                CommandOutcome(CommandStatus.REJECTED, f"addressed to {command.device_id}"),
            )
        if already_handled(self._conn, command.cmd_id):
            log.info("command %s was already answered; ignoring the repeat", command.cmd_id)
            return None
        now = self._clock.now()
        # An unsynced clock cannot judge expiry; the sender's MQTT message expiry still keeps
        # a command from waiting in the broker past its time, and time-bound credentials
        # (tokens) are refused on an unsynced clock by the authorization itself.
        if self._clock.synced() and now >= command.expires_at:
            log.info("command %s expired at %s; not executed", command.cmd_id, command.expires_at)
            return self._answer(
                command.cmd_id,
                CommandOutcome(
                    CommandStatus.EXPIRED, f"expired at {command.expires_at.isoformat()}"
                ),
            )
        try:
            outcome = await self._handler.execute(command)
        except Exception as exc:  # any failure is answered, never a crash
            log.exception("command %s (%s) failed", command.cmd_id, command.action.name)
            outcome = CommandOutcome(CommandStatus.FAILED, f"{type(exc).__name__}: {exc}"[:1000])
        return self._answer(command.cmd_id, outcome)

    def _answer(self, cmd_id: str, outcome: CommandOutcome) -> CommandResult:
        now = self._clock.now()
        synced = self._clock.synced()

        def build(seq: int) -> CommandResult:
            return CommandResult(
                msg_id=new_ulid(),
                device_id=self._device_id,
                seq=seq,
                ts=now,
                clock_synced=synced,
                cmd_id=cmd_id,
                status=outcome.status,
                auth_status=outcome.auth_status,
                session_id=outcome.session_id,
                detail=outcome.detail,
                data=outcome.data,
            )

        with transaction(self._conn):
            result, _payload = enqueue(self._conn, build, now=now)
            self._conn.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?)", (_handled_key(cmd_id), now.isoformat())
            )
            # ULIDs sort by time, so old ids are a key range.
            horizon = new_ulid(max(0, int((now - REMEMBER_FOR).timestamp() * 1000)))
            self._conn.execute(
                "DELETE FROM kv WHERE key >= 'cmd:' AND key < ?", (_handled_key(horizon),)
            )
        self._notify()
        return result
