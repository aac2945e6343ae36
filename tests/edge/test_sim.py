"""Acceptance against the simulator (firmware_sim), over Modbus TCP and over serial RTU: a tag
read by the simulated RDM6300 reader and a booking PIN typed on the simulated keypad each
start a session through the one decision path; energy is the simulator's register delta."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.app import Agent
from edge_agent.config import load_config
from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec
from protocols.meters import Quantity, decode_registers, encode_registers, load_map
from protocols.pins import issue_pin

from .agent_rig import control, rows, seed_local_list, wait_until

TAG = "0A1B2C3D4E"
SECRET = b"sim-test-pin-secret-0123"
SDM630 = load_map("sdm630")


def register_wh(sim: SimSite) -> int:
    """What the meter's import register says now (as any Modbus client would decode it)."""
    image = encode_registers(SDM630, sim.site.values(1))
    reg = SDM630.by_quantity[Quantity.ENERGY_IMPORT_WH]
    words = [image[reg.address + i] for i in range(reg.width)]
    return round(decode_registers(SDM630, reg.address, words)[Quantity.ENERGY_IMPORT_WH])


def _config(tmp: Path, sim: SimSite, transport: str, extra: str = "") -> Path:
    ends = sim.endpoints()
    if transport == "tcp":
        host, port = ends["tcp"].rsplit(":", 1)
        link = f'{{ transport = "tcp", host = "{host}", port = {port} }}'
        timing = "timeout_s = 0.3\nframe_gap_s = 0.0"
    else:
        link = f'{{ transport = "rtu", port = "{ends["serial"]}", baud = 9600 }}'
        # 9600 baud: the 76-register answer alone is ~180 ms on the wire.
        timing = "timeout_s = 1.0\nframe_gap_s = 0.005"
    (tmp / "pin.secret").write_bytes(SECRET)
    path = tmp / "agent.toml"
    path.write_text(f"""
device_id = "site-test"

[[meters]]
id = "m1"
model = "sdm630"
unit_id = 1
poll_interval_s = 0.5
link = {link}

[[connectors]]
id = 1
meter = "m1"
max_current_a = 32
relay = {{ driver = "modbus-coil", unit_id = 2, coil = 0, link = {link} }}

[bus]
retries = 0
{timing}

[store]
path = "{tmp / "agent.db"}"

[auth]
pin_secret_file = "{tmp / "pin.secret"}"

[clock]
trust = "always"

[control]
socket_path = "{tmp / "agent.sock"}"

[[inputs.rdm6300]]
port = "{ends["rfid"]}"
connector = 1

[[inputs.hid]]
device = "{ends["keys"]}"
kind = "keypad"
connector = 1
{extra}
""")
    return path


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_rfid_tap_and_keypad_pin_each_charge_and_bill_the_register_delta(
    tmp_path: Path, transport: str
) -> None:
    sim_config = SimConfig(
        meters=(MeterSpec("sdm630", 1),),
        relay_unit=2,
        tcp=("127.0.0.1", 0),
        serial=transport == "rtu",
        baud=9600,
        parity="N",
        turnaround_s=0.005,
        rfid=True,
        keys=True,
        control=None,
        state_path=None,
    )
    sock = tmp_path / "agent.sock"
    db = tmp_path / "agent.db"
    async with SimSite(sim_config) as sim:
        sim.plug("7.4kw")
        seed_local_list(db, (TAG,))
        agent = Agent(load_config(_config(tmp_path, sim, transport)))
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            run = tasks.create_task(agent.run(stop), name="agent")
            try:
                await asyncio.wait_for(agent.ready.wait(), 20)

                async def session_count(n: int) -> bool:
                    return len(rows(db, "SELECT 1 FROM sessions")) >= n

                async def charge_and_stop(n: int) -> tuple[int, int]:
                    async def started() -> bool:
                        return await session_count(n)

                    await wait_until(started, timeout_s=20)
                    start_wh = int(
                        rows(
                            db,
                            "SELECT meter_start_wh FROM sessions ORDER BY started_at DESC LIMIT 1",
                        )[0][0]
                    )

                    async def relay_closed() -> bool:
                        # The session is stored first, then the relay closes (on RTU the
                        # coil write waits for the poll holding the bus).
                        return sim.site.relay_closed

                    await wait_until(relay_closed, timeout_s=10)

                    async def energy_flowed() -> bool:
                        return register_wh(sim) >= start_wh + 3

                    await wait_until(energy_flowed, timeout_s=20)
                    assert (await control(sock, cmd="stop", connector=1))["ok"]
                    assert not sim.site.relay_closed
                    return start_wh, register_wh(sim)

                before = register_wh(sim)
                sim.tap(TAG)
                start1, stop1 = await charge_and_stop(1)
                assert start1 == before

                async def available() -> bool:
                    status = await control(sock, cmd="status")
                    return str(status["connectors"][0]["status"]) == "Available"

                await wait_until(available, timeout_s=20)
                now = datetime.now(UTC)
                booking = issue_pin(
                    SECRET,
                    "site-test",
                    1,
                    now - timedelta(minutes=5),
                    now + timedelta(hours=1),
                    nonce=0,
                )
                sim.keys("99#")  # a wrong PIN first: refused, nothing starts
                sim.keys(booking.pin + "#")
                start2, stop2 = await charge_and_stop(2)
            finally:
                stop.set()
                await run
    sessions = rows(
        db,
        "SELECT credential_kind, meter_start_wh, meter_stop_wh, energy_wh, "
        "stop_reason FROM sessions ORDER BY started_at",
    )
    assert sessions == [
        ("IdTag", start1, stop1, stop1 - start1, "Local"),
        ("Pin", start2, stop2, stop2 - start2, "Local"),
    ]
    decisions = rows(db, "SELECT kind, status FROM decisions ORDER BY id")
    assert decisions == [("IdTag", "Accepted"), ("Pin", "Invalid"), ("Pin", "Accepted")]


