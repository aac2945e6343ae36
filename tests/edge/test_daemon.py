"""The daemon as a process: `chargemitra-agent run` against the simulator over Modbus TCP.

* SIGTERM stops it cleanly: relay opened, the open session ended with Reboot, systemd told
  READY, WATCHDOG and STOPPING through NOTIFY_SOCKET.
* kill -9 at 30 random moments of a charging scenario: afterwards the store is intact, no
  session is lost or duplicated, every one is closed by the rules, the outbox seq has no gap
  or repeat, and the energy billed adds up to exactly what the meter counted.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import sqlite3
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec
from protocols.enums import MessageKind, SessionEventType
from protocols.messages import SessionEvent, parse_message
from protocols.meters import Quantity, decode_registers, encode_registers, load_map

from .agent_rig import TAG, control, rows, seed_local_list, wait_for_socket, write_config

SDM630 = load_map("sdm630")
AGENT = [sys.executable, "-m", "edge_agent.cli", "run", "--log-level", "WARNING", "--config"]


def _relay_closed(sim: SimSite) -> bool:
    # A function, so mypy does not narrow the property across the awaits that change it.
    return sim.site.relay_closed


def register_wh(sim: SimSite) -> int:
    """What the simulated meter's import register says (as the agent decodes it)."""
    image = encode_registers(SDM630, sim.site.values(1))
    reg = SDM630.by_quantity[Quantity.ENERGY_IMPORT_WH]
    words = [image[reg.address + i] for i in range(reg.width)]
    return round(decode_registers(SDM630, reg.address, words)[Quantity.ENERGY_IMPORT_WH])


@asynccontextmanager
async def site(tmp: Path) -> AsyncIterator[tuple[SimSite, int]]:
    """The simulator (firmware_sim) on Modbus TCP: an SDM630, a coil relay (unit 2) and a
    7.4 kW EV plugged in; yields it and its TCP port."""
    config = SimConfig(
        meters=(MeterSpec("sdm630", 1),),
        relay_unit=2,
        tcp=("127.0.0.1", 0),
        turnaround_s=0.0,
        control=None,
        state_path=None,
    )
    async with SimSite(config) as sim:
        sim.plug("7.4kw", capacity_wh=400_000.0)  # a big battery: never full in the test
        yield sim, int(sim.endpoints()["tcp"].rsplit(":", 1)[1])


