"""systemd's watchdog is fed by the agent's own health, never by a bare timer.

Here a fake ``NOTIFY_SOCKET`` listener stands in for systemd: a real agent process
(``chargemitra-agent run`` against the simulator) pets the watchdog, sends nothing while it
is frozen by SIGSTOP, and pets again after SIGCONT. The same under a real systemd (the
installed unit restarting the frozen agent) is in tests/deploy/test_edge_install.py. The
unit tests pin what "healthy" means: every meter's poll loop finishing polls, and the store
writer committing what it is given.
"""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

import pytest

from edge_agent.config import BusTiming, MeterSettings, TcpLink
from edge_agent.meters.bus import ModbusBus
from edge_agent.meters.poller import MeterPoller
from edge_agent.safety import SAFETY_TICK_S, TickLateness, safety_loop
from edge_agent.sessions.controller import ConnectorController
from edge_agent.store.writer import StoreWriter
from edge_agent.testing import FakeClock
from edge_agent.watchdog import AgentHealth, Stall, bus_round_s, watchdog_loop
from protocols.messages import MeterReading
from protocols.meters import Quantity
from tests.sync.rig import wait_until

from .agent_rig import wait_for_socket, write_config
from .test_daemon import site, spawn, terminate


def _poller(
    meter_id: str, bus: ModbusBus, clock: FakeClock, interval_s: float = 1.0
) -> MeterPoller:
    settings = MeterSettings(id=meter_id, model="sdm630", link=bus.link, poll_interval_s=interval_s)
    return MeterPoller(settings, bus, monotonic=clock)


def _bus(port: int = 5020) -> ModbusBus:
    return ModbusBus(TcpLink(host="127.0.0.1", port=port), BusTiming(timeout_s=0.5, retries=1))


