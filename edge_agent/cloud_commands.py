"""Cloud commands, executed by the agent: the :class:`~edge_agent.sync.downlink.CommandHandler`.

The sync task has already refused what is stale, repeated or malformed; here a command meets
the same paths as a driver at the charger: a remote start is a :class:`Token` presented to the
one authorization, a stop is a stop, a relay test is the control socket's relay test (one
handler, :func:`edge_agent.control.handlers.relay_test`), revoked booking PINs go to the
store the authorization reads, and an extended booking's running session is authorized for
longer. It is given the narrow parts it needs, never the agent.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Callable, Mapping
from datetime import datetime

import msgspec

from edge_agent.auth.authorizer import Token
from edge_agent.config import AgentSettings, merge_tables, parse_config, settings_to_dict
from edge_agent.control import handlers
from edge_agent.control import messages as control
from edge_agent.control.ports import ConnectorPort, Present
from edge_agent.errors import ConfigError, StaleAuthListVersion
from edge_agent.store.auth import apply_auth_list_update, revoke_pins
from edge_agent.store.db import transaction
from edge_agent.sync.downlink import CommandOutcome
from protocols.enums import AuthorizationStatus, CommandStatus
from protocols.messages import (
    AuthListUpdate,
    Command,
    ConfigUpdate,
    Diagnostics,
    ExtendSession,
    JsonValue,
    RelayTest,
    RevokePins,
    StartSession,
    StopSession,
)

log = logging.getLogger(__name__)

#: Key of the pending configuration in the store's key/value table (see :meth:`config_update`).
CONFIG_OVERRIDES_KEY = "config_overrides"


#: Tables a remote update may not touch: identity, and where the store itself lives.
FIXED_KEYS = frozenset({"device_id", "store"})


def load_overrides(settings: AgentSettings, conn: sqlite3.Connection) -> AgentSettings:
    """``settings`` with the stored cloud configuration update applied (or unchanged).

    An update that no longer validates against the file (the file was edited since) is
    ignored with a warning rather than keeping the agent from starting.
    """
    row = conn.execute("SELECT value FROM kv WHERE key = ?", (CONFIG_OVERRIDES_KEY,)).fetchone()
    if row is None:
        return settings
    overrides = json.loads(row[0])
    try:
        # Settings are frozen structs: the update is merged as data and validated again, whole.
        return parse_config(
            merge_tables(settings_to_dict(settings), overrides), source="stored config_update"
        )
    except ConfigError as exc:
        log.warning("ignoring the stored configuration update: %s", exc)
        return settings


class AgentCommands:
    def __init__(
        self,
        *,
        conn: sqlite3.Connection,
        settings: AgentSettings,
        present: Present,
        connectors: Mapping[int, ConnectorPort],
        now: Callable[[], datetime],
        snapshot: Callable[[], control.StatusAnswer],
    ) -> None:
        self._conn = conn
        self._settings = settings
        self._present = present
        self._connectors = connectors
        self._now = now
        self._snapshot_of = snapshot

    async def execute(self, command: Command) -> CommandOutcome:
        action = command.action
        if isinstance(action, StartSession):
            return await self._start(action)
        if isinstance(action, StopSession):
            return await self._stop(action)
        if isinstance(action, AuthListUpdate):
            return self._auth_list(action)
        if isinstance(action, ConfigUpdate):
            return self._config(action)
        if isinstance(action, RevokePins):
            return self._revoke_pins(action)
        if isinstance(action, ExtendSession):
            return await self._extend(action)
        if isinstance(action, Diagnostics):
            return CommandOutcome(CommandStatus.ACCEPTED, "snapshot", data=self._snapshot())
        return await self._relay_test(action)

    async def _start(self, action: StartSession) -> CommandOutcome:
        answer = await self._present(Token(action.token), action.connector)
        if isinstance(answer, control.Refused):
            return CommandOutcome(CommandStatus.REJECTED, answer.error)
        auth_status = AuthorizationStatus(answer.status)
        detail = answer.detail if isinstance(answer.detail, str) else None
        if answer.ok:
            session_id = answer.session_id if isinstance(answer.session_id, str) else None
            return CommandOutcome(
                CommandStatus.ACCEPTED,
                detail or "started",
                auth_status=auth_status,
                session_id=session_id,
            )
        return CommandOutcome(
            CommandStatus.REJECTED, detail or answer.reason or "refused", auth_status=auth_status
        )

    async def _stop(self, action: StopSession) -> CommandOutcome:
        for controller in self._connectors.values():
            session = controller.session
            if session is not None and session.is_open and session.session_id == action.session_id:
                refused = await controller.stop(action.reason)
                if refused:
                    return CommandOutcome(CommandStatus.REJECTED, refused)
                return CommandOutcome(
                    CommandStatus.ACCEPTED, "stopped", session_id=action.session_id
                )
        return CommandOutcome(CommandStatus.REJECTED, f"no open session {action.session_id}")

    async def _extend(self, action: ExtendSession) -> CommandOutcome:
        """The cloud extended the booking of a running session: its authorization (stored
        with it, what a restart's recovery checks) now runs until ``action.until``."""
        for controller in self._connectors.values():
            if await controller.extend(action.session_id, action.until):
                return CommandOutcome(
                    CommandStatus.ACCEPTED,
                    f"authorized until {action.until.isoformat()}",
                    session_id=action.session_id,
                )
        return CommandOutcome(CommandStatus.REJECTED, f"no open session {action.session_id}")

    def _auth_list(self, update: AuthListUpdate) -> CommandOutcome:
        conn = self._conn
        try:
            with transaction(conn):
                count = apply_auth_list_update(conn, update)
        except StaleAuthListVersion as exc:
            return CommandOutcome(CommandStatus.REJECTED, str(exc), data={"held": exc.held})
        return CommandOutcome(
            CommandStatus.ACCEPTED,
            f"local list at version {update.version}",
            data={"version": update.version, "entries": count},
        )

    def _revoke_pins(self, action: RevokePins) -> CommandOutcome:
        """Store the cloud's revoked booking PINs: from the commit on, the authorizer refuses
        them (Blocked), offline too, until their window is over."""
        conn = self._conn
        with transaction(conn):
            held = revoke_pins(conn, action.pins, now=self._now())
        return CommandOutcome(
            CommandStatus.ACCEPTED, f"{len(action.pins)} PIN(s) revoked", data={"held": held}
        )

    def _config(self, update: ConfigUpdate) -> CommandOutcome:
        """Validate the merged configuration; store it for the next start, atomically.

        The running agent keeps its configuration (buses and relays are opened once, at
        start): an accepted update is written to the store in one transaction and applied
        when the agent next starts, which the result says. A refused one changes nothing and
        lists every problem.
        """
        conn = self._conn
        pending = conn.execute(
            "SELECT value FROM kv WHERE key = ?", (CONFIG_OVERRIDES_KEY,)
        ).fetchone()
        overrides = merge_tables(json.loads(pending[0]) if pending else {}, dict(update.settings))
        fixed = sorted(FIXED_KEYS & overrides.keys())
        if fixed:
            return CommandOutcome(
                CommandStatus.REJECTED, f"{', '.join(fixed)} cannot be changed remotely"
            )
        current = settings_to_dict(self._settings)
        try:
            parse_config(merge_tables(current, overrides), source="config_update")
        except ConfigError as exc:
            return CommandOutcome(
                CommandStatus.REJECTED,
                str(exc)[:1000],
                data={"problems": [str(p) for p in exc.problems[:50]]},
            )
        with transaction(conn):
            conn.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (CONFIG_OVERRIDES_KEY, json.dumps(overrides, sort_keys=True)),
            )
        return CommandOutcome(CommandStatus.ACCEPTED, "saved; applied at the next start")

    def _snapshot(self) -> dict[str, JsonValue]:
        return msgspec.to_builtins(self._snapshot_of())  # type: ignore[no-any-return]

    async def _relay_test(self, action: RelayTest) -> CommandOutcome:
        answer = await handlers.relay_test(
            self._connectors, control.RelayTest(connector=action.connector)
        )
        data = msgspec.to_builtins(answer)
        if isinstance(answer, control.Refused):
            return CommandOutcome(CommandStatus.FAILED, answer.error, data=data)
        if answer.ok:
            return CommandOutcome(CommandStatus.ACCEPTED, "relay closed and opened", data=data)
        return CommandOutcome(CommandStatus.FAILED, "relay test failed", data=data)
