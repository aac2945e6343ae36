"""Acceptance: each fault kind is observable by a plain pymodbus client and clears when
switched off. Faults are switched through the real HTTP control interface."""

from __future__ import annotations

import asyncio

import pytest
import serial
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerRTU

from firmware_sim.clock import ManualClock
from firmware_sim.errors import ControlError
from firmware_sim.simsite import SimSite
from protocols.meters import Quantity, load_map
from tests.sim.conftest import TEST_BAUD, Client, control, read_meter

SDM630_UNIT = 2
SDM630 = load_map("sdm630")


async def charging(sim: SimSite, clock: ManualClock, profile: str = "11kw") -> None:
    await control(sim, "POST", "/plug", {"profile": profile})
    await control(sim, "POST", "/relay", {"closed": True})
    clock.advance(60)


async def answers(client: Client, unit: int = SDM630_UNIT) -> bool:
    try:
        response = await client.read_input_registers(0, count=2, device_id=unit)
    except ModbusIOException:
        return False
    return not response.isError()


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_timeout_silences_the_meter_until_cleared(
    sim: SimSite,
    transport: str,
    tcp_client: AsyncModbusTcpClient,
    rtu_client: AsyncModbusSerialClient,
) -> None:
    client: Client = tcp_client if transport == "tcp" else rtu_client
    await control(sim, "POST", "/faults", {"kind": "timeout", "unit": SDM630_UNIT})
    assert not await answers(client)
    assert await answers(client, unit=1)  # only that unit is silent
    await control(sim, "DELETE", "/faults/timeout")
    assert await answers(client)


async def test_crc_fault_sends_frames_with_a_bad_crc(sim: SimSite) -> None:
    await control(sim, "POST", "/faults", {"kind": "crc"})
    request = bytes((SDM630_UNIT, 4, 0, 0, 0, 2))
    request += FramerRTU.compute_CRC(request).to_bytes(2, "big")

    def exchange() -> bytes:
        with serial.Serial(sim.endpoints()["serial"], TEST_BAUD, timeout=2.0) as port:
            port.write(request)
            return bytes(port.read(9))

    def crc_ok(frame: bytes) -> bool:
        return FramerRTU.check_CRC(frame[:-2], int.from_bytes(frame[-2:], "big"))

    bad = await asyncio.to_thread(exchange)
    assert len(bad) == 9
    assert bad[:3] == bytes((SDM630_UNIT, 4, 4))
    assert not crc_ok(bad)
    # pymodbus drops the frame: to its user a CRC error is a missing answer.
    client = AsyncModbusSerialClient(
        sim.endpoints()["serial"], baudrate=TEST_BAUD, timeout=1.0, retries=0
    )
    await client.connect()
    try:
        assert not await answers(client)
        await control(sim, "DELETE", "/faults/crc")
        assert await answers(client)
    finally:
        client.close()
    assert crc_ok(await asyncio.to_thread(exchange))


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_exception_fault_answers_the_configured_code(
    sim: SimSite,
    transport: str,
    tcp_client: AsyncModbusTcpClient,
    rtu_client: AsyncModbusSerialClient,
) -> None:
    client: Client = tcp_client if transport == "tcp" else rtu_client
    await control(sim, "POST", "/faults", {"kind": "exception", "exception_code": 6})
    response = await client.read_input_registers(0, count=2, device_id=SDM630_UNIT)
    assert response.isError()
    assert response.exception_code == 6
    await control(sim, "DELETE", "/faults/exception")
    assert await answers(client)


async def test_frozen_values_stop_changing_until_cleared(
    sim: SimSite, clock: ManualClock, tcp_client: AsyncModbusTcpClient
) -> None:
    await charging(sim, clock)
    await control(sim, "POST", "/faults", {"kind": "frozen", "unit": SDM630_UNIT})
    before = await read_meter(tcp_client, SDM630, SDM630_UNIT)
    clock.advance(300)
    await control(sim, "POST", "/unplug")
    frozen = await read_meter(tcp_client, SDM630, SDM630_UNIT)
    assert frozen == before
    await control(sim, "DELETE", "/faults/frozen")
    live = await read_meter(tcp_client, SDM630, SDM630_UNIT)
    assert live[Quantity.ENERGY_IMPORT_WH] > before[Quantity.ENERGY_IMPORT_WH]
    assert live[Quantity.POWER_W] == 0


