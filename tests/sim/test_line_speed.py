"""Two simulator extensions for the technician CLI's tests: devices at their own line speed
on one RTU line (a meter set to another baud rate than the client's stays silent, as on a real
RS-485 line), and a welded contactor (power flows whatever the relay's coil says)."""

from __future__ import annotations

import pytest
from pymodbus.client import AsyncModbusSerialClient

from firmware_sim.clock import ManualClock
from firmware_sim.errors import ConfigError
from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec, Site


async def _answers(port: str, baud: int, unit: int) -> bool:
    client = AsyncModbusSerialClient(port, baudrate=baud, timeout=0.2, retries=0)
    assert await client.connect()
    try:
        response = await client.read_input_registers(0, count=2, device_id=unit)
        return not response.isError()
    except Exception:  # noqa: BLE001 -- pymodbus raises ModbusIOException on silence
        return False
    finally:
        client.close()


async def test_each_meter_answers_only_at_its_own_baud_rate() -> None:
    config = SimConfig(
        meters=(MeterSpec("sdm630", 3, baud=9600), MeterSpec("sdm120", 7, baud=19200)),
        serial=True,
        baud=9600,
        turnaround_s=0.0,
        control=None,
    )
    async with SimSite(config, clock=ManualClock(0.0)) as sim:
        port = sim.endpoints()["serial"]
        assert await _answers(port, 9600, 3)
        assert not await _answers(port, 19200, 3)
        assert await _answers(port, 19200, 7)
        assert not await _answers(port, 9600, 7)


async def test_check_baud_silences_every_device_at_the_wrong_speed() -> None:
    config = SimConfig(
        meters=(MeterSpec("sdm630", 1),),
        serial=True,
        baud=38400,
        check_baud=True,
        turnaround_s=0.0,
        control=None,
    )
    async with SimSite(config, clock=ManualClock(0.0)) as sim:
        port = sim.endpoints()["serial"]
        assert await _answers(port, 38400, 1)
        assert not await _answers(port, 9600, 1)


def test_meter_spec_parses_its_own_baud_and_refuses_a_nonstandard_one() -> None:
    assert MeterSpec.parse("sdm120:7@19200") == MeterSpec("sdm120", 7, 19200)
    assert MeterSpec.parse("sdm630") == MeterSpec("sdm630", 1, None)
    with pytest.raises(ConfigError):
        MeterSpec.parse("sdm630:1@fast")
    with pytest.raises(ConfigError):
        SimConfig(meters=(MeterSpec("sdm630", 1, baud=1234),))


def _conducts(site: Site) -> bool:
    # A function, so mypy does not narrow the property across the calls that change it.
    return site.relay_closed


def test_a_welded_contactor_conducts_whatever_the_coil_says_until_repaired() -> None:
    from firmware_sim.faults import make_fault

    site = Site((MeterSpec("sdm630", 1),), clock=ManualClock(0.0))
    site.set_relay(True)
    site.set_fault(make_fault("welded"))
    site.set_relay(False)
    assert site.coil_closed is False
    assert _conducts(site)  # the contacts stayed closed
    site.clear_faults()
    assert not _conducts(site)  # repaired: follows the coil again
    site.set_relay(True)
    assert (site.coil_closed, _conducts(site)) == (True, True)
