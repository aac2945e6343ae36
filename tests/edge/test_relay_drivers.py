"""Relay drivers: the Modbus coil over a real peer, GPIO's import-on-demand, the fake."""

from __future__ import annotations

import sys

import pytest

from edge_agent import testing
from edge_agent.config import BusTiming, FakeRelay, GpioRelay, ModbusCoilRelay, NoRelay, TcpLink
from edge_agent.errors import RelayError
from edge_agent.meters.bus import ModbusBus
from edge_agent.relay.drivers import ModbusCoilDriver, NoRelayDriver, make_driver
from edge_agent.testing import ModbusPeer
from tests.support.mosquitto import free_port

FAST = BusTiming(frame_gap_s=0.0, timeout_s=0.2, retries=0)


async def test_modbus_coil_relay_switches_and_reads_back() -> None:
    async with ModbusPeer({}, coil_units=(9,)) as peer:
        link = TcpLink(host="127.0.0.1", port=peer.port)
        async with ModbusBus(link, FAST) as bus:
            settings = ModbusCoilRelay(link=link, unit_id=9, coil=0)
            driver = make_driver(settings, connector=1, buses={link.bus_key: bus})
            assert isinstance(driver, ModbusCoilDriver)
            await driver.set_closed(True)
            assert peer.coil(9) is True
            assert await driver.is_closed() is True
            await driver.set_closed(False)
            assert peer.coil(9) is False
            assert await driver.is_closed() is False


async def test_modbus_coil_relay_failure_is_a_relay_error() -> None:
    link = TcpLink(host="127.0.0.1", port=free_port())
    async with ModbusBus(link, FAST) as bus:
        driver = ModbusCoilDriver(bus, unit_id=9, coil=0, connector=2)
        with pytest.raises(RelayError) as info:
            await driver.set_closed(True)
    assert info.value.connector == 2


def test_gpio_driver_without_gpiozero_is_a_clear_relay_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # None in sys.modules makes `import gpiozero` fail, whether or not it is installed here.
    monkeypatch.setitem(sys.modules, "gpiozero", None)
    with pytest.raises(RelayError, match="gpiozero"):
        make_driver(GpioRelay(pin=17), connector=1, buses={})


async def test_fake_and_none_drivers() -> None:
    fake = make_driver(FakeRelay(), connector=1, buses={})
    assert isinstance(fake, testing.FakeRelay)
    await fake.set_closed(True)
    assert await fake.is_closed() is True
    fake.welded = True
    await fake.set_closed(False)
    assert fake.contacts_closed is True
    assert fake.history == [True, False]
    fake.fail = True
    with pytest.raises(RelayError):
        await fake.set_closed(False)
    none = make_driver(NoRelay(), connector=1, buses={})
    assert isinstance(none, NoRelayDriver)
    await none.set_closed(True)
    assert await none.is_closed() is None
