"""The whole agent in-process against a real Modbus TCP peer (meter + coil relay): a local-list
tag starts a session through the control socket, the relay closes, energy is the register
delta, the outbox holds the events in order; fail-safes reach the real relay."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from edge_agent.app import Agent
from edge_agent.config import load_config
from edge_agent.testing import ChargingMeter, FakeRelay, ModbusPeer
from protocols.enums import MessageKind, SessionEventType, StopReason
from protocols.messages import SessionEvent, parse_message

from .agent_rig import TAG, control, rows, seed_local_list, wait_until, write_config


class Rig:
    def __init__(self, tmp: Path, peer: ModbusPeer, meter: ChargingMeter, agent: Agent) -> None:
        self.tmp = tmp
        self.peer = peer
        self.meter = meter
        self.agent = agent
        self.sock = tmp / "agent.sock"
        self.db = tmp / "agent.db"


@asynccontextmanager
async def running_agent(tmp: Path, **config: Any) -> AsyncIterator[Rig]:
    async with ModbusPeer({1: ("sdm630", {})}, coil_units=(9,)) as peer:
        meter = ChargingMeter(peer, meter_unit=1, relay_unit=9, tick_s=0.2)
        path = write_config(tmp, port=peer.port, **config)
        seed_local_list(tmp / "agent.db")
        agent = Agent(load_config(path))
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            physics = tasks.create_task(meter.run(), name="meter-physics")
            run = tasks.create_task(agent.run(stop), name="agent")
            await asyncio.wait_for(agent.ready.wait(), 10)
            try:
                yield Rig(tmp, peer, meter, agent)
            finally:
                stop.set()
                await run
                physics.cancel()  # the physics loop runs for ever


def _session_events(db: Path) -> list[SessionEvent]:
    events = []
    for (payload,) in rows(db, "SELECT payload FROM outbox WHERE kind = 'session' ORDER BY seq"):
        event = parse_message(MessageKind.SESSION, payload)
        assert isinstance(event, SessionEvent)
        events.append(event)
    return events


async def test_local_list_tag_charges_and_bills_the_register_delta(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as rig:
        start_wh = rig.meter.energy_wh
        answer = await control(rig.sock, cmd="start", connector=1, id_tag=TAG)
        assert answer["ok"], answer
        assert answer["status"] == "Accepted"
        assert rig.peer.coil(9) is True

        async def charged() -> bool:
            return rig.meter.energy_wh >= start_wh + 5

        await wait_until(charged)
        status = await control(rig.sock, cmd="status")
        assert status["connectors"][0]["status"] == "Charging"
        assert (await control(rig.sock, cmd="stop", connector=1))["ok"]
        assert rig.peer.coil(9) is False
        stop_wh = rig.meter.energy_wh
        # A second tag swipe on the busy connector while Finishing is refused.
        again = await control(rig.sock, cmd="start", connector=1, id_tag=TAG)
        assert again["status"] == "ConcurrentTx"
    (row,) = rows(
        rig.db, "SELECT meter_start_wh, meter_stop_wh, energy_wh, stop_reason FROM sessions"
    )
    assert row == (start_wh, stop_wh, stop_wh - start_wh, "Local")
    events = _session_events(rig.db)
    assert [e.event for e in events] == [SessionEventType.STARTED, SessionEventType.STOPPED]
    assert events[1].seq > events[0].seq
    all_seqs = [s for (s,) in rows(rig.db, "SELECT seq FROM outbox ORDER BY seq")]
    assert all_seqs == list(range(1, len(all_seqs) + 1))


async def test_unknown_tag_is_refused_and_the_relay_stays_open(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as rig:
        answer = await control(rig.sock, cmd="start", connector=1, id_tag="DEADBEEF")
        assert answer == {
            "ok": False,
            "status": "Unknown",
            "reason": "not in the local list or the cache",
        }
        assert rig.peer.coil(9) is False
        bad = await control(rig.sock, cmd="start", connector=7, id_tag=TAG)
        assert bad["ok"] is False


async def test_silenced_meter_opens_the_relay_and_stops_with_meter_failure(
    tmp_path: Path,
) -> None:
    async with running_agent(tmp_path) as rig:
        assert (await control(rig.sock, cmd="start", connector=1, id_tag=TAG))["ok"]
        rig.peer.silence(1)

        async def stopped() -> bool:
            return bool(rows(rig.db, "SELECT 1 FROM sessions WHERE stopped_at IS NOT NULL"))

        await wait_until(stopped)
        assert rig.peer.coil(9) is False
        status = await control(rig.sock, cmd="status")
        assert status["meters"][0]["available"] is False
    events = _session_events(rig.db)
    assert events[-1].stop_reason is StopReason.METER_FAILURE


async def test_relay_test_and_status_over_the_control_socket(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as rig:
        answer = await control(rig.sock, cmd="relay_test", connector=1)
        assert answer == {"ok": True, "closed_read": True, "open_read": False}
        assert rig.peer.coil(9) is False
        assert (await control(rig.sock, cmd="nonsense", connector=1))["ok"] is False
        status = await control(rig.sock, cmd="status")
        assert status["device_id"] == "site-test"
        assert status["meters"][0]["available"] is True


async def test_control_socket_survives_junk(tmp_path: Path) -> None:
    async with running_agent(tmp_path) as rig:
        reader, writer = await asyncio.open_unix_connection(str(rig.sock))
        writer.write(b"not json\n[1, 2]\n")
        await writer.drain()
        first = await reader.readline()
        second = await reader.readline()
        writer.close()
        await writer.wait_closed()
        assert b'"ok": false' in first
        assert b'"ok": false' in second
        assert (await control(rig.sock, cmd="status"))["ok"] is True


async def test_unreachable_serial_port_backs_off_and_keeps_the_relay_open(
    tmp_path: Path,
) -> None:
    config = tmp_path / "agent.toml"
    config.write_text(f"""
device_id = "site-test"
[[meters]]
id = "m1"
model = "sdm120"
link = {{ transport = "rtu", port = "{tmp_path / "ttyGONE"}" }}
[[connectors]]
id = 1
meter = "m1"
max_current_a = 16
relay = {{ driver = "fake" }}
[store]
path = "{tmp_path / "agent.db"}"
[clock]
trust = "always"
[control]
socket_path = "{tmp_path / "agent.sock"}"
""")
    seed_local_list(tmp_path / "agent.db")
    agent = Agent(load_config(config))
    stop = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        run = tasks.create_task(agent.run(stop), name="agent")
        await asyncio.wait_for(agent.ready.wait(), 10)
        await asyncio.sleep(1.5)
        status = await control(tmp_path / "agent.sock", cmd="status")
        refused = await control(tmp_path / "agent.sock", cmd="start", connector=1, id_tag=TAG)
        stop.set()
        await run
    meter = status["meters"][0]
    assert meter["available"] is False
    assert "cannot open" in meter["last_error"]
    # Polled at its interval with reconnect back-off: a few failures, no busy loop.
    assert 1 <= meter["errors"]["disconnected"] <= 3
    assert refused["ok"] is False
    relay = agent.runtime.controllers[1].relay
    assert isinstance(relay, FakeRelay)
    assert True not in relay.history
