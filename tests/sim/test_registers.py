"""Acceptance: a plain pymodbus client reads every quantity of every map, over Modbus TCP
and over Modbus RTU, and gets the physical values the control interface reports."""

from __future__ import annotations

import asyncio
import math

import pytest
import serial
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.constants import ExcCodes
from pymodbus.exceptions import ModbusIOException
from pymodbus.framer import FramerRTU

from firmware_sim.clock import ManualClock
from firmware_sim.simsite import SimSite
from protocols.meters import DataType, Quantity, RegisterMap, load_map
from tests.sim.conftest import ALL_METERS, RELAY_UNIT, Client, control, read_meter


def tolerance(register_map: RegisterMap, quantity: Quantity, value: float) -> float:
    """What encoding may cost: float32 rounding, or half a step of a scaled integer."""
    reg = register_map.by_quantity[quantity]
    if reg.data_type is DataType.FLOAT32:
        return abs(value) * 1e-6 + 1e-9
    return abs(reg.scale) / 2 + 1e-9


async def charging_site(sim: SimSite, clock: ManualClock) -> None:
    await control(sim, "POST", "/plug", {"profile": "22kw"})
    await control(sim, "POST", "/relay", {"closed": True})
    clock.advance(123.4)


async def check_all_maps(sim: SimSite, client: Client) -> None:
    state = await control(sim, "GET", "/state")
    for spec in ALL_METERS:
        register_map = load_map(spec.model)
        reported = state["meters"][str(spec.unit)]["values"]
        read = await read_meter(client, register_map, spec.unit)
        assert set(read) == {r.quantity for r in register_map.registers}, spec.model
        for quantity, value in read.items():
            expected = reported[quantity.value]
            assert math.isclose(
                value, expected, rel_tol=0, abs_tol=tolerance(register_map, quantity, expected)
            ), (spec.model, quantity, value, expected)
        assert read[Quantity.POWER_W] > 0, spec.model  # a live circuit, not zeros


async def test_every_quantity_of_every_map_over_tcp(
    sim: SimSite, clock: ManualClock, tcp_client: AsyncModbusTcpClient
) -> None:
    await charging_site(sim, clock)
    await check_all_maps(sim, tcp_client)


async def test_every_quantity_of_every_map_over_rtu(
    sim: SimSite, clock: ManualClock, rtu_client: AsyncModbusSerialClient
) -> None:
    await charging_site(sim, clock)
    await check_all_maps(sim, rtu_client)


async def test_a_single_phase_meter_sees_l1_of_a_three_phase_ev(
    sim: SimSite, clock: ManualClock, tcp_client: AsyncModbusTcpClient
) -> None:
    await charging_site(sim, clock)
    sdm120 = await read_meter(tcp_client, load_map("sdm120"), 1)
    sdm630 = await read_meter(tcp_client, load_map("sdm630"), 2)
    assert sdm120[Quantity.POWER_W] == pytest.approx(22000 / 3, rel=1e-6)
    assert sdm630[Quantity.POWER_W] == pytest.approx(22000, rel=1e-6)
    assert sdm630[Quantity.ENERGY_IMPORT_WH] == pytest.approx(
        3 * sdm120[Quantity.ENERGY_IMPORT_WH], rel=1e-5
    )


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_unknown_register_is_exception_2_and_wrong_function_is_exception_1(
    transport: str,
    tcp_client: AsyncModbusTcpClient,
    rtu_client: AsyncModbusSerialClient,
) -> None:
    client: Client = tcp_client if transport == "tcp" else rtu_client
    # sdm630 (unit 2): input registers 0..87 readable, 88.. not; holding registers refused.
    outside = await client.read_input_registers(88, count=2, device_id=2)
    assert outside.isError()
    assert outside.exception_code == 2
    straddling = await client.read_input_registers(80, count=10, device_id=2)
    assert straddling.exception_code == 2
    wrong_function = await client.read_holding_registers(0, count=2, device_id=2)
    assert wrong_function.exception_code == 1
    # abb_b23 (unit 4) is the other way round: holding registers only.
    assert (await client.read_input_registers(0x5000, count=4, device_id=4)).exception_code == 1
    assert (await client.read_holding_registers(0x5000, count=4, device_id=4)).isError() is False


