"""The store's writer: one thread that owns a write connection and group-commits readings.

A reading is handed over (:meth:`StoreWriter.submit`) the moment the poller has it; the
writer thread commits it — with whatever else is waiting, in ONE transaction (group commit) —
to the ``readings`` table and the outbox (one ``TelemetryBatch`` per group), brings the open
sessions' last register value up to date, enforces the size cap, and then tells the event
loop (``on_durable``) so the uplink publishes it at once. No timer: a reading waits for the
commit before it, never for a clock tick.

Why a thread: the commit's fsync (``synchronous=FULL``, milliseconds on a Pi's SD card, far
more when it is busy) must not stall the event loop, which runs the relay's 0.5 s safety
tick and the poll schedule. sqlite3 releases the GIL while it writes and syncs.

Other writes that are frequent and not a state change of their own — deleting the rows the
cloud acknowledged — go through :meth:`StoreWriter.submit_job` and share the group's
transaction, each inside its own savepoint so one failing job cannot undo the readings.

A reading is durable when its group's COMMIT returns. A ``kill -9`` can lose only the readings
taken and not yet committed (at most the group being written); a reading the writer reported
durable is in the store with its outbox row, and reaches the cloud exactly once (the cloud
de-duplicates redeliveries by ``seq``). A write lock that another connection holds past
``busy_timeout`` is waited out (the group is kept and tried again; the readings wait in
memory). If the store cannot be written (disk full, I/O error)
the writer stops and :meth:`StoreWriter.failed` raises :class:`~edge_agent.errors.StoreError`
on the event loop, ending the agent (systemd restarts it) rather than dropping readings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

from edge_agent.errors import StoreError
from edge_agent.sessions.machine import Session
from edge_agent.store import readings as reading_store
from edge_agent.store.db import BUSY_TIMEOUT_MS, connect
from protocols.messages import MeterReading

log = logging.getLogger(__name__)

T = TypeVar("T")

_STOP: Final = object()
#: Pause before trying again when the write lock stayed taken past ``busy_timeout``.
BUSY_RETRY_S = 0.05
#: SQLITE_BUSY and SQLITE_LOCKED (primary result codes; the low byte of extended ones).
_BUSY_CODES = (5, 6)


def _busy(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _BUSY_CODES


@dataclass(frozen=True, slots=True)
class Durable:
    """What one group commit made durable (handed to ``on_durable`` on the event loop)."""

    readings: int
    jobs: int
    thinned_readings: int
    thinned_batches: int


@dataclass(frozen=True, slots=True)
class _Job:
    run: Callable[[sqlite3.Connection], Any]
    future: Future[Any]


class StoreWriter:
    """Owns the store's write connection for readings; one thread, group commit.

    ``async with StoreWriter(path, …) as writer:`` on the event loop; :meth:`submit` from the
    loop never blocks. Leaving the context commits what was handed over and stops the thread.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        device_id: str,
        now: Callable[[], datetime],
        open_sessions: Callable[[], Sequence[Session]] = tuple,
        max_bytes: int | None = None,
        on_durable: Callable[[Durable], None] = lambda _d: None,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
    ) -> None:
        self.path = path
        self.device_id = device_id
        self._now = now
        self._open_sessions = open_sessions
        self._max_bytes = max_bytes
        self._on_durable = on_durable
        #: The agent always writes with FULL; NORMAL exists to measure what FULL costs
        #: (bench.edge_e2e). WAL + NORMAL survives a process kill but may lose the last
        #: commits on power loss — after the uplink may have sent them (docs/decisions.md).
        self._synchronous = synchronous
        self._busy_timeout_ms = busy_timeout_ms
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failure: asyncio.Future[None] | None = None
        self._conn: sqlite3.Connection | None = None
        self._count_lock = threading.Lock()
        #: Readings handed over and not yet committed.
        self.waiting = 0
        #: Readings committed so far, and group commits made.
        self.committed = 0
        self.commits = 0
        #: Monotonic times: the thread's last commit (or retry of a locked store), and when
        #: readings last started waiting with none before them (:meth:`stalled_s`).
        self._progress_mono = 0.0
        self._waiting_since_mono = 0.0
        #: Since when the thread has been retrying a store another process has locked (None:
        #: not locked). Retrying counts as progress only for a while (:meth:`locked_s`).
        self._locked_since_mono: float | None = None

    # --- lifetime (event loop) ---------------------------------------------------------------

    async def __aenter__(self) -> StoreWriter:
        self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    def start(self) -> None:
        """Open the write connection (errors raise here, not in the thread) and start."""
        self._loop = asyncio.get_running_loop()
        self._failure = self._loop.create_future()
        self._conn = connect(self.path)
        if self._synchronous != "FULL":
            self._conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        self._conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}")
        self._thread = threading.Thread(target=self._run, name="store-writer", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Commit everything handed over, then stop the thread and close the connection."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._queue.put(_STOP)
        thread.join()

    async def failed(self) -> None:
        """Wait until the writer fails, then raise its :class:`StoreError` (a named task)."""
        if self._failure is None:
            raise StoreError("the store writer is not started")
        await self._failure

    # --- hand-over (event loop; never blocks) -------------------------------------------------

    def submit(self, *readings: MeterReading) -> None:
        """Queue ``readings`` for the next group commit (always together in one)."""
        if self._thread is None:
            raise StoreError("the store writer is not running", path=str(self.path))
        with self._count_lock:
            if self.waiting == 0:
                self._waiting_since_mono = time.monotonic()
            self.waiting += len(readings)
        self._queue.put(readings)

    def stalled_s(self, now_mono: float) -> float:
        """How long readings have waited with no commit (nor retry) from the thread: 0 when
        none wait. A thread stuck in an fsync grows it; an idle or busy-retrying one never
        does (systemd's watchdog reads it, :mod:`edge_agent.watchdog`)."""
        with self._count_lock:
            if self.waiting == 0:
                return 0.0
            return max(0.0, now_mono - max(self._progress_mono, self._waiting_since_mono))

    def locked_s(self, now_mono: float) -> float:
        """How long the thread has been retrying a store another process holds locked (0: it
        is not). :meth:`stalled_s` counts those retries as progress; the watchdog caps how
        long that may last (``[store] locked_max_s``, :mod:`edge_agent.watchdog`)."""
        with self._count_lock:
            since = self._locked_since_mono
        return 0.0 if since is None else max(0.0, now_mono - since)

    def submit_job(self, run: Callable[[sqlite3.Connection], T]) -> Future[T]:
        """Run ``run(conn)`` in the next group's transaction (in a savepoint of its own).

        The future resolves on the writer thread once the group is committed.
        """
        if self._thread is None:
            raise StoreError("the store writer is not running", path=str(self.path))
        future: Future[T] = Future()
        self._queue.put(_Job(run, future))
        return future

    # --- the thread ----------------------------------------------------------------------------

    def _run(self) -> None:
        conn = self._conn
        assert conn is not None
        locked_since: float | None = None
        carried: list[object] = []
        try:
            stopping = False
            while not stopping:
                items = carried or [self._queue.get()]
                # Everything that arrived while the last commit was syncing joins this group.
                while True:
                    try:
                        items.append(self._queue.get_nowait())
                    except queue.Empty:
                        break
                stopping = any(item is _STOP for item in items)
                readings = [r for i in items if isinstance(i, tuple) for r in i]
                jobs = [i for i in items if isinstance(i, _Job)]
                carried = []
                if not (readings or jobs):
                    continue
                try:
                    self._commit(conn, readings, jobs)
                except sqlite3.OperationalError as exc:
                    if not _busy(exc):
                        raise
                    # Another process (a technician's sqlite3, a stuck CLI) holds the write
                    # lock past busy_timeout: keep the group and try again; the readings
                    # wait in memory rather than the agent stopping.
                    if locked_since is None:
                        locked_since = time.monotonic()
                        with self._count_lock:
                            self._locked_since_mono = locked_since
                        log.warning(
                            "store %s is locked by another connection; %d readings wait for it",
                            self.path,
                            len(readings),
                        )
                    carried, stopping = items, False
                    with self._count_lock:
                        self._progress_mono = time.monotonic()  # alive, waiting on purpose
                    time.sleep(BUSY_RETRY_S)
                    continue
                if locked_since is not None:
                    log.info(
                        "store %s writable again after %.1f s",
                        self.path,
                        time.monotonic() - locked_since,
                    )
                    locked_since = None
                    with self._count_lock:
                        self._locked_since_mono = None
        except BaseException as exc:  # noqa: BLE001 -- reported to the event loop, not lost
            self._report_failure(exc)
        finally:
            conn.close()

    def _commit(
        self, conn: sqlite3.Connection, readings: list[MeterReading], jobs: list[_Job]
    ) -> None:
        thinned = reading_store.Thinned(0, 0)
        done: list[tuple[_Job, bool, Any]] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            if readings:
                sessions = [s for s in self._open_sessions() if s.is_open]
                thinned = reading_store.add_batch(
                    conn,
                    readings,
                    device_id=self.device_id,
                    now=self._now(),
                    clock_synced=all(r.clock_synced for r in readings),
                    open_sessions=sessions,
                    max_bytes=self._max_bytes,
                    mono=time.monotonic(),
                )
            for job in jobs:
                conn.execute("SAVEPOINT job")
                try:
                    result = job.run(conn)
                except Exception as exc:  # noqa: BLE001 -- handed to the job's future
                    conn.execute("ROLLBACK TO job")
                    done.append((job, False, exc))
                else:
                    done.append((job, True, result))
                conn.execute("RELEASE job")
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if not (isinstance(exc, sqlite3.OperationalError) and _busy(exc)):
                for job in jobs:
                    job.future.set_exception(exc)
            raise
        with self._count_lock:
            self.waiting -= len(readings)
            self.committed += len(readings)
            self.commits += 1
            self._progress_mono = time.monotonic()
        for job, ok, value in done:
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)
        durable = Durable(len(readings), len(jobs), thinned.readings, thinned.batches)
        self._call(self._on_durable, durable)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            # The loop may close between the check and the call: nobody to tell then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(fn, *args)

    def _report_failure(self, exc: BaseException) -> None:
        log.error("store writer stopped: %s", exc)
        error = exc if isinstance(exc, StoreError) else None
        if error is None:
            error = StoreError(f"cannot write readings to {self.path}: {exc}", path=str(self.path))
            error.__cause__ = exc

        def fail() -> None:
            if self._failure is not None and not self._failure.done():
                self._failure.set_exception(error)

        self._call(fail)
        # Jobs still queued will never run: fail them rather than leave their waiters hanging.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Job):
                item.future.set_exception(error)
