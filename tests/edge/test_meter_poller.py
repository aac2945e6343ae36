"""The meter poller against a real Modbus TCP peer: whole map in few frames, exact values,
failures counted and survived, availability logged once each way."""

from __future__ import annotations

import asyncio
import logging

import pytest

from edge_agent.config import BusTiming, MeterSettings, TcpLink
from edge_agent.errors import BusError
from edge_agent.meters.bus import ModbusBus
from edge_agent.meters.poller import MeterPoller
from edge_agent.testing import ModbusPeer
from protocols.meters import Quantity
from tests.support.mosquitto import free_port

VALUES: dict[Quantity, float | None] = {
    Quantity.VOLTAGE_L1_V: 230.5,
    Quantity.CURRENT_L1_A: 16.25,
    Quantity.POWER_W: 3700.0,
    Quantity.ENERGY_IMPORT_WH: 123_456.0,
    Quantity.FREQUENCY_HZ: 50.0,
}
FAST = BusTiming(frame_gap_s=0.0, timeout_s=0.2, retries=0)


def _settings(port: int, unit: int = 1, model: str = "sdm630") -> MeterSettings:
    return MeterSettings(
        id=f"m{unit}",
        model=model,
        unit_id=unit,
        link=TcpLink(host="127.0.0.1", port=port),
    )


async def test_whole_sdm630_map_in_at_most_three_frames() -> None:
    async with ModbusPeer({1: ("sdm630", VALUES)}) as peer:
        settings = _settings(peer.port)
        async with ModbusBus(settings.link, FAST) as bus:
            poller = MeterPoller(settings, bus)
            reading = await poller.poll()
            assert reading is not None
            assert len(poller.blocks) <= 3
            assert peer.requests == len(poller.blocks) == bus.frames
            # float32 holds these exactly; the energy register is kWh x 1000 (sdm630.toml).
            for quantity, value in VALUES.items():
                assert reading.values[quantity] == pytest.approx(value, rel=1e-6)
            # Quantities not given were encoded as "not available" (NaN) and are left out.
            assert set(reading.values) == set(VALUES)
            assert reading.clock_synced is True
            assert poller.health.good == 1


@pytest.mark.parametrize("model", ["sdm120", "sdm72d", "abb_b23", "iem3155"])
async def test_every_map_round_trips_over_the_wire(model: str) -> None:
    values = {
        Quantity.ENERGY_IMPORT_WH: 4_200_000.0,
        Quantity.POWER_W: 1500.0,
        Quantity.CURRENT_L1_A: 6.5,
    }
    async with ModbusPeer({3: (model, values)}) as peer:
        settings = _settings(peer.port, unit=3, model=model)
        async with ModbusBus(settings.link, FAST) as bus:
            reading = await MeterPoller(settings, bus).poll()
    assert reading is not None
    for quantity, value in values.items():
        assert reading.values[quantity] == pytest.approx(value, rel=1e-3)


async def test_values_follow_the_meter() -> None:
    async with ModbusPeer({1: ("sdm630", VALUES)}) as peer:
        settings = _settings(peer.port)
        async with ModbusBus(settings.link, FAST) as bus:
            poller = MeterPoller(settings, bus)
            peer.set_values(1, {**VALUES, Quantity.ENERGY_IMPORT_WH: 123_999.0})
            reading = await poller.poll()
    assert reading is not None
    # float32 kWh carries ~7 significant digits: the agent rounds to whole Wh.
    assert round(reading.values[Quantity.ENERGY_IMPORT_WH]) == 123_999


async def test_silent_meter_is_counted_logged_once_and_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with ModbusPeer({1: ("sdm630", VALUES)}) as peer:
        settings = _settings(peer.port)
        async with ModbusBus(settings.link, FAST) as bus:
            poller = MeterPoller(settings, bus)
            assert await poller.poll() is not None
            peer.silence(1)
            with caplog.at_level(logging.INFO, logger="edge_agent.meters.poller"):
                for _ in range(3):
                    assert await poller.poll() is None
                peer.revive(1)
                # pymodbus closes a connection after retries+3 unanswered requests; the bus
                # reconnects (after its back-off) and the meter is heard again.
                reading = None
                for _ in range(50):
                    reading = await poller.poll()
                    if reading is not None:
                        break
                    await asyncio.sleep(0.1)
            assert reading is not None
    records = [
        (r.levelname, r.getMessage()) for r in caplog.records if r.name.startswith("edge_agent")
    ]
    assert [level for level, _ in records] == ["ERROR", "INFO"]
    assert poller.health.failures["timeout"] >= 3
    assert poller.health.available is True


async def test_exception_response_is_counted_not_raised() -> None:
    # An SDM120 map read from a unit that only has coils: the peer answers exception 2.
    async with ModbusPeer({}, coil_units=(5,)) as peer:
        settings = _settings(peer.port, unit=5, model="sdm120")
        async with ModbusBus(settings.link, FAST) as bus:
            poller = MeterPoller(settings, bus)
            assert await poller.poll() is None
    assert poller.health.failures["exception"] == 1


async def test_unreachable_peer_backs_off_without_raising() -> None:
    settings = _settings(free_port())
    async with ModbusBus(settings.link, FAST) as bus:
        poller = MeterPoller(settings, bus)
        assert await poller.poll() is None
        # Within the back-off window no new connection is tried.
        with pytest.raises(BusError, match="next try"):
            await bus.read_registers(1, 4, 0, 2)
    assert poller.health.failures["disconnected"] == 1


async def test_line_settings_the_port_refuses_are_a_bus_error_not_a_crash() -> None:
    # A pseudo-terminal refuses parity E the way some USB-RS485 adapters do: pyserial raises
    # termios.error, which is not an OSError.
    import os

    from edge_agent.config import SerialLink

    master, slave = os.openpty()
    try:
        link = SerialLink(port=os.ttyname(slave), parity="E")
        async with ModbusBus(link, FAST) as bus:
            with pytest.raises(BusError, match="cannot open"):
                await bus.read_registers(1, 4, 0, 2)
    finally:
        os.close(master)
        os.close(slave)
