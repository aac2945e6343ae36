"""The MQTT ingest worker: broker → validated batch → one commit → acks.

Flow, and why each step is where it is::

    broker link (cloud/broker.py): decode (pure, as the link reads each one)
        ──its bounded queue──► batch loop (asyncio)
        plan (pure) → write_batch (one transaction) → publish Ack to each device
        → PUBACK the MQTT messages → live values to Redis

* **Nothing is acknowledged before the commit.** The application ack (``cm/v1/d/{id}/ack``)
  is what lets the agent delete outbox rows, so it is published only after the transaction
  commits; the MQTT PUBACKs are sent manually (the link's ``manual_ack``) after that, so a
  worker killed at any point leaves the broker holding the messages for redelivery. An ack
  that cannot be published (the connection is down) is left to the device, which resends
  the message after its ack timeout; the database keys make that a no-op that acks again.
* **Memory is bounded.** The link announces an MQTT 5 Receive Maximum equal to its queue's
  size: the broker never has more unacknowledged messages in flight to us than the queue
  holds. The queue is bounded as well; a full queue stops the link's connection reading
  the socket (TCP back-pressure) — DESIGN.md §8.
* **A stopped worker parks nothing.** Several workers join the ``$share/ingest`` group and
  split the load. Each connects with session expiry 0 (``ingest.session_expiry_s``): when it
  stops — or is killed — its session and its membership of the group end with the
  connection, and the broker routes everything to the workers still running. (With a
  persistent session Mosquitto kept queueing this worker's share for it: half of all uplink
  waited an hour behind one stopped worker of two, issue 13.) What it had received but not
  committed is not lost: agents keep every message until its application ack and resend it
  (after ``ack_timeout_s``, 30 s), and the database keys make any redelivery a no-op. Clean
  start stays off, so a worker upgraded from a persistent session still collects it once.
* **No job's failure stops the process.** Each background job (ingest, rollup refresh) runs
  under :func:`cloud.jobs.supervise`: an exception is logged, counted
  (``chargemitra_worker_job_failures_total``), waited out with exponential backoff and
  jitter, and the job resumes — a bad bucket or message once took the whole worker down, and
  every restarted worker with it, issue 13. Inside the ingest job, a batch that fails for an
  unexpected reason is retried message by message; a message that still fails is neither
  stored nor acked, only PUBACKed (so it holds no broker window slot): its device resends it
  and every other message goes through.
* PUBACK message ids are per connection: after a reconnect the old ids mean nothing (the
  broker redelivers those messages), so the link PUBACKs a message only on the connection
  that delivered it (:meth:`cloud.broker.BrokerLink.ack`).
* **Two lanes, as on the agent.** Session events, command results and authorization
  decisions (:data:`protocols.topics.URGENT_KINDS`) come in on a broker connection of their
  own (client ``{client_id}-events-{index}``) and are written by a batch loop of their own;
  telemetry and statuses — the bulk, one batch a second from every site — on the other
  (``{client_id}-{index}``). A connection is where the broker queues: with one, a driver's
  unlock answer (the ``cmd_result`` the API waits for) waited behind every telemetry batch
  in flight to the worker and queued for it, up to the worker's lag (bench.fleet: unlock
  p95 825 ms at 5,000 sites against 31 ms idle). The urgent lane's broker window, queue and
  batches hold only the few urgent messages; and the lane runs on a thread and event loop
  of its own (:func:`_run_urgent_lane`, cloud/workers/loop_thread.py says why), with its own
  database connection and Redis client, so the telemetry lane's long synchronous stretches
  (planning and acking a 500-message batch) do not hold it. The
  agent's uplink sends these kinds first for the same reason (edge_agent/sync/uplink.py).
  Nothing relies on order across kinds: MQTT orders only within a topic, and a shared
  subscription already spreads one device's topics over several workers.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import signal
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

from redis.asyncio import Redis

from cloud.broker import CONNECT_TIMEOUT_S, BrokerLink, Delivery, open_broker_link
from cloud.devices.silence import mark_silent_offline
from cloud.errors import BrokerError
from cloud.ingest.decode import Accepted, Rejected, decode
from cloud.ingest.live import LivePublisher, live_messages
from cloud.ingest.plan import BatchPlan, build_acks, plan_batch
from cloud.ingest.writer import WriteResult, write_batch
from cloud.jobs import every, supervise
from cloud.metrics import (
    INGEST_BATCH_SECONDS,
    INGEST_MESSAGES,
    INGEST_READINGS,
    WORKER_JOB_FAILURES,
)
from cloud.pg import RETRYABLE, UNWRITABLE, PgConnection, PgPool, open_pool
from cloud.settings import Settings
from cloud.telemetry.partitions import maintain
from cloud.telemetry.rollup import refresh_each, refresh_pending
from cloud.telemetry.storage import INSTALLED_SQL, TelemetryBackend
from cloud.workers.loop_thread import LoopThread
from protocols.enums import MessageKind
from protocols.ids import new_ulid
from protocols.messages import encode_message
from protocols.topics import ACK_QOS, UPLINK_KINDS, URGENT_KINDS, ingest_filter, topic

log = logging.getLogger(__name__)

RETRY_MAX_DELAY_S = 10.0
#: A failing rollup refresh round waits up to this many refresh intervals before the next.
ROLLUP_MAX_BACKOFF_ROUNDS = 16
#: Net new container objects between two young collections in the worker process (the
#: interpreter's default is 700; see run_ingest).
INGEST_GC_THRESHOLD = 100_000


@dataclass
class IngestStats:
    """Counters of one worker; its lanes run on two threads, so updates take ``lock``."""

    batches: int = 0
    messages: int = 0
    telemetry_rows: int = 0
    dead_letters: int = 0
    acks_sent: int = 0
    #: Messages that failed for an unexpected reason: PUBACKed, not acked (their device
    #: resends them).
    unprocessed: int = 0
    #: Failures each background job survived, by job name.
    job_failures: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def tally(self, job: str, _exc: Exception | None = None) -> None:
        """One more failure of ``job`` (a supervisor's ``on_failure``)."""
        with self.lock:
            self.job_failures[job] = self.job_failures.get(job, 0) + 1

    def handled(self, job: str) -> None:
        """A failure ``job`` handled itself: counted like those its supervisor handles."""
        WORKER_JOB_FAILURES.labels(job).inc()
        self.tally(job)


class Lane:
    """One broker connection's uplink and the batch loop that writes it (a job of its own).

    Everything it holds belongs to the event loop it runs on: the urgent lane runs on a
    thread of its own (:func:`_run_urgent_lane`), the telemetry lane on the worker's loop.
    """

    def __init__(
        self,
        settings: Settings,
        job: str,
        *,
        link: BrokerLink,
        pool: PgPool,
        live: LivePublisher,
        stats: IngestStats,
    ) -> None:
        #: The job's name (logs, ``chargemitra_worker_job_failures_total{task}``).
        self.job = job
        self.link = link
        self._settings = settings
        self._pool = pool
        self._live = live
        self._stats = stats
        #: The batch being processed: kept across a restart of the lane's job, so a batch
        #: taken off the queue is never dropped by the job's own failure.
        self._in_hand: list[Delivery] = []
        #: Consecutive messages that could not be processed (their backoff; 0 when healthy).
        self._unprocessed_streak = 0

    async def run(self) -> None:
        """One batch at a time, each acked after its commit.

        (Overlapping the decoding of the next batch with the write of the current one was
        measured with bench.ingest and gained nothing: both need this process's GIL.)
        """
        while True:
            if not self._in_hand:
                self._in_hand = await self._next_batch()
            await self._process(self._in_hand)
            self._in_hand = []

    async def _next_batch(self) -> list[Delivery]:
        queue = self.link.messages
        loop = asyncio.get_running_loop()
        items = [await queue.get()]
        deadline = loop.time() + self._settings.ingest.flush_interval_s
        while len(items) < self._settings.ingest.batch_max:
            try:
                items.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                async with asyncio.timeout(remaining):
                    items.append(await queue.get())
            except TimeoutError:
                break
        return items

    async def _process(self, items: list[Delivery]) -> None:
        """Process ``items`` as one batch; if that fails for a reason no step already handles
        (a lost connection is retried, data PostgreSQL refuses dead-lettered), retry them
        one at a time so only the culprit is held back (:meth:`_unprocessable`)."""
        try:
            await self._process_batch(items)
        except Exception as exc:
            if len(items) == 1:
                await self._unprocessable(items[0], exc)
                return
            self._stats.handled(self.job)
            log.exception("ingest batch failed; processing its %d messages one by one", len(items))
            for item in items:
                await self._process([item])
            return
        self._unprocessed_streak = 0

    async def _unprocessable(self, item: Delivery, exc: Exception) -> None:
        """A message that fails on its own: release it, leave it unacked, back off.

        Not dead-lettered: the failure is ours or the database's, not provably the message's
        (that is what UNWRITABLE and the contract's refusals are for), and a dead letter is
        acked — the device would delete it. PUBACKed so it holds no slot of the broker's
        window (Receive Maximum) on this connection; its device resends it after its ack
        timeout and it goes through once whatever failed is fixed.
        """
        self._stats.handled(self.job)
        with self._stats.lock:
            self._stats.unprocessed += 1
        INGEST_MESSAGES.labels("unknown", "unprocessed").inc()
        log.error(
            "message on %s not processed, left for its device to resend: %s",
            item.topic,
            exc,
            exc_info=exc if self._unprocessed_streak == 0 else None,  # one traceback a streak
        )
        self.link.ack(item)
        delay = min(0.1 * 2**self._unprocessed_streak, RETRY_MAX_DELAY_S)
        self._unprocessed_streak += 1
        await asyncio.sleep(delay + random.uniform(0, delay))  # noqa: S311 -- jitter

    async def _process_batch(self, items: list[Delivery]) -> None:
        started = time.perf_counter()
        received_at = datetime.now(UTC)
        decoded = [
            r.parsed
            if isinstance(r.parsed, Accepted | Rejected)
            else decode(r.topic, r.payload, received_at)
            for r in items
        ]
        written = await self._store(items, decoded)
        # The batch's acks and PUBACKs in one write, not a send each (BrokerLink.corked).
        with self.link.corked():
            acks_sent = sum(self._send_acks(plan, result) for plan, result in written)
            for item in items:
                self.link.ack(item)
        INGEST_BATCH_SECONDS.observe(time.perf_counter() - started)
        for plan, result in written:
            for kind, count in plan.kind_counts().items():
                INGEST_MESSAGES.labels(kind, "stored").inc(count)
            INGEST_MESSAGES.labels("invalid", "dead_letter").inc(len(plan.dead_letters))
            INGEST_READINGS.inc(result.telemetry_rows)
            await self._live.publish(live_messages(plan, result.sessions))
        with self._stats.lock:
            for plan, result in written:
                self._stats.telemetry_rows += result.telemetry_rows
                self._stats.dead_letters += len(plan.dead_letters)
            self._stats.acks_sent += acks_sent
            self._stats.batches += 1
            self._stats.messages += len(items)

    async def _store(
        self, items: list[Delivery], decoded: list[Accepted | Rejected]
    ) -> list[tuple[BatchPlan, WriteResult]]:
        """Commit the batch; if PostgreSQL refuses its data, find the culprit message by
        writing the batch's messages one at a time and dead-letter only that one, so one
        poison message can neither stop the worker nor hold back the others."""
        plan = plan_batch(decoded)
        try:
            return [(plan, await self._commit(plan))]
        except UNWRITABLE as exc:
            if len(items) > 1:
                log.warning("batch refused by the database, isolating the message: %s", exc)
                written = []
                for item, one in zip(items, decoded, strict=True):
                    written += await self._store([item], [one])
                return written
            item, one = items[0], decoded[0]
            rejected = Rejected(
                topic_name=item.topic,
                device_id=one.topic.device_id if isinstance(one, Accepted) else one.device_id,
                seq=one.message.seq if isinstance(one, Accepted) else one.seq,
                payload=item.payload,
                error_kind="Unstorable",
                reason=f"{type(exc).__name__}: {exc}",
            )
            plan = plan_batch([rejected])
            return [(plan, await self._commit(plan))]

    async def _commit(self, plan: BatchPlan) -> WriteResult:
        delay = 0.1
        failing = False
        while True:
            try:
                async with self._pool.acquire() as conn:
                    result = await write_batch(
                        conn,
                        plan,
                        dead_letter_payload_max=self._settings.ingest.dead_letter_payload_max,
                        offline_grace_s=self._settings.notifications.offline_grace_s,
                    )
            except RETRYABLE as exc:
                if not failing:
                    log.error("ingest batch not committed, retrying: %s", exc)
                    failing = True
                await asyncio.sleep(delay + random.uniform(0, delay))  # noqa: S311 -- jitter
                delay = min(delay * 2, RETRY_MAX_DELAY_S)
                continue
            if failing:
                log.info("ingest batch committed after retrying")
            return result

    def _send_acks(self, plan: BatchPlan, result: WriteResult) -> int:
        """Publish the committed batch's acks (not waited for); how many went out. Without a
        connection the rest are dropped: each device resends what it has no ack for, and is
        acked then."""
        now = datetime.now(UTC)
        sent = 0
        for device_id, ack in sorted(plan.acks.items()):
            first = result.first_downlink_seq[device_id]
            for message in build_acks(device_id, ack, first, now, new_ulid):
                try:
                    self.link.publish_nowait(
                        topic(device_id, MessageKind.ACK), encode_message(message), qos=ACK_QOS
                    )
                except BrokerError as exc:
                    log.warning("acks of a committed batch not sent, devices resend: %s", exc)
                    return sent
                sent += 1
        return sent


class IngestWorker:
    """One ingest worker; build it with :func:`open_ingest_worker`, then ``await run()``."""

    def __init__(
        self,
        settings: Settings,
        pool: PgPool,
        bulk: Lane,
        urgent: tuple[LoopThread[UrgentLane], UrgentLane],
        stats: IngestStats,
    ) -> None:
        self._settings = settings
        self._pool = pool
        self._bulk = bulk
        self._urgent_thread, self._urgent = urgent
        self.stats = stats

    async def run(self) -> None:
        """Ingest until cancelled; beside it keep the telemetry rollup refreshed, the raw
        table partitioned and within its retention, and silent devices marked offline."""
        async with asyncio.TaskGroup() as tasks:
            # One job's failure must never leave the task group: that would stop the
            # process, and a failure that comes back (a bad row, a marker that cannot be
            # refreshed) would then stop every worker started after it too.
            jobs: list[tuple[str, Callable[[], Awaitable[None]]]] = [
                (self._bulk.job, self._bulk.run),
                ("rollup", self._refresh_rollup),
                (
                    "telemetry-maintenance",
                    every(self._settings.ingest.maintenance_s, self._maintain),
                ),
                ("presence", every(self._settings.ingest.presence_sweep_s, self._sweep_silent)),
            ]
            for job, body in jobs:
                tasks.create_task(supervise(job, body, on_failure=self.stats.tally), name=job)
            # The urgent lane's job runs supervised in its own thread; cancelling this waiter
            # stops it (LoopThread.wait).
            self._urgent.go()
            tasks.create_task(self._urgent_thread.wait(), name="ingest-urgent-thread")

    async def _maintain(self) -> None:
        """Partitions ahead and raw retention (cloud.telemetry.partitions); one worker's round
        at a time, the others skip theirs."""
        async with self._pool.acquire() as conn:
            installed = await conn.fetchval(INSTALLED_SQL)
            backend = TelemetryBackend.TIMESCALE if installed else TelemetryBackend.PLAIN
            await maintain(
                conn,
                backend,
                now=datetime.now(UTC),
                retention_days=self._settings.ingest.raw_retention_days,
            )

    async def _sweep_silent(self) -> None:
        """Devices silent past ``device_offline_after_s`` marked offline, their hosts told
        (cloud/devices/silence.py); the other workers' sweeps skip what this one holds."""
        async with self._pool.acquire() as conn:
            gone = await mark_silent_offline(
                conn,
                offline_after_s=self._settings.marketplace.device_offline_after_s,
                offline_grace_s=self._settings.notifications.offline_grace_s,
            )
        if gone:
            log.info(
                "%d silent device(s) marked offline",
                len(gone),
                extra={"devices": gone[:20]},
            )

    async def _refresh_rollup(self) -> None:
        """Every ``rollup_refresh_s``, recompute the rollup buckets new telemetry went into.

        A lost connection (the database restarting) is logged and retried next round: the
        markers stay until a refresh commits, so nothing is missed. Any other refusal falls
        back to :func:`~cloud.telemetry.rollup.refresh_each`: every bucket but the refused
        ones is refreshed; those keep their markers, are logged with their device and bucket,
        counted, and the rounds back off (up to ``ROLLUP_MAX_BACKOFF_ROUNDS`` intervals)
        until they go through.
        """
        interval = self._settings.ingest.rollup_refresh_s
        backend: TelemetryBackend | None = None
        rounds = 1
        while True:
            await asyncio.sleep(interval * rounds * random.uniform(1, 1.5))  # noqa: S311
            try:
                async with self._pool.acquire() as conn:
                    if backend is None:
                        installed = await conn.fetchval(INSTALLED_SQL)
                        backend = (
                            TelemetryBackend.TIMESCALE if installed else TelemetryBackend.PLAIN
                        )
                    refused = await self._refresh_once(conn, backend)
            except RETRYABLE as exc:
                log.warning("rollup refresh failed, retrying next round: %s", exc)
                continue
            rounds = min(rounds * 2, ROLLUP_MAX_BACKOFF_ROUNDS) if refused else 1

    async def _refresh_once(self, conn: PgConnection, backend: TelemetryBackend) -> bool:
        """One refresh round; whether a bucket was refused (and kept pending)."""
        try:
            refreshed = await refresh_pending(conn, backend)
        except RETRYABLE:
            raise
        except Exception as exc:  # noqa: BLE001 -- isolated below, then reported
            self.stats.handled("rollup")
            log.error("rollup refresh refused, refreshing bucket by bucket: %s", exc)
            refreshed, refused = await refresh_each(conn, backend)
            for bad in refused:
                log.error(
                    "rollup bucket %s of device %s refused, kept pending: %s",
                    bad.bucket.isoformat(),
                    bad.device_id,
                    bad.error,
                )
            if refused:
                return True
        if refreshed:
            log.debug("rollup refreshed", extra={"buckets": refreshed})
        return False


@dataclass(frozen=True)
class UrgentLane:
    """What the urgent lane's thread hands back once it is open."""

    #: Its broker link was up within the start-up deadline.
    connected: bool
    #: Let its batch loop start (thread-safe): set by :meth:`IngestWorker.run`.
    go: Callable[[], object]


def _decode_on_arrival(topic_name: str, payload: bytes) -> Accepted | Rejected:
    return decode(topic_name, payload, datetime.now(UTC))


def _lane_link(
    settings: Settings, client_id: str, kinds: frozenset[MessageKind]
) -> AbstractAsyncContextManager[BrokerLink]:
    return open_broker_link(
        settings.mqtt,
        client_id,
        subscriptions=[ingest_filter(kind) for kind in sorted(kinds)],
        manual_ack=True,
        clean_start=False,
        session_expiry_s=settings.ingest.session_expiry_s,
        receive_maximum=settings.ingest.queue_max,
        queue_max=settings.ingest.queue_max,
        # Decoded as the link reads it (cloud/broker.py), so the next batch is parsed while
        # the lane waits on the database for the current one (in bench.ingest a backlog's
        # second batch was decoded only after the first batch's commit, on the critical path).
        parse=_decode_on_arrival,
    )


async def _run_urgent_lane(
    settings: Settings,
    index: int,
    stats: IngestStats,
    deadline: float,
    ready: Callable[[UrgentLane], None],
) -> None:
    """The urgent lane, on its own thread's loop (cloud/workers/loop_thread.py says why):
    its own database connection, Redis client and broker link, opened and closed here."""
    async with AsyncExitStack() as stack:
        pool = await stack.enter_async_context(open_pool(settings.db, max_size=1))
        redis = Redis.from_url(settings.redis.url)
        stack.push_async_callback(redis.aclose)
        client_id = f"{settings.ingest.client_id}-events-{index}"
        link = await stack.enter_async_context(_lane_link(settings, client_id, URGENT_KINDS))
        lane = Lane(
            settings, "ingest-urgent", link=link, pool=pool, live=LivePublisher(redis), stats=stats
        )
        connected = await link.wait_connected(max(0.0, deadline - time.monotonic()))
        go = asyncio.Event()
        loop = asyncio.get_running_loop()
        ready(UrgentLane(connected, partial(loop.call_soon_threadsafe, go.set)))
        await go.wait()
        await supervise(lane.job, lane.run, on_failure=stats.tally)


@asynccontextmanager
async def open_ingest_worker(settings: Settings, *, index: int = 0) -> AsyncIterator[IngestWorker]:
    """Open worker ``index``: its two lanes (broker sessions) and the jobs' database pool."""
    async with AsyncExitStack() as stack:
        stats = IngestStats()
        # A worker handed out is subscribed, when the broker is there: until then its share of
        # the uplink is dropped by the broker (a shared subscription with no member) and only
        # comes back when devices resend. A broker that is down does not hold the start up.
        deadline = time.monotonic() + CONNECT_TIMEOUT_S
        # One connection for the telemetry lane's commits and one for the jobs beside it (a
        # rollup refresh may hold its connection for a while); the urgent lane has its own.
        pool = await stack.enter_async_context(open_pool(settings.db, max_size=2))
        redis = Redis.from_url(settings.redis.url)
        stack.push_async_callback(redis.aclose)
        client_id = f"{settings.ingest.client_id}-{index}"
        link = await stack.enter_async_context(
            _lane_link(settings, client_id, UPLINK_KINDS - URGENT_KINDS)
        )
        bulk = Lane(
            settings, "ingest", link=link, pool=pool, live=LivePublisher(redis), stats=stats
        )
        urgent_thread = LoopThread[UrgentLane](f"ingest-urgent-{index}")
        urgent = await urgent_thread.start(
            partial(_run_urgent_lane, settings, index, stats, deadline)
        )
        stack.push_async_callback(urgent_thread.stop)
        connected = await link.wait_connected(max(0.0, deadline - time.monotonic()))
        if not (connected and urgent.connected):
            log.warning("ingest worker starting before the broker answered; it keeps trying")
        yield IngestWorker(settings, pool, bulk, (urgent_thread, urgent), stats)


async def run_ingest(settings: Settings, *, index: int = 0) -> None:
    """The ``chargemitra-cloud ingest`` process: run until SIGTERM or Ctrl-C."""
    main = asyncio.current_task()
    assert main is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    log.info("ingest worker starting", extra={"worker_index": index})
    async with open_ingest_worker(settings, index=index) as worker:
        # A process-wide choice, so made here (the process that is this worker) and not in
        # open_ingest_worker, which tests run inside the test process (as cloud/app.py's
        # freeze_gc). What start-up built lives as long as the process: frozen out of the
        # collector. A batch holds a few objects per reading until its commit (decoded
        # readings, rows): at the default gen-0 threshold (700) each worker of bench.ingest
        # collected ~600 times over its 125,000 readings, the older generations walking the
        # batch in hand again each time — 1.3-1.9 s of collection, more than the worker's
        # own work. One gen-0 collection per INGEST_GC_THRESHOLD net new objects (a few ms
        # each) still collects cycles.
        gc.freeze()
        gc.set_threshold(INGEST_GC_THRESHOLD, *gc.get_threshold()[1:])
        try:
            await worker.run()
        finally:
            gc.unfreeze()