async def test_reset_makes_the_energy_register_jump_back(
    sim: SimSite, clock: ManualClock, rtu_client: AsyncModbusSerialClient
) -> None:
    await charging(sim, clock)
    before = (await read_meter(rtu_client, SDM630, SDM630_UNIT))[Quantity.ENERGY_IMPORT_WH]
    assert before == pytest.approx(11000 / 60, rel=1e-5)
    await control(sim, "POST", "/faults", {"kind": "reset", "unit": SDM630_UNIT})
    after = (await read_meter(rtu_client, SDM630, SDM630_UNIT))[Quantity.ENERGY_IMPORT_WH]
    assert after < before
    assert after == 0
    clock.advance(60)
    counting = (await read_meter(rtu_client, SDM630, SDM630_UNIT))[Quantity.ENERGY_IMPORT_WH]
    assert counting == pytest.approx(11000 / 60, rel=1e-5)  # the new meter counts from zero
    await control(sim, "DELETE", "/faults/reset")
    back = (await read_meter(rtu_client, SDM630, SDM630_UNIT))[Quantity.ENERGY_IMPORT_WH]
    assert back == pytest.approx(2 * 11000 / 60, rel=1e-5)


async def test_overcurrent_raises_the_current_until_cleared(
    sim: SimSite, clock: ManualClock, tcp_client: AsyncModbusTcpClient
) -> None:
    await charging(sim, clock, profile="7.4kw")
    normal = (await read_meter(tcp_client, SDM630, SDM630_UNIT))[Quantity.CURRENT_L1_A]
    await control(sim, "POST", "/faults", {"kind": "overcurrent", "overcurrent_ratio": 1.5})
    high = (await read_meter(tcp_client, SDM630, SDM630_UNIT))[Quantity.CURRENT_L1_A]
    assert high == pytest.approx(1.5 * normal, rel=1e-4)
    assert high > 45  # a 32 A circuit drawing 48 A
    await control(sim, "DELETE", "/faults/overcurrent")
    cleared = (await read_meter(tcp_client, SDM630, SDM630_UNIT))[Quantity.CURRENT_L1_A]
    assert cleared == pytest.approx(normal, rel=1e-4)


async def test_flapping_bus_drops_some_frames_and_not_others(
    sim: SimSite, rtu_client: AsyncModbusSerialClient
) -> None:
    await control(sim, "POST", "/faults", {"kind": "flapping", "drop_ratio": 0.5})
    results = [await answers(rtu_client) for _ in range(6)]
    assert True in results
    assert False in results
    await control(sim, "DELETE", "/faults/flapping")
    assert all([await answers(rtu_client) for _ in range(5)])


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_slow_turnaround_outlasts_the_client_timeout(
    sim: SimSite,
    transport: str,
    tcp_client: AsyncModbusTcpClient,
    rtu_client: AsyncModbusSerialClient,
) -> None:
    client: Client = tcp_client if transport == "tcp" else rtu_client
    # The clients time out after 1 s; the slow meter takes 1.5 s.
    await control(sim, "POST", "/faults", {"kind": "slow", "turnaround_s": 1.5})
    assert not await answers(client)
    await control(sim, "DELETE", "/faults/slow")
    await asyncio.sleep(1.5)  # let the late answer arrive and be discarded
    assert await answers(client)


async def test_a_fault_switches_itself_off_after_its_duration(
    sim: SimSite, clock: ManualClock, tcp_client: AsyncModbusTcpClient
) -> None:
    await control(sim, "POST", "/faults", {"kind": "timeout", "for_s": 10})
    assert not await answers(tcp_client)
    clock.advance(9)
    assert not await answers(tcp_client)
    clock.advance(1)
    assert await answers(tcp_client)
    assert (await control(sim, "GET", "/state"))["faults"] == []


async def test_bad_fault_requests_are_refused_with_the_field(sim: SimSite) -> None:
    with pytest.raises(ControlError, match="unknown fault 'melted'") as bad_kind:
        await control(sim, "POST", "/faults", {"kind": "melted"})
    assert bad_kind.value.status == 400
    with pytest.raises(ControlError, match="unit id 42") as bad_unit:
        await control(sim, "POST", "/faults", {"kind": "frozen", "unit": 42})
    assert bad_unit.value.status == 400
    with pytest.raises(ControlError, match="drop ratio"):
        await control(sim, "POST", "/faults", {"kind": "flapping", "drop_ratio": 2})
    with pytest.raises(ControlError, match="no route"):
        await control(sim, "POST", "/explode", {})
    assert (await control(sim, "GET", "/state"))["faults"] == []