def test_a_read_of_more_than_125_registers_is_exception_3(sim: SimSite) -> None:
    # pymodbus's client refuses to send such a request, so ask the device directly.
    device = sim.bus.devices[2]
    assert device.getValues(4, 0, 126) == ExcCodes.ILLEGAL_VALUE
    assert device.getValues(4, 0, 0) == ExcCodes.ILLEGAL_VALUE
    assert device.getValues(4, 0, 2) != ExcCodes.ILLEGAL_VALUE


async def test_unknown_unit_is_silent_on_rtu_and_gateway_error_on_tcp(
    tcp_client: AsyncModbusTcpClient, rtu_client: AsyncModbusSerialClient
) -> None:
    with pytest.raises(ModbusIOException):
        await rtu_client.read_input_registers(0, count=2, device_id=77)
    response = await tcp_client.read_input_registers(0, count=2, device_id=77)
    assert response.exception_code == 0x0B
    # The bus is fine afterwards.
    assert not (await rtu_client.read_input_registers(0, count=2, device_id=1)).isError()


async def test_relay_coil_gates_the_load(
    sim: SimSite, clock: ManualClock, rtu_client: AsyncModbusSerialClient
) -> None:
    await control(sim, "POST", "/plug", {"profile": "7.4kw"})
    sdm120 = load_map("sdm120")
    assert (await rtu_client.read_coils(0, count=1, device_id=RELAY_UNIT)).bits[0] is False
    clock.advance(60)
    assert (await read_meter(rtu_client, sdm120, 1))[Quantity.POWER_W] == 0
    assert not (await rtu_client.write_coil(0, value=True, device_id=RELAY_UNIT)).isError()
    assert sim.site.relay_closed
    clock.advance(60)
    closed = await read_meter(rtu_client, sdm120, 1)
    assert closed[Quantity.POWER_W] == pytest.approx(7400, rel=1e-6)
    assert closed[Quantity.ENERGY_IMPORT_WH] == pytest.approx(7400 / 60, rel=1e-5)
    assert (await rtu_client.read_discrete_inputs(0, count=1, device_id=RELAY_UNIT)).bits[0]
    assert not (await rtu_client.write_coil(0, value=False, device_id=RELAY_UNIT)).isError()
    clock.advance(60)
    assert (await read_meter(rtu_client, sdm120, 1))[Quantity.POWER_W] == 0
    assert (await rtu_client.read_coils(5, count=1, device_id=RELAY_UNIT)).exception_code == 2
    assert (
        await rtu_client.read_input_registers(0, count=1, device_id=RELAY_UNIT)
    ).exception_code == 1


async def test_broadcast_write_switches_the_relay_without_an_answer(
    sim: SimSite, rtu_client: AsyncModbusSerialClient
) -> None:
    await rtu_client.write_coil(0, value=True, device_id=0, no_response_expected=True)
    # The next exchange proves the broadcast was consumed (and answered by nobody).
    assert (await rtu_client.read_coils(0, count=1, device_id=RELAY_UNIT)).bits[0] is True
    assert sim.site.relay_closed


async def test_a_function_code_pymodbus_cannot_decode_is_exception_1_on_both_transports(
    sim: SimSite,
) -> None:
    # Function 0x41 (user-defined range, Modbus Application Protocol §5): no meter has it.
    pdu = bytes((0x41, 0x00, 0x01))
    request = bytes((2,)) + pdu
    request += FramerRTU.compute_CRC(request).to_bytes(2, "big")

    def rtu_exchange() -> bytes:
        with serial.Serial(sim.endpoints()["serial"], 115200, timeout=2.0) as port:
            port.write(request)
            return bytes(port.read(5))

    answer = await asyncio.to_thread(rtu_exchange)
    assert answer[:3] == bytes((2, 0xC1, 0x01))
    assert FramerRTU.check_CRC(answer[:3], int.from_bytes(answer[3:], "big"))

    host, port = sim.endpoints()["tcp"].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        mbap = (7).to_bytes(2, "big") + bytes(2) + (1 + len(pdu)).to_bytes(2, "big")
        writer.write(mbap + bytes((2,)) + pdu)
        reply = await asyncio.wait_for(reader.readexactly(9), 5)
    finally:
        writer.close()
        await writer.wait_closed()
    assert reply[:2] == (7).to_bytes(2, "big")
    assert reply[6:] == bytes((2, 0xC1, 0x01))