@contextmanager
def notify_socket(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.setblocking(False)  # noqa: FBT003 -- socket API
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield receiver
    finally:
        receiver.close()


def drain(receiver: socket.socket) -> list[str]:
    """Every datagram queued on the socket now (non-blocking)."""
    got: list[str] = []
    while True:
        try:
            got.append(receiver.recv(4096).decode())
        except BlockingIOError:
            return got


async def test_a_meter_whose_poll_never_finishes_stalls_the_watchdog(tmp_path: Path) -> None:
    clock = FakeClock()
    bus = _bus()
    slow, fast = _poller("m1", bus, clock), _poller("m2", bus, clock, interval_s=5.0)
    writer = StoreWriter(tmp_path / "agent.db", device_id="d", now=lambda: datetime.now(UTC))
    health = AgentHealth([slow, fast], writer, timeout_s=10.0, monotonic=clock)
    # The limit: the watchdog timeout + the meter's interval + the worst round of its bus
    # (both meters on one bus, every block timing out on both tries).
    round_s = bus_round_s([slow, fast])
    assert round_s == pytest.approx((len(slow.blocks) + len(fast.blocks)) * (0.5 + 0.005) * 2)
    assert health.stalls() == []
    clock.now += 10.0 + 1.0 + round_s - 0.001
    assert health.stalls() == []
    clock.now += 0.002
    (stall,) = health.stalls()  # m2's interval is longer: it is not late yet
    assert stall.what == "meter m1's poll loop"
    assert "m1" in str(stall)
    # A poll that finishes -- even one the meter did not answer -- is progress.
    slow.health.last_poll_mono = clock.now
    assert health.stalls() == []
    clock.now += 10.0 + 5.0 + round_s + 1.0
    assert {s.what for s in health.stalls()} == {"meter m1's poll loop", "meter m2's poll loop"}


async def test_poll_marks_progress_even_when_the_meter_does_not_answer() -> None:
    clock = FakeClock()
    # Nothing listens on port 9: the read fails, the poll still finishes.
    async with ModbusBus(TcpLink(host="127.0.0.1", port=9), BusTiming(timeout_s=0.1)) as bus:
        poller = _poller("m1", bus, clock)
        before = poller.health.last_poll_mono
        assert await poller.poll() is None
    assert before is None
    assert poller.health.last_poll_mono == clock.now
    assert poller.health.available is False


async def test_a_store_writer_stuck_in_a_commit_stalls_the_watchdog(tmp_path: Path) -> None:
    release = threading.Event()
    async with StoreWriter(
        tmp_path / "agent.db", device_id="d", now=lambda: datetime.now(UTC)
    ) as writer:
        health = AgentHealth([], writer, timeout_s=10.0)
        now = asyncio.get_running_loop().time  # the loop's clock is time.monotonic
        assert writer.stalled_s(now() + 1000) == 0.0  # idle: nothing waits
        # The writer thread blocks inside a job (as in an fsync that never returns) ...
        blocked = writer.submit_job(lambda _conn: release.wait(60))
        reading = MeterReading(
            meter_id="m1",
            ts=datetime.now(UTC),
            clock_synced=True,
            values={Quantity.ENERGY_IMPORT_WH: 1.0},
        )
        writer.submit(reading)  # ... and a reading waits behind it.
        assert writer.stalled_s(now() + 1000) > 10.0
        assert writer.stalled_s(now()) <= 10.0
        release.set()
        await asyncio.wrap_future(blocked)
        await wait_until(lambda: writer.committed >= 1, 20, "the reading's commit")
        assert writer.stalled_s(now() + 1000) == 0.0
        assert health.stalls() == []


class HungController:
    """A connector controller whose tick never returns until released (a relay write stuck,
    a rule waiting on a lock): the fail-safe rules of every connector stop running."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def on_tick(self) -> None:
        self.entered += 1
        await self.release.wait()


async def test_a_hung_safety_tick_stalls_the_watchdog_though_meters_progress(
    tmp_path: Path,
) -> None:
    clock = FakeClock()
    poller = _poller("m1", _bus(), clock)
    ticks = TickLateness()
    writer = StoreWriter(tmp_path / "agent.db", device_id="d", now=lambda: datetime.now(UTC))
    health = AgentHealth([poller], writer, timeout_s=10.0, ticks=ticks, monotonic=clock)
    limit = 10.0 + SAFETY_TICK_S + bus_round_s([poller])
    clock.now += limit - 0.001
    poller.health.last_poll_mono = clock.now  # the meter keeps polling throughout
    assert health.stalls() == []
    clock.now += 0.002
    poller.health.last_poll_mono = clock.now
    (stall,) = health.stalls()
    assert stall.what == "the safety tick"
    ticks.last_done_mono = clock.now  # a tick finished: healthy again
    assert health.stalls() == []
    assert "the safety tick" in health.summary()
    # The real loop marks a tick done only once every controller's rules ran.
    hung, stop, real = HungController(), asyncio.Event(), TickLateness()
    controllers = cast("list[ConnectorController]", [hung])
    task = asyncio.create_task(safety_loop(controllers, real, stop))
    await wait_until(lambda: hung.entered == 1, 20, "the first tick")
    assert real.last_done_mono is None
    hung.release.set()
    await wait_until(lambda: real.last_done_mono is not None, 20, "a finished tick")
    stop.set()
    await task


async def test_a_store_locked_by_another_process_is_healthy_only_for_locked_max_s(
    tmp_path: Path,
) -> None:
    offset = [0.0]
    path = tmp_path / "agent.db"
    async with StoreWriter(
        path, device_id="d", now=lambda: datetime.now(UTC), busy_timeout_ms=20
    ) as writer:
        health = AgentHealth(
            [],
            writer,
            timeout_s=10.0,
            locked_max_s=60.0,
            monotonic=lambda: time.monotonic() + offset[0],
        )
        other = sqlite3.connect(path, isolation_level=None)  # a technician's sqlite3
        try:
            other.execute("BEGIN IMMEDIATE")
            writer.submit(
                MeterReading(
                    meter_id="m1",
                    ts=datetime.now(UTC),
                    clock_synced=True,
                    values={Quantity.ENERGY_IMPORT_WH: 1.0},
                )
            )
            await wait_until(lambda: writer.locked_s(time.monotonic()) > 0, 20, "the lock")
            # Retrying is progress: the writer is alive and keeps the reading on purpose ...
            assert health.stalls() == []
            # ... but not forever: past locked_max_s systemd is told, by a starved watchdog.
            # (The clock jumps here, so the plain "no commit" rule fires too; only the
            # locked rule is under test.)
            locked_stall = "the store writer (store locked by another process)"
            offset[0] = 59.0
            assert locked_stall not in [s.what for s in health.stalls()]
            offset[0] = 61.0
            (stall,) = [s for s in health.stalls() if s.what == locked_stall]
            assert stall.limit_s == 60.0
            other.execute("COMMIT")
        finally:
            other.close()
        await wait_until(lambda: writer.committed >= 1, 20, "the reading's commit")
        assert writer.locked_s(time.monotonic() + 1000) == 0.0
        offset[0] = 0.0
        assert health.stalls() == []


class ScriptedHealth(AgentHealth):
    """The loop's decisions, with the stalls scripted (the loop, not the rules, under test)."""

    def __init__(self, script: list[list[Stall]]) -> None:
        self.script = script

    def stalls(self) -> list[Stall]:
        return self.script.pop(0) if len(self.script) > 1 else self.script[0]

    def summary(self) -> str:
        return "healthy: scripted"


async def test_the_loop_pets_only_while_healthy_and_says_why_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stuck = [Stall("meter m1's poll loop", 31.0, 30.0)]
    script: list[list[Stall]] = [[], [], stuck, stuck, stuck, [], []]
    health = ScriptedHealth(list(script))
    stop = asyncio.Event()
    with notify_socket(tmp_path, monkeypatch) as receiver:
        task = asyncio.create_task(watchdog_loop(health, 0.001, stop))
        await wait_until(lambda: len(health.script) == 1, 20, "the script to play")
        stop.set()
        await task
        got = drain(receiver)
    first_stall = got.index(
        "STATUS=stalled: meter m1's poll loop made no progress for 31 s (limit 30 s)"
    )
    assert got[:first_stall] == ["WATCHDOG=1", "STATUS=healthy: scripted", "WATCHDOG=1"]
    resumed = got.index("STATUS=healthy: scripted", first_stall)
    # Not one pet while stalled, and the stall's status is sent once, not every beat.
    assert got[first_stall + 1 : resumed] == ["WATCHDOG=1"]
    assert got[resumed - 1] == "WATCHDOG=1"
    assert all(m == "WATCHDOG=1" for m in got[resumed + 1 :])


def _state(pid: int) -> str:
    """The process's state letter from /proc (T: stopped)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rsplit(")", 1)[1].split()[0]


@pytest.mark.integration
async def test_a_frozen_agent_stops_petting_and_resumes_after_sigcont(tmp_path: Path) -> None:
    notify_path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify_path))
    receiver.setblocking(False)  # noqa: FBT003 -- socket API

    async def next_pet() -> list[str]:
        got: list[str] = []
        async with asyncio.timeout(30):
            while "WATCHDOG=1" not in got:
                got += drain(receiver)
                await asyncio.sleep(0.02)
        return got

    try:
        async with site(tmp_path) as (_sim, port):
            config = write_config(tmp_path, port=port, relay_unit=2)
            # systemd asks for WATCHDOG=1 every 0.2 s (WatchdogSec=0.4).
            env = {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "400000"}
            proc = await spawn(config, env)
            try:
                await wait_for_socket(tmp_path / "agent.sock")
                before = await next_pet()
                assert before[0] == "READY=1"
                assert any(m.startswith("STATUS=healthy") for m in before + await next_pet())
                proc.send_signal(19)  # SIGSTOP: the whole process, its event loop too
                await wait_until(lambda: _state(proc.pid) == "T", 10, "the agent to stop")
                drain(receiver)  # what it sent before it froze
                await asyncio.sleep(2.0)  # five watchdog timeouts
                assert drain(receiver) == []  # frozen: not one datagram
                proc.send_signal(18)  # SIGCONT
                await next_pet()
            finally:
                stderr = await terminate(proc)
            assert proc.returncode == 0, stderr.decode()
    finally:
        receiver.close()