@asynccontextmanager
async def sim_agent(tmp: Path, extra: str = "") -> AsyncIterator[tuple[SimSite, Path, Path]]:
    """The simulator over TCP with an EV plugged, and the agent beside it."""
    sim_config = SimConfig(
        meters=(MeterSpec("sdm630", 1),),
        relay_unit=2,
        tcp=("127.0.0.1", 0),
        turnaround_s=0.0,
        rfid=True,
        keys=True,
        control=None,
        state_path=None,
    )
    db = tmp / "agent.db"
    async with SimSite(sim_config) as sim:
        sim.plug("7.4kw")
        seed_local_list(db, (TAG,))
        agent = Agent(load_config(_config(tmp, sim, "tcp", extra)))
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            run = tasks.create_task(agent.run(stop), name="agent")
            try:
                await asyncio.wait_for(agent.ready.wait(), 20)
                yield sim, tmp / "agent.sock", db
            finally:
                stop.set()
                await run


async def _charging(sim: SimSite, sock: Path) -> None:
    assert (await control(sock, cmd="start", connector=1, id_tag=TAG))["ok"]

    async def drawing() -> bool:
        status = await control(sock, cmd="status")
        return str(status["connectors"][0]["status"]) == "Charging"

    await wait_until(drawing, timeout_s=10)
    assert sim.site.relay_closed


def _stop_reason(db: Path) -> str | None:
    found = rows(db, "SELECT stop_reason FROM sessions ORDER BY started_at DESC LIMIT 1")
    return None if not found else found[0][0]


@pytest.mark.integration
async def test_sim_timeout_fault_opens_the_relay_with_meter_failure(tmp_path: Path) -> None:
    async with sim_agent(tmp_path) as (sim, sock, db):
        await _charging(sim, sock)
        sim.set_fault("timeout", unit=1)

        async def stopped() -> bool:
            return _stop_reason(db) is not None

        await wait_until(stopped, timeout_s=15)
        assert not sim.site.relay_closed
        status = await control(sock, cmd="status")
        assert status["meters"][0]["available"] is False
    assert _stop_reason(db) == "MeterFailure"


@pytest.mark.integration
async def test_sim_overcurrent_stops_after_the_hold_time(tmp_path: Path) -> None:
    async with sim_agent(tmp_path, "[limits]\novercurrent_hold_s = 1.0\n") as (sim, sock, db):
        await _charging(sim, sock)
        sim.set_fault("overcurrent", overcurrent_ratio=1.5)  # 48 A on a 32 A connector

        async def stopped() -> bool:
            return _stop_reason(db) is not None

        await wait_until(stopped, timeout_s=15)
        assert not sim.site.relay_closed
    assert _stop_reason(db) == "OverCurrent"


@pytest.mark.integration
async def test_sim_welded_contactor_is_a_stuck_relay_fault(tmp_path: Path) -> None:
    async with sim_agent(tmp_path) as (sim, sock, db):
        await _charging(sim, sock)
        assert (await control(sock, cmd="stop", connector=1))["ok"]
        sim.set_relay(True)  # the contacts stay closed whatever the coil says

        async def faulted() -> bool:
            status = await control(sock, cmd="status")
            return str(status["connectors"][0]["status"]) == "Faulted"

        await wait_until(faulted, timeout_s=10)
        status = await control(sock, cmd="status")
        assert status["connectors"][0]["fault"] == "StuckRelay"
        # A faulted connector refuses new sessions until a technician clears it.
        refused = await control(sock, cmd="start", connector=1, id_tag=TAG)
        assert refused["ok"] is False
        assert refused["status"] == "ConcurrentTx"
    assert _stop_reason(db) == "Local"


@pytest.mark.integration
async def test_sim_meter_answering_exceptions_is_survived_with_the_relay_open(
    tmp_path: Path,
) -> None:
    async with sim_agent(tmp_path) as (sim, sock, _):
        sim.set_fault("exception", unit=1, exception_code=4)

        async def unavailable() -> bool:
            status = await control(sock, cmd="status")
            return status["meters"][0]["available"] is False

        await wait_until(unavailable, timeout_s=10)
        refused = await control(sock, cmd="start", connector=1, id_tag=TAG)
        assert refused["ok"] is False  # accepted, but no meter to bill from: not started
        assert "meter" in refused["detail"]
        assert not sim.site.relay_closed
        status = await control(sock, cmd="status")
        assert status["meters"][0]["errors"]["exception"] >= 1


@pytest.mark.integration
async def test_a_card_held_on_the_simulated_reader_is_one_decision_and_one_report(
    tmp_path: Path,
) -> None:
    async with sim_agent(tmp_path) as (sim, _sock, db):
        sim.tap("FFFFFFFFFF", frames=10)  # held: the RDM6300 repeats its frame
        sim.tap("1122334455")  # then another card: every repeat before it has been read

        async def both_decided() -> bool:
            return len(rows(db, "SELECT 1 FROM decisions")) >= 2

        await wait_until(both_decided, timeout_s=15)
    decisions = rows(db, "SELECT kind, status, outbox_seq FROM decisions ORDER BY id")
    assert [(kind, status) for kind, status, _ in decisions] == [
        ("IdTag", "Unknown"),
        ("IdTag", "Unknown"),
    ]
    reported = {seq for _, _, seq in decisions}
    assert None not in reported
    assert len(rows(db, "SELECT 1 FROM outbox WHERE kind = 'auth'")) == 2
