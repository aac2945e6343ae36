"""Send a command to a device over MQTT and wait (bounded) for its result.

A command is recorded first (``device_commands``, with the downlink ``seq`` taken from the
counter ingest also uses for acks, so the device sees one increasing sequence), committed,
then published QoS 1 with an MQTT 5 message expiry equal to its own ``expires_at``: a
command for a charger that is away is dropped by the broker rather than run late.

The answer comes back through ingest, which stores it (first result wins) and announces it
on ``cm:live:cmd:{cmd_id}``. The waiter subscribes to that channel *before* publishing and,
because live messages are best effort, also looks at the stored result every
:data:`RESULT_POLL_S`, so a lost Redis message costs latency, not the answer.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.devices.models import DeviceCommand
from cloud.errors import BrokerUnacknowledged, DependencyUnavailable
from cloud.sessions.live import cmd_channel
from cloud.state import AppState
from protocols.enums import MessageKind
from protocols.ids import new_ulid
from protocols.messages import (
    Command,
    CommandAction,
    CommandResult,
    encode_message,
    parse_message,
    to_builtins,
)
from protocols.topics import topic

log = logging.getLogger(__name__)

#: How often a waiter checks the stored result besides listening on Redis.
RESULT_POLL_S = 0.5

NEXT_DOWNLINK_SEQ = text(
    "INSERT INTO downlink_sequences AS d (device_id, last_seq) VALUES (:device_id, 1) "
    "ON CONFLICT (device_id) DO UPDATE SET last_seq = d.last_seq + 1 RETURNING last_seq"
)


@dataclass(frozen=True, slots=True)
class PreparedCommand:
    command: Command
    payload: bytes
    ttl_s: int


def redacted(action: CommandAction) -> dict[str, object]:
    """What is stored of a command: never an unlock token (a bearer credential)."""
    data = to_builtins(action)
    if "token" in data:
        data["token"] = "<redacted>"  # noqa: S105 -- a placeholder, not a secret
    return data


async def record_command(
    db: AsyncSession,
    device_id: str,
    action: CommandAction,
    *,
    now: datetime,
    ttl_s: int,
    cmd_id: str | None = None,
    deferred: bool = False,
) -> PreparedCommand:
    """Store the command and take its downlink seq in ``db``'s transaction, which the caller
    commits *before* :func:`send_and_wait`: the seq counter row is shared with ingest and
    must not stay locked while we wait (call this last in a short transaction).

    ``deferred``: published after the commit without waiting, its delivery guaranteed by
    the republish job (:mod:`cloud.sessions.republish`): ``sent_at`` stays NULL until the
    publish is recorded."""
    cmd_id = cmd_id or new_ulid()
    expires_at = now + timedelta(seconds=ttl_s)
    seq = (await db.execute(NEXT_DOWNLINK_SEQ, {"device_id": device_id})).scalar_one()
    db.add(
        DeviceCommand(
            cmd_id=cmd_id,
            device_id=device_id,
            name=action.name,
            payload=redacted(action),
            sent_at=None if deferred else now,
            expires_at=expires_at,
        )
    )
    command = Command(
        msg_id=new_ulid(),
        device_id=device_id,
        seq=seq,
        ts=now,
        clock_synced=True,
        cmd_id=cmd_id,
        expires_at=expires_at,
        action=action,
    )
    return PreparedCommand(command, encode_message(command), ttl_s)


async def send_and_wait(
    state: AppState, prepared: PreparedCommand, *, wait_s: float
) -> CommandResult | None:
    """Publish ``prepared`` and wait up to ``wait_s`` for its result (None: no answer).

    BrokerError only when the command was not handed over (no connection, the link or the broker
    refused it). A publish whose PUBACK never came (:class:`~cloud.errors.
    BrokerUnacknowledged`: timeout, connection lost after the PUBLISH was written) may have
    reached the broker and the charger, which may start a session tied to the driver: its
    outcome is unknown, so the wait for the device's result goes on as if it were sent."""
    if not state.broker.connected:
        raise DependencyUnavailable("broker", "the API is not connected to the MQTT broker")
    command = prepared.command
    loop = asyncio.get_running_loop()
    async with state.live.subscribe(cmd_channel(command.cmd_id)) as sub:
        deadline = loop.time() + wait_s
        try:
            await state.broker.publish(
                topic(command.device_id, MessageKind.CMD),
                prepared.payload,
                expiry_s=prepared.ttl_s,
            )
        except BrokerUnacknowledged as exc:
            log.warning(
                "command %s to %s handed over but not acknowledged (%s); waiting for its result",
                command.cmd_id,
                command.device_id,
                exc,
            )
        while (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(min(remaining, RESULT_POLL_S)):
                    _, body = await sub.get()
            except TimeoutError:
                stored = await stored_result(state, command.cmd_id)
                if stored is not None:
                    return stored
                continue
            result = parse_message(MessageKind.CMD_RESULT, body)
            if (
                isinstance(result, CommandResult)
                and result.cmd_id == command.cmd_id
                and result.device_id == command.device_id
            ):
                return result
    return await stored_result(state, command.cmd_id)


async def stored_result(state: AppState, cmd_id: str) -> CommandResult | None:
    async with state.sessions() as db:
        row = await db.scalar(
            select(DeviceCommand.result).where(
                DeviceCommand.cmd_id == cmd_id, DeviceCommand.result_at.is_not(None)
            )
        )
    # The stored result is the JSON ingest parsed (jsonb, read back as plain values).
    return None if row is None else msgspec.convert(row, CommandResult)


def utcnow() -> datetime:
    return datetime.now(UTC)