async def spawn(config: Path, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        *AGENT,
        str(config),
        env={**os.environ, **(env or {})},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


async def terminate(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> bytes:
    if proc.returncode is None:
        proc.send_signal(sig)
    try:
        async with asyncio.timeout(20):
            _, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return stderr


def _events(db: Path) -> list[SessionEvent]:
    result = []
    for (payload,) in rows(db, "SELECT payload FROM outbox WHERE kind = 'session' ORDER BY seq"):
        event = parse_message(MessageKind.SESSION, payload)
        assert isinstance(event, SessionEvent)
        result.append(event)
    return result


@pytest.mark.integration
async def test_sigterm_opens_the_relay_ends_the_session_and_notifies_systemd(
    tmp_path: Path,
) -> None:
    notify_path = tmp_path / "notify.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(notify_path))
    receiver.setblocking(False)  # noqa: FBT003 -- socket API
    messages: list[str] = []

    async def listen() -> None:
        loop = asyncio.get_running_loop()
        while True:
            messages.append((await loop.sock_recv(receiver, 4096)).decode())

    try:
        async with site(tmp_path) as (sim, port), asyncio.TaskGroup() as tasks:
            listener = tasks.create_task(listen(), name="notify-listener")
            config = write_config(tmp_path, port=port, relay_unit=2)
            seed_local_list(tmp_path / "agent.db")
            proc = await spawn(
                config, {"NOTIFY_SOCKET": str(notify_path), "WATCHDOG_USEC": "200000"}
            )
            try:
                await wait_for_socket(tmp_path / "agent.sock")
                assert (
                    await control(tmp_path / "agent.sock", cmd="start", connector=1, id_tag=TAG)
                )["ok"]
                assert _relay_closed(sim)
                await asyncio.sleep(1.5)
            finally:
                stderr = await terminate(proc)
            await asyncio.sleep(0.1)  # the last datagram
            listener.cancel()
            assert proc.returncode == 0, stderr.decode()
            assert not _relay_closed(sim)
            final_wh = register_wh(sim)
    finally:
        receiver.close()
    assert messages[0] == "READY=1"
    assert "WATCHDOG=1" in messages
    assert messages[-1] == "STOPPING=1"
    db = tmp_path / "agent.db"
    ((reason, stop_wh, energy),) = rows(
        db, "SELECT stop_reason, meter_stop_wh, energy_wh FROM sessions"
    )
    assert reason == "Reboot"
    assert stop_wh == final_wh
    assert energy > 0


@pytest.mark.integration
async def test_bad_config_exits_2_and_names_the_field(tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text('device_id = "x"\nmeters = []\n')
    proc = await spawn(config)
    stderr = await terminate(proc, 0)
    assert proc.returncode == 2
    assert b"meters" in stderr
    assert b"connectors" in stderr


@pytest.mark.integration
@pytest.mark.fault
@pytest.mark.slow
async def test_kill_9_at_30_random_moments_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(20260301)
    sock = tmp_path / "agent.sock"
    db = tmp_path / "agent.db"
    acknowledged: set[str] = set()
    async with site(tmp_path) as (sim, port):
        config = write_config(tmp_path, port=port, poll_interval_s=0.2, relay_unit=2)
        seed_local_list(db)
        initial_wh = register_wh(sim)
        for _ in range(30):
            proc = await spawn(config)
            try:
                await wait_for_socket(sock)
                status = await control(sock, cmd="status")
                if status["connectors"][0]["status"] == "Available":
                    answer = await control(sock, cmd="start", connector=1, id_tag=TAG)
                    if answer.get("session_id"):
                        acknowledged.add(answer["session_id"])
                moment = rng.uniform(0.0, 1.5)
                await asyncio.sleep(moment)
                if rng.random() < 0.2:
                    # Sometimes the driver stops it just before the crash.
                    await control(sock, cmd="stop", connector=1)
                    await asyncio.sleep(rng.uniform(0.0, 0.3))
            finally:
                await terminate(proc, signal.SIGKILL)
        # A last clean run: recovery closes whatever the last kill left open.
        proc = await spawn(config)
        try:
            await wait_for_socket(sock)
        finally:
            stderr = await terminate(proc)
        assert proc.returncode == 0, stderr.decode()
        assert not _relay_closed(sim)
        final_wh = register_wh(sim)

    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()
    sessions = rows(
        db,
        "SELECT session_id, meter_start_wh, meter_stop_wh, energy_wh, "
        "stop_reason, stopped_at FROM sessions",
    )
    ids = [s[0] for s in sessions]
    assert len(ids) == len(set(ids))
    assert acknowledged <= set(ids)  # no acknowledged session lost
    assert len(sessions) >= 10
    for _, start, stop, energy, reason, stopped_at in sessions:
        assert stopped_at is not None
        assert reason in {"Local", "PowerLoss", "Reboot"}
        assert energy == stop - start >= 0
    # Every Wh the meter counted flowed while a session held the relay closed.
    assert sum(s[3] for s in sessions) == final_wh - initial_wh
    assert final_wh > initial_wh
    seqs = [s for (s,) in rows(db, "SELECT seq FROM outbox ORDER BY seq")]
    assert seqs == list(range(1, len(seqs) + 1))
    events = _events(db)
    by_session: dict[str, list[SessionEvent]] = {}
    for event in events:
        by_session.setdefault(event.session_id, []).append(event)
    assert set(by_session) == set(ids)
    for session_events in by_session.values():
        assert [e.event_seq for e in session_events] == list(range(1, len(session_events) + 1))
        assert session_events[0].event is SessionEventType.STARTED
        assert session_events[-1].event is SessionEventType.STOPPED
        assert [e.event for e in session_events].count(SessionEventType.STOPPED) == 1


@pytest.mark.integration
@pytest.mark.fault
async def test_resume_after_kill_9_keeps_the_session_and_bills_all_of_it(
    tmp_path: Path,
) -> None:
    sock = tmp_path / "agent.sock"
    db = tmp_path / "agent.db"
    async with site(tmp_path) as (sim, port):
        config = write_config(tmp_path, port=port, on_restart="resume", relay_unit=2)
        seed_local_list(db)
        start_wh = register_wh(sim)
        proc = await spawn(config)
        try:
            await wait_for_socket(sock)
            answer = await control(sock, cmd="start", connector=1, id_tag=TAG)
            assert answer["ok"], answer
            await asyncio.sleep(1.0)
        finally:
            await terminate(proc, signal.SIGKILL)
        assert _relay_closed(sim)  # nobody opened it: the agent died
        proc = await spawn(config)
        try:
            await wait_for_socket(sock)
            status = await control(sock, cmd="status")
            assert status["connectors"][0]["session_id"] == answer["session_id"]
            assert status["connectors"][0]["relay_closed"] is True
            await asyncio.sleep(1.0)
            assert (await control(sock, cmd="stop", connector=1))["ok"]
        finally:
            stderr = await terminate(proc)
        assert proc.returncode == 0, stderr.decode()
        stop_wh = register_wh(sim)
    ((session_id, energy, reason),) = rows(
        db, "SELECT session_id, energy_wh, stop_reason FROM sessions"
    )
    assert session_id == answer["session_id"]
    assert reason == "Local"
    assert energy == stop_wh - start_wh > 0
