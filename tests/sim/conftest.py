"""Helpers for the simulator's tests: a running in-process site and plain pymodbus clients."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.pdu import ModbusPDU

from firmware_sim.clock import ManualClock
from firmware_sim.control import ControlClient
from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec
from protocols.meters import Quantity, RegisterMap, decode_blocks, plan_blocks

#: Every meter model on one bus, each at its own unit id; the relay after them.
ALL_METERS = (
    MeterSpec("sdm120", 1),
    MeterSpec("sdm630", 2),
    MeterSpec("sdm72d", 3),
    MeterSpec("abb_b23", 4),
    MeterSpec("iem3155", 5),
    MeterSpec("mfm383a", 6),
    MeterSpec("em6400ng", 7),
    MeterSpec("lgplus", 8),
    MeterSpec("em2m", 9),
    MeterSpec("em4m", 10),
)
RELAY_UNIT = 11
#: Fast line so tests stay quick; timing itself is the benchmark's business.
TEST_BAUD = 115200


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1000.0)


@pytest.fixture
async def sim(clock: ManualClock, tmp_path: Path) -> AsyncIterator[SimSite]:
    config = SimConfig(
        meters=ALL_METERS,
        relay_unit=RELAY_UNIT,
        tcp=("127.0.0.1", 0),
        serial=True,
        baud=TEST_BAUD,
        turnaround_s=0.0,
        rfid=True,
        keys=True,
        state_path=tmp_path / "state.json",
    )
    async with SimSite(config, clock=clock) as running:
        yield running


@pytest.fixture
async def tcp_client(sim: SimSite) -> AsyncIterator[AsyncModbusTcpClient]:
    host, port = sim.endpoints()["tcp"].split(":")
    client = AsyncModbusTcpClient(host, port=int(port), timeout=1.0, retries=0)
    assert await client.connect()
    yield client
    client.close()


@pytest.fixture
async def rtu_client(sim: SimSite) -> AsyncIterator[AsyncModbusSerialClient]:
    client = AsyncModbusSerialClient(
        sim.endpoints()["serial"], baudrate=TEST_BAUD, timeout=1.0, retries=0
    )
    assert await client.connect()
    yield client
    client.close()


Client = AsyncModbusTcpClient | AsyncModbusSerialClient


async def read_block(
    client: Client, function_code: int, start: int, count: int, unit: int
) -> ModbusPDU:
    if function_code == 3:
        return await client.read_holding_registers(start, count=count, device_id=unit)
    return await client.read_input_registers(start, count=count, device_id=unit)


async def read_meter(client: Client, register_map: RegisterMap, unit: int) -> dict[Quantity, float]:
    """Read every quantity of ``register_map`` the way the agent would: planned blocks."""
    answers = []
    for block in plan_blocks(register_map):
        response = await read_block(client, block.function_code, block.start, block.count, unit)
        assert not response.isError(), response
        answers.append((block, response.registers))
    return decode_blocks(register_map, answers)


async def control(sim: SimSite, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """Call the real HTTP control interface (blocking urllib client, off the event loop)."""
    client = ControlClient(sim.endpoints()["control"])
    return await asyncio.to_thread(client.call, method, path, body)
