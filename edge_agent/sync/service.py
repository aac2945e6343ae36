"""The sync task: keep a link to the cloud, drain the outbox through it, take commands and acks.

:class:`SyncService` is what the agent's composition root runs (one named task). Per
connection it runs the drain loop and the downlink consumer in one TaskGroup; when the link
drops the group ends and the service reconnects after a jittered exponential backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import datetime

from edge_agent.backoff import Backoff, Retries
from edge_agent.errors import LinkError
from edge_agent.status import StatusParts, no_parts
from edge_agent.store import outbox_lanes as q
from edge_agent.store.db import transaction
from edge_agent.store.outbox import enqueue
from edge_agent.store.writer import StoreWriter
from edge_agent.sync.downlink import CommandHandler, Downlink, WallClock
from edge_agent.sync.link import LinkSettings, MqttLink, Will
from edge_agent.sync.uplink import Uplink, UplinkSettings
from protocols.enums import MessageKind
from protocols.errors import ProtocolError
from protocols.ids import new_ulid
from protocols.messages import Ack, Backlog, Status, encode_message, last_will, parse_message
from protocols.topics import URGENT_KINDS, topic

log = logging.getLogger(__name__)

#: Downlink messages waiting for the consumer. paho acknowledges a message as soon as it is
#: received, so this queue is bounded to keep a flood from growing memory (the aiomqtt trap in
#: DESIGN.md §8); when it is full, acks are dropped first (the rows are simply resent).
DOWNLINK_QUEUE = 10_000
#: Acknowledged rows are deleted in one transaction at most this often (or sooner when this
#: many ack ranges are waiting): each commit is an fsync.
ACK_FLUSH_S = 0.1
ACK_FLUSH_RANGES = 500
#: How long an idle drain (nothing in flight, nothing acked to delete) sleeps unless woken.
IDLE_WAIT_S = 1.0
#: How often the status task looks for a change worth an early status, and the least time
#: between two statuses (a meter flapping on a bad RS-485 line must not flood the outbox).
STATUS_CHECK_S = 0.5
STATUS_MIN_GAP_S = 2.0


@dataclass(frozen=True, slots=True)
class SyncSettings:
    link: LinkSettings
    uplink: UplinkSettings = field(default_factory=UplinkSettings)
    backoff: Backoff = field(default_factory=Backoff)
    status_interval_s: float = 60.0
    agent_version: str = "0"


@dataclass(slots=True)
class SyncStats:
    """What ``sync status`` and the status message report."""

    connected: bool = False
    connects: int = 0
    published: int = 0
    acked_rows: int = 0
    last_ack_at: datetime | None = None
    #: Monotonic time of the last ack (None: none since the agent started).
    last_ack_mono: float | None = None
    last_error: str | None = None
    dropped_downlink: int = 0
    resent: int = 0
    #: PUBACKs with 0x10 "No matching subscribers": uplink the broker dropped (resent).
    dropped_no_subscribers: int = 0


class SyncService:
    def __init__(
        self,
        conn: sqlite3.Connection,
        settings: SyncSettings,
        *,
        handler: CommandHandler,
        clock: WallClock,
        thinned: Callable[[], int] = lambda: 0,
        status_parts: Callable[[], StatusParts] = no_parts,
        mono: Callable[[], float] = time.monotonic,
        writer: StoreWriter | None = None,
    ) -> None:
        self._conn = conn
        #: Where acknowledged rows are deleted: the agent's writer thread (the delete's fsync
        #: stays off the event loop); without one, on this connection.
        self._writer = writer
        self.settings = settings
        self._clock = clock
        self._thinned = thinned
        self._status_parts = status_parts
        self._started_mono = mono()
        self._status_sent_mono = 0.0
        self._status_signature: tuple[object, ...] | None = None
        self._mono = mono
        self.device_id = settings.link.device_id
        self.stats = SyncStats()
        self._wake = asyncio.Event()
        self._uplink = Uplink(conn, settings.uplink, mono())
        self._downlink = Downlink(
            conn, device_id=self.device_id, handler=handler, clock=clock, notify=self.notify
        )
        self._mids: dict[int, int] = {}
        self._inbox: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue(DOWNLINK_QUEUE)
        self._dropped = asyncio.Event()
        self._link: MqttLink | None = None
        #: Refill the window in bursts of at least this many rows (a query per PUBACK would
        #: cost more than the publish itself); ``_starved``: the drain waits for room.
        self._low_water = max(1, settings.uplink.max_publishing // 4)
        self._starved = False
        self._no_subscribers_logged = False

    # --- called by the agent -----------------------------------------------------------------

    def notify(self) -> None:
        """Something was queued in the outbox: drain now rather than at the next poll."""
        self._wake.set()

    @property
    def awaiting_ack(self) -> int:
        """Rows handed to the broker and not yet acknowledged by the cloud (read-only)."""
        return len(self._uplink.window)

    @property
    def ack_silence_s(self) -> float:
        """Seconds since the cloud last acknowledged anything (since the start if never)."""
        last = self.stats.last_ack_mono
        return max(0.0, self._mono() - (self._started_mono if last is None else last))

    @property
    def offline(self) -> bool:
        return not self.stats.connected

    async def run(self) -> None:
        """Connect, drain, reconnect — until cancelled."""
        retries = Retries(self.settings.backoff)
        while True:
            try:
                await self._connection()
                retries.succeeded()
            except LinkError as exc:
                if self.stats.last_error != str(exc):
                    # Once per kind of failure, not once per retry: no log storm while the
                    # site's 4G is down for hours.
                    log.error("cloud link: %s", exc)
                self.stats.last_error = str(exc)
            await asyncio.sleep(retries.failed())

    # --- one connection ----------------------------------------------------------------------

    async def _connection(self) -> None:
        now_wall = self._clock.now()
        will = last_will(self.device_id, ts=now_wall, clock_synced=self._clock.synced())
        link = MqttLink(
            self.settings.link,
            will=Will(topic(self.device_id, MessageKind.STATUS), encode_message(will)),
            on_message=self._received,
            on_puback=self._puback,
            on_disconnect=self._disconnected,
            on_no_subscribers=self._no_subscribers,
        )
        self._dropped = asyncio.Event()
        session_present = await link.connect()
        self._link = link
        try:
            await link.subscribe(
                [topic(self.device_id, MessageKind.CMD), topic(self.device_id, MessageKind.ACK)]
            )
            self._mids.clear()
            self._uplink.reset(self._mono())
            self._no_subscribers_logged = False
            self.stats.connected = True
            self.stats.connects += 1
            self.stats.last_error = None
            log.info(
                "cloud link up (%s:%s, session %s)",
                self.settings.link.host,
                self.settings.link.port,
                "resumed" if session_present else "new",
            )
            self._publish_status(online=True)
            async with asyncio.TaskGroup() as group:
                drain = group.create_task(self._drain(), name="sync-drain")
                inbox = group.create_task(self._consume(), name="sync-downlink")
                status = group.create_task(self._status_loop(), name="sync-status")
                await self._dropped.wait()
                for task in (drain, inbox, status):
                    task.cancel()
            log.warning("cloud link down; %d rows will be resent", len(self._uplink.window))
        finally:
            self.stats.connected = False
            self._link = None
            self.stats.acked_rows += self._uplink.flush_acks()
            await link.close()

    def _disconnected(self, reason: str) -> None:
        self.stats.last_error = f"disconnected: {reason}"
        self._dropped.set()
        self._wake.set()

    def _received(self, name: str, payload: bytes) -> None:
        try:
            self._inbox.put_nowait((name, payload))
        except asyncio.QueueFull:
            self.stats.dropped_downlink += 1

    def _puback(self, mids: list[int]) -> None:
        """PUBACKs of one read from the broker (a batch during a drain)."""
        now = self._mono()
        pop = self._mids.pop
        puback = self._uplink.puback
        for mid in mids:
            seq = pop(mid, None)
            if seq is not None:
                puback(seq, now)
        self._wake_if_starved()

    def _no_subscribers(self, mids: list[int]) -> None:
        """PUBACKs with 0x10 "No matching subscribers": the broker dropped these (cloud
        ingest is not subscribed: a broker restart's first seconds, or ingest down). Each is
        resent after its own backoff (:mod:`edge_agent.sync.window`) instead of the ack
        timeout; the drain's expiry check picks it up when due."""
        now = self._mono()
        count = 0
        for mid in mids:
            seq = self._mids.pop(mid, None)
            if seq is not None and self._uplink.dropped(seq, now) is not None:
                count += 1
        if count:
            self.stats.dropped_no_subscribers += count
            if not self._no_subscribers_logged:
                # Once per connection: a long ingest outage must not become a log storm.
                self._no_subscribers_logged = True
                log.warning(
                    "the broker dropped uplink for want of a subscriber (cloud ingest not "
                    "subscribed); resending it with backoff"
                )
        self._wake_if_starved()

    def _wake_if_starved(self) -> None:
        """Wake the drain for room freed by a PUBACK or an ack only when it is waiting for
        room: at a few messages a second, a wake per PUBACK and per ack was most of the
        drain's CPU (durable rows wake it through :meth:`notify` anyway)."""
        if self._starved and self._uplink.window.room() >= self._low_water:
            self._starved = False
            self._wake.set()

    async def _drain(self) -> None:
        link = self._link
        assert link is not None
        # One topic string per kind, not one per row (a 100,000-row drain).
        topics = {kind: topic(self.device_id, kind) for kind in MessageKind}
        next_expiry_check = 0.0
        next_flush = 0.0
        low_water = self._low_water
        while True:
            now = self._mono()
            acks = self._uplink.acks_pending
            # Everything sent is acknowledged: delete it now, not at the next tick (the last
            # rows of a drain would otherwise wait up to ACK_FLUSH_S in the outbox).
            if acks and (now >= next_flush or acks >= ACK_FLUSH_RANGES or not self._uplink.window):
                self._flush_acks()
                next_flush = now + ACK_FLUSH_S
            # Timeouts are seconds long: checking them once a second keeps a window scan off
            # every drain step; a row the broker dropped is looked for when it is due.
            window = self._uplink.window
            late: list[int] = []
            if now >= next_expiry_check or now >= window.next_drop_due:
                late = self._uplink.expire(now)
                next_expiry_check = now + 1.0
            if late:
                self.stats.resent += len(late)
                timed_out = len(late) - window.last_dropped_due
                # Dropped rows' resends are not logged one by one (warned once per connection
                # in _no_subscribers): a long ingest outage would log every few seconds.
                if timed_out:
                    log.info(
                        "no ack for %d rows within %.0f s; resending",
                        timed_out,
                        self.settings.uplink.ack_timeout_s,
                    )
            # Refill in bursts: a query per PUBACK would cost more than the publish itself.
            room = self._uplink.window.room()
            full = room < low_water and len(self._uplink.window) > 0
            rows = [] if full else self._uplink.next_rows(now)
            for row in rows:
                try:
                    # Status is retained: whoever subscribes later sees the latest one.
                    retain = row.kind is MessageKind.STATUS
                    mid = link.publish(topics[row.kind], row.payload, retain=retain)
                except LinkError as exc:
                    # The link died under us before paho's disconnect callback arrived.
                    self._disconnected(str(exc))
                    return
                self._mids[mid] = row.seq
                self._uplink.published(row.seq, now, urgent=row.kind in URGENT_KINDS)
                self.stats.published += 1
            if rows:
                await asyncio.sleep(0)  # let pubacks and acks in between bursts
                continue
            self._wake.clear()
            self._starved = self._uplink.window.room() < low_water
            if self._uplink.acks_pending or len(self._uplink.window):
                wait_s = min(self._uplink.backlog_wait_s(now) or ACK_FLUSH_S, ACK_FLUSH_S)
            else:
                # Nothing in flight and nothing to delete: sleep until a row is queued
                # (notify) or the backlog's next token, not ten times a second.
                wait_s = self._uplink.backlog_wait_s(now) or IDLE_WAIT_S
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()

    def _flush_acks(self) -> None:
        """Delete what the cloud acknowledged: through the writer when there is one."""
        if self._writer is None:
            self.stats.acked_rows += self._uplink.flush_acks()
            return
        ranges = self._uplink.take_acks()
        if not ranges:
            return
        loop = asyncio.get_running_loop()
        future = self._writer.submit_job(lambda conn: q.delete_ranges(conn, ranges))

        def deleted(done: Future[int]) -> None:  # on the writer thread
            if not done.cancelled() and done.exception() is None:
                with contextlib.suppress(RuntimeError):  # the loop has closed: nobody to tell
                    loop.call_soon_threadsafe(self._count_acked, done.result())

        future.add_done_callback(deleted)

    def _count_acked(self, rows: int) -> None:
        self.stats.acked_rows += rows

    async def _consume(self) -> None:
        ack_topic = topic(self.device_id, MessageKind.ACK)
        cmd_topic = topic(self.device_id, MessageKind.CMD)
        while True:
            name, payload = await self._inbox.get()
            if name == ack_topic:
                self._apply_ack(payload)
            elif name == cmd_topic:
                await self._downlink.on_command(payload)
            else:
                log.warning("message on unexpected topic %s ignored", name)

    def _apply_ack(self, payload: bytes) -> None:
        try:
            ack = parse_message(MessageKind.ACK, payload)
        except ProtocolError as exc:
            log.warning("ignored a malformed ack: %s", exc)
            return
        assert isinstance(ack, Ack)
        if ack.device_id != self.device_id:
            log.warning("ignored an ack addressed to %s", ack.device_id)
            return
        self._uplink.acked(ack, self._mono())
        self.stats.last_ack_at = self._clock.now()
        self.stats.last_ack_mono = self._mono()
        if ack.dead_lettered:
            log.error("the cloud refused and dead-lettered seqs %s", ack.dead_lettered[:20])
        if not self._uplink.window:
            # Everything sent is acknowledged: delete it now rather than at the next tick.
            self._wake.set()
        else:
            self._wake_if_starved()

    async def _status_loop(self) -> None:
        """A status every ``status_interval_s``, and sooner when a connector's state or a
        meter's availability changes (:mod:`edge_agent.status`), at most one per
        :data:`STATUS_MIN_GAP_S`."""
        while True:
            await asyncio.sleep(STATUS_CHECK_S)
            since = self._mono() - self._status_sent_mono
            if since >= self.settings.status_interval_s:
                self._publish_status(online=True)
                continue
            if since < STATUS_MIN_GAP_S:
                continue
            parts = self._status_parts()
            if parts.signature() != self._status_signature:
                self._publish_status(online=True, parts=parts)

    def _publish_status(self, *, online: bool, parts: StatusParts | None = None) -> None:
        """Queue a status message; the drain publishes it (retained) in the live lane.

        Status goes through the outbox like every uplink message, so it holds a real place
        in the sequence and is acked and deleted like the rest: a message the cloud acks must
        never name a seq that belongs to another row. It is only queued while the link is up,
        so no pile of stale statuses builds up during an outage.
        """
        rows, oldest = q.backlog(self._conn)
        now = self._clock.now()
        oldest_age = max(0.0, (now - oldest).total_seconds()) if oldest else None
        synced = self._clock.synced()
        if parts is None:
            parts = self._status_parts()
        self._status_signature = parts.signature()
        self._status_sent_mono = self._mono()

        def build(seq: int) -> Status:
            return Status(
                msg_id=new_ulid(),
                device_id=self.device_id,
                seq=seq,
                ts=now,
                clock_synced=synced,
                online=online,
                agent_version=self.settings.agent_version,
                meters=list(parts.meters),
                connectors=list(parts.connectors),
                backlog=Backlog(rows=rows, oldest_age_s=oldest_age, thinned=self._thinned()),
            )

        with transaction(self._conn):
            enqueue(self._conn, build, now=now)
        self.notify()
