"""The ``refuse`` fault: a meter without part of its map (an older firmware, a cheaper
variant). A plain pymodbus client reading a block that touches the taken-away registers gets
Modbus exception 2 (illegal data address); every other block reads as usual; switched off,
the meter answers in full again. Switched through the real HTTP control interface and the CLI."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient

from firmware_sim.errors import ConfigError
from firmware_sim.faults import make_fault
from firmware_sim.simsite import SimSite
from protocols.meters import decode_blocks, load_map, plan_blocks
from tests.sim.conftest import Client, control, read_block

SIM = str(Path(sys.executable).with_name("chargemitra-sim"))
SDM630_UNIT = 2
SDM630 = load_map("sdm630")
#: The SDM630's third window (energy totals per phase), 0x0156..0x017F.
FIRST, LAST = 0x0156, 0x017F


async def _codes(client: Client) -> list[int | None]:
    """The exception code (None: a normal answer) of each planned SDM630 block."""
    codes = []
    for block in plan_blocks(SDM630):
        response = await read_block(
            client, block.function_code, block.start, block.count, SDM630_UNIT
        )
        codes.append(response.exception_code if response.isError() else None)
    return codes


@pytest.mark.parametrize("transport", ["tcp", "rtu"])
async def test_refuse_answers_exception_2_for_the_block_and_reads_the_rest(
    sim: SimSite,
    transport: str,
    tcp_client: AsyncModbusTcpClient,
    rtu_client: AsyncModbusSerialClient,
) -> None:
    client: Client = tcp_client if transport == "tcp" else rtu_client
    body = {"kind": "refuse", "unit": SDM630_UNIT, "first_address": FIRST, "last_address": LAST}
    answer = await control(sim, "POST", "/faults", body)
    assert answer["fault"]["exception_code"] == 2
    assert await _codes(client) == [None, None, 2]
    # A read that only overlaps the range's edge is refused too; one just outside is not.
    edge = await client.read_input_registers(LAST, count=1, device_id=SDM630_UNIT)
    assert edge.isError()
    assert edge.exception_code == 2
    before = await client.read_input_registers(0x00C8, count=2, device_id=SDM630_UNIT)
    assert not before.isError()
    # Other meters on the bus are not affected.
    other = await client.read_input_registers(0x0156, count=2, device_id=3)  # the SDM72D
    assert not other.isError()
    await control(sim, "DELETE", f"/faults/refuse?unit={SDM630_UNIT}")
    assert await _codes(client) == [None, None, None]


async def test_the_blocks_that_answer_decode_to_the_measured_values(
    sim: SimSite, tcp_client: AsyncModbusTcpClient
) -> None:
    sim.set_fault("refuse", unit=SDM630_UNIT, first_address=FIRST, last_address=LAST)
    answers = []
    for block in plan_blocks(SDM630)[:2]:
        response = await read_block(
            tcp_client, block.function_code, block.start, block.count, SDM630_UNIT
        )
        answers.append((block, response.registers))
    values = decode_blocks(SDM630, answers)
    truth = sim.site.values(SDM630_UNIT)
    assert values
    assert all(v == pytest.approx(truth[q], rel=1e-6) for q, v in values.items())


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"first_address": -1}, "first_address"),
        ({"last_address": 65536}, "last_address"),
        ({"first_address": 10, "last_address": 9}, "first_address"),
        ({"first_address": "10"}, "first_address"),
    ],
)
def test_bad_refuse_ranges_name_their_field(params: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as refused:
        make_fault("refuse", **params)  # type: ignore[arg-type]
    assert refused.value.field == field


def test_refuse_defaults_to_illegal_data_address_and_the_whole_map() -> None:
    fault = make_fault("refuse")
    assert (fault.exception_code, fault.first_address, fault.last_address) == (2, 0, 0xFFFF)
    assert make_fault("refuse", exception_code=3).exception_code == 3


async def test_the_cli_switches_refuse_on(sim: SimSite) -> None:
    proc = await asyncio.create_subprocess_exec(
        SIM,
        "fault",
        "refuse",
        "--unit",
        str(SDM630_UNIT),
        "--first",
        str(FIRST),
        "--last",
        str(LAST),
        "--control",
        sim.endpoints()["control"],
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err
    fault = json.loads(out)["fault"]
    assert (fault["kind"], fault["first_address"], fault["last_address"]) == ("refuse", FIRST, LAST)
