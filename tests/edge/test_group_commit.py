"""Readings are committed as soon as they are taken, group-committed by a writer thread that
owns its own connection, and the event loop never waits on that commit.

* :class:`~edge_agent.store.writer.StoreWriter` against a real SQLite file: what queues while a
  commit waits goes in the next single transaction, with its telemetry outbox row(s); the
  cloud's acks are deleted in the same transaction; a failing job undoes nothing else.
* The agent as a process against the simulator: while another process holds the store's write
  lock (a slow SD card, a technician's ``sqlite3``), the agent keeps polling and answering its
  control socket — the old once-a-second flush ran on the event loop and froze it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.store.db import connect
from edge_agent.store.outbox_lanes import delete_ranges
from edge_agent.store.writer import Durable, StoreWriter
from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec
from protocols.enums import MessageKind
from protocols.messages import MeterReading, TelemetryBatch, parse_message
from protocols.meters import Quantity

from .agent_rig import control, wait_for_socket, wait_until, write_config
from .conftest import T0

AGENT = [sys.executable, "-m", "edge_agent.cli", "run", "--log-level", "WARNING", "--config"]


def _reading(i: int) -> MeterReading:
    return MeterReading(
        meter_id="m1",
        ts=T0 + timedelta(milliseconds=100 * i),
        clock_synced=True,
        values={Quantity.POWER_W: 7400.0 + i, Quantity.ENERGY_IMPORT_WH: 1000.0 + i},
    )


def _telemetry(conn: sqlite3.Connection) -> list[TelemetryBatch]:
    rows = conn.execute("SELECT payload FROM outbox WHERE kind = ? ORDER BY seq", ("telemetry",))
    batches = [parse_message(MessageKind.TELEMETRY, bytes(r[0])) for r in rows]
    return [b for b in batches if isinstance(b, TelemetryBatch)]


def _writer(db_path: Path, durable: list[Durable]) -> StoreWriter:
    return StoreWriter(
        db_path, device_id="site-test", now=lambda: datetime.now(UTC), on_durable=durable.append
    )


async def _until(predicate: object, timeout_s: float = 10.0) -> None:
    assert callable(predicate)
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.01)


async def test_readings_waiting_behind_a_commit_go_in_the_next_single_transaction(
    db_path: Path, conn: sqlite3.Connection
) -> None:
    durable: list[Durable] = []
    async with _writer(db_path, durable) as writer:
        # Another connection holds the write lock: the writer's first group waits for it
        # (busy_timeout) while the other 49 readings queue up behind it.
        conn.execute("BEGIN IMMEDIATE")
        for i in range(50):
            writer.submit(_reading(i))
        await asyncio.sleep(0.3)
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 0
        conn.execute("COMMIT")
        await _until(lambda: writer.committed == 50)
        assert writer.commits <= 2  # no commit per reading, no timer: one group per wait
        assert writer.waiting == 0
    await asyncio.sleep(0)
    assert sum(d.readings for d in durable) == 50
    stored = [r[0] for r in conn.execute("SELECT ts FROM readings ORDER BY id")]
    assert stored == [_reading(i).ts.isoformat() for i in range(50)]
    # Every reading is queued for the uplink exactly once, in the same transactions.
    queued = Counter(r.ts for batch in _telemetry(conn) for r in batch.readings)
    assert queued == Counter(_reading(i).ts for i in range(50))
    assert len(_telemetry(conn)) == writer.commits


async def test_a_reading_is_durable_without_waiting_for_anything_else(
    db_path: Path, conn: sqlite3.Connection
) -> None:
    """One reading alone is committed (and reported durable) — no batch to fill, no timer."""
    durable: list[Durable] = []
    async with _writer(db_path, durable) as writer:
        writer.submit(_reading(0))
        await _until(lambda: bool(durable))
        assert durable == [Durable(readings=1, jobs=0, thinned_readings=0, thinned_batches=0)]
        # Visible to another connection (the sync task's) at once.
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 1
        assert len(_telemetry(conn)) == 1


async def test_acknowledged_rows_are_deleted_by_the_writer_and_a_failing_job_undoes_nothing(
    db_path: Path, conn: sqlite3.Connection
) -> None:
    durable: list[Durable] = []
    async with _writer(db_path, durable) as writer:
        for i in range(3):
            writer.submit(_reading(i))
        await _until(lambda: writer.committed == 3)
        seqs = [r[0] for r in conn.execute("SELECT seq FROM outbox ORDER BY seq")]
        assert seqs

        def broken(c: sqlite3.Connection) -> None:
            c.execute("DELETE FROM readings")
            raise RuntimeError("a job that fails half-way")

        conn.execute("BEGIN IMMEDIATE")  # make the three land in one group
        failing = writer.submit_job(broken)
        writer.submit(_reading(3))
        deleting = writer.submit_job(lambda c: delete_ranges(c, [(seqs[0], seqs[-1])]))
        conn.execute("COMMIT")
        assert await asyncio.wrap_future(deleting) == len(seqs)
        with pytest.raises(RuntimeError, match="half-way"):
            await asyncio.wrap_future(failing)
        await _until(lambda: writer.committed == 4)
    # The failed job's delete was rolled back to its savepoint; the reading beside it stayed.
    assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 4
    remaining = [r[0] for r in conn.execute("SELECT seq FROM outbox")]
    assert remaining
    assert min(remaining) > seqs[-1]


async def test_a_lock_held_past_the_busy_timeout_is_waited_out_not_fatal(
    db_path: Path, conn: sqlite3.Connection
) -> None:
    """A technician's sqlite3 holding the write lock longer than busy_timeout: the writer
    keeps the readings and commits them once the lock is free; it does not stop."""
    writer = StoreWriter(
        db_path, device_id="site-test", now=lambda: datetime.now(UTC), busy_timeout_ms=50
    )
    async with writer:
        failed = asyncio.ensure_future(writer.failed())
        conn.execute("BEGIN IMMEDIATE")
        for i in range(5):
            writer.submit(_reading(i))
            await asyncio.sleep(0.1)  # several busy timeouts while the lock is held
        conn.execute("COMMIT")
        await _until(lambda: writer.committed == 5)
        assert not failed.done()
        failed.cancel()
    assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 5


async def test_closing_the_writer_commits_what_was_handed_over(db_path: Path) -> None:
    writer = _writer(db_path, [])
    async with writer:
        for i in range(200):
            writer.submit(_reading(i))
    check = connect(db_path)
    try:
        assert check.execute("SELECT count(*) FROM readings").fetchone()[0] == 200
    finally:
        check.close()


@pytest.mark.integration
async def test_the_agent_keeps_polling_and_answering_while_the_store_is_locked(
    tmp_path: Path,
) -> None:
    """A store that cannot be written for seconds stalls only the writer thread: the event
    loop (safety tick, polls, control socket) carries on, and the readings taken meanwhile
    are committed once the store is free again."""
    config = SimConfig(
        meters=(MeterSpec("sdm630", 1),),
        relay_unit=2,
        tcp=("127.0.0.1", 0),
        turnaround_s=0.0,
        control=None,
        state_path=None,
    )
    async with SimSite(config) as sim:
        port = int(sim.endpoints()["tcp"].rsplit(":", 1)[1])
        path = write_config(tmp_path, port=port, poll_interval_s=0.05, relay_unit=2)
        sock = tmp_path / "agent.sock"
        proc = await asyncio.create_subprocess_exec(
            *AGENT,
            str(path),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await wait_for_socket(sock)
            # The lock is taken from a thread of this process: the simulator (on this event
            # loop) must keep answering the agent's polls meanwhile.
            locked, release = threading.Event(), threading.Event()

            def hold_lock() -> None:
                blocker = sqlite3.connect(tmp_path / "agent.db", isolation_level=None)
                blocker.execute("PRAGMA busy_timeout = 5000")
                blocker.execute("BEGIN IMMEDIATE")
                locked.set()
                release.wait(10)
                blocker.execute("COMMIT")
                blocker.close()

            holder = threading.Thread(target=hold_lock)
            holder.start()
            try:
                await asyncio.to_thread(locked.wait, 10)
                before = await control(sock, cmd="status")
                # Longer than the old 1 s flush period: an event loop waiting on the store
                # would be stuck in SQLite's busy handler by now.
                await asyncio.sleep(1.5)
                async with asyncio.timeout(2.0):
                    during = await control(sock, cmd="status")
            finally:
                release.set()
                await asyncio.to_thread(holder.join)
            waiting = during["store_writer"]["waiting"]
            assert waiting > before["store_writer"]["waiting"]  # polls went on, handed over
            assert during["safety_tick"]["ticks"] > before["safety_tick"]["ticks"]
            committed_during = during["store_writer"]["committed"]

            async def caught_up() -> bool:
                now = await control(sock, cmd="status")
                return bool(now["store_writer"]["committed"] >= committed_during + waiting)

            await wait_until(caught_up, timeout_s=10, every_s=0.05)
        finally:
            if proc.returncode is None:
                proc.terminate()
            _, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()
        check = sqlite3.connect(tmp_path / "agent.db")
        ts = [r[0] for r in check.execute("SELECT ts FROM readings")]
        check.close()
        assert len(ts) == len(set(ts))  # nothing stored twice
