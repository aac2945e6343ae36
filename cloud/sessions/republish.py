"""Deferred commands that were recorded but never published: published by a job.

A deferred command (:data:`DEFERRED`: today the booking PIN revocation, :mod:`cloud.bookings.
pins`) is recorded in the transaction that makes it necessary (the cancel) with
``device_commands.sent_at`` NULL, and published after the commit; ``sent_at`` is set once
the broker has acknowledged it (its PUBACK: :meth:`cloud.broker.BrokerLink.publish`). If the
API process dies between the commit and the publish, or the broker link is down, loses the
connection before the PUBACK or is refused, the row stays unsent. :class:`Republisher`,
under the jobs' supervisor (:func:`cloud.jobs.supervise`) in every API process, publishes
such rows once they are :data:`GRACE_S` old (the request that recorded one normally
publishes it itself within milliseconds) and until they expire.

**Several API processes.** There is no leader: each round takes its rows ``FOR UPDATE SKIP
LOCKED`` (in ``device_id`` order, the order ingest locks ``downlink_sequences`` in), gives
each a fresh downlink ``seq`` and commits; then publishes them outside any transaction (all
at once, each waiting for its PUBACK) and marks the acknowledged ones sent in a second short
transaction. No database lock is held across a broker wait. Two processes can therefore
publish the same row when their rounds overlap within that window; a command published twice
(that, a request's own publish racing the job, a crash after the PUBACK but before the mark)
is harmless: the agent's revocation store is
idempotent (``edge_agent/store/auth.py`` ``revoke_pins``) and its command result is keyed on
``cmd_id``, first result wins.

A republished command keeps its ``cmd_id`` and ``expires_at`` but takes a fresh downlink
``seq`` and ``msg_id``: the one it was recorded with never reached the wire. Start and stop
commands are not deferred: their caller waits for the answer, and a start sent after its
driver gave up would surprise everyone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import msgspec
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from cloud.broker import BrokerLink
from cloud.db_errors import DATABASE_ERRORS
from cloud.devices.models import DeviceCommand
from cloud.errors import BrokerError, CloudError
from cloud.jobs import every, supervise
from cloud.sessions.commands import NEXT_DOWNLINK_SEQ
from cloud.state import AppState
from protocols.enums import CommandName, MessageKind
from protocols.ids import new_ulid
from protocols.messages import Command, RevokePins, encode_message
from protocols.topics import topic

log = logging.getLogger(__name__)

#: Commands recorded now and published after the commit, whose delivery the job guarantees.
DEFERRED = (CommandName.REVOKE_PINS,)
#: A deferred command younger than this is left to the request that recorded it.
GRACE_S = 10.0
#: How often each API process looks for unsent deferred commands.
INTERVAL_S = 5.0
#: Rows per round.
BATCH = 100

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def recorded_at(cmd_id: str) -> datetime:
    """When the command was recorded: its id is a ULID made then (:func:`protocols.ids.
    new_ulid`), whose first ten characters are the milliseconds since the epoch. No column
    holds it (``sent_at`` is the publish time)."""
    ms = 0
    for char in cmd_id[:10]:
        ms = ms * 32 + _CROCKFORD.index(char)
    return datetime.fromtimestamp(ms / 1000, UTC)


async def mark_sent(db: AsyncSession, cmd_id: str, now: datetime) -> None:
    """Record that the broker acknowledged ``cmd_id`` (in ``db``'s transaction)."""
    await db.execute(
        update(DeviceCommand)
        .where(DeviceCommand.cmd_id == cmd_id, DeviceCommand.sent_at.is_(None))
        .values(sent_at=now)
    )


@dataclass(frozen=True, slots=True)
class _Due:
    """What the publish needs of a row, read before its transaction ends."""

    cmd_id: str
    name: str | None
    device_id: str


async def republish_round(
    sessions: async_sessionmaker[AsyncSession],
    broker: BrokerLink,
    *,
    now: datetime | None = None,
    grace_s: float = GRACE_S,
) -> int:
    """Publish the deferred commands recorded at least ``grace_s`` ago, never sent and not
    expired; how many the broker acknowledged (those are marked sent). Nothing is taken while
    the broker link is down."""
    if not broker.connected:
        return 0
    now = now or datetime.now(UTC)
    due: list[tuple[_Due, bytes, int]] = []
    # First transaction: take the rows, their fresh seqs and payloads, and commit before any
    # broker wait, so no row lock (device_commands, downlink_sequences) is held while a PUBACK
    # is awaited. Rows are taken in device_id order, the order ingest's
    # ALLOCATE_DOWNLINK_SEQS locks downlink_sequences in, so the two cannot deadlock.
    async with sessions() as db, db.begin():
        rows = list(
            await db.scalars(
                select(DeviceCommand)
                .where(
                    DeviceCommand.sent_at.is_(None),
                    DeviceCommand.result_at.is_(None),
                    DeviceCommand.name.in_(DEFERRED),
                    DeviceCommand.expires_at > now,
                )
                .order_by(DeviceCommand.device_id, DeviceCommand.cmd_id)
                .limit(BATCH)
                .with_for_update(skip_locked=True)
            )
        )
        for row in rows:
            if recorded_at(row.cmd_id) > now - timedelta(seconds=grace_s):
                continue
            assert row.expires_at is not None  # selected on it
            action = msgspec.convert(row.payload, RevokePins)
            seq = (await db.execute(NEXT_DOWNLINK_SEQ, {"device_id": row.device_id})).scalar_one()
            command = Command(
                msg_id=new_ulid(),
                device_id=row.device_id,
                seq=seq,
                ts=now,
                clock_synced=True,
                cmd_id=row.cmd_id,
                expires_at=row.expires_at,
                action=action,
            )
            ttl_s = max(1, int((row.expires_at - now).total_seconds()))
            due.append((_Due(row.cmd_id, row.name, row.device_id), encode_message(command), ttl_s))
    if not due:
        return 0
    # Outside any transaction: publish, each waiting for its PUBACK.
    async with asyncio.TaskGroup() as tasks:
        deliveries = [
            (row.cmd_id, tasks.create_task(_deliver(broker, row, payload, ttl_s)))
            for row, payload, ttl_s in due
        ]
    acknowledged = [cmd_id for cmd_id, delivered in deliveries if delivered.result()]
    # Second, short transaction: mark the acknowledged ones sent.
    if acknowledged:
        async with sessions() as db, db.begin():
            for cmd_id in acknowledged:
                await mark_sent(db, cmd_id, now)
    return len(acknowledged)


async def _deliver(broker: BrokerLink, row: _Due, payload: bytes, ttl_s: int) -> bool:
    """Publish one row's command; whether the broker acknowledged it."""
    try:
        await broker.publish(topic(row.device_id, MessageKind.CMD), payload, expiry_s=ttl_s)
    except BrokerError as exc:
        log.warning("deferred command %s not republished: %s", row.cmd_id, exc)
        return False
    log.info("republished %s %s to %s", row.name, row.cmd_id, row.device_id)
    return True


class Republisher:
    """The job: :func:`republish_round` every :data:`INTERVAL_S`, supervised."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], broker: BrokerLink) -> None:
        self._sessions = sessions
        self._broker = broker
        self.published = 0

    async def round(self) -> int:
        done = await republish_round(self._sessions, self._broker)
        self.published += done
        return done

    async def run(self) -> None:
        await supervise(
            "republish",
            every(INTERVAL_S, self.round),
            expected=(CloudError, *DATABASE_ERRORS, OSError),
        )


@asynccontextmanager
async def running_republisher(state: AppState) -> AsyncIterator[Republisher]:
    """The republish job for the API's lifespan."""
    republisher = Republisher(state.sessions, state.broker)
    async with asyncio.TaskGroup() as tasks:
        task = tasks.create_task(republisher.run(), name="republish")
        try:
            yield republisher
        finally:
            task.cancel()
