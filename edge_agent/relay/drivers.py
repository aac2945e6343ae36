"""Relay drivers: a Modbus coil on a shared bus, a Raspberry Pi GPIO pin, none, or a relay
held in memory (``fake``).

gpiozero (with its lgpio pin factory) is imported only when a GPIO relay is configured: it is
not installed on development machines, and an agent driving a Modbus relay never needs it.
"""

from __future__ import annotations

import importlib
from typing import Any

from edge_agent.config import (
    FakeRelay as FakeRelaySettings,
)
from edge_agent.config import (
    GpioRelay,
    ModbusCoilRelay,
    NoRelay,
    RelaySettings,
)
from edge_agent.errors import MeterError, RelayError
from edge_agent.meters.bus import ModbusBus
from edge_agent.relay.base import RelayDriver


class ModbusCoilDriver:
    """A relay module's coil (function 5 to write, 1 to read back), on a bus it may share
    with meters: the bus lock serialises it with their polls."""

    name = "modbus-coil"

    def __init__(self, bus: ModbusBus, *, unit_id: int, coil: int, connector: int) -> None:
        self._bus = bus
        self._unit_id = unit_id
        self._coil = coil
        self._connector = connector

    async def set_closed(self, closed: bool) -> None:
        try:
            await self._bus.write_coil(self._unit_id, self._coil, closed)
        except MeterError as exc:
            raise RelayError(str(exc), connector=self._connector) from exc

    async def is_closed(self) -> bool | None:
        try:
            return await self._bus.read_coil(self._unit_id, self._coil)
        except MeterError as exc:
            raise RelayError(str(exc), connector=self._connector) from exc


class GpioDriver:
    """A relay board on a GPIO pin through gpiozero's ``OutputDevice``."""

    name = "gpio"

    def __init__(self, pin: int, *, active_high: bool, connector: int) -> None:
        try:
            gpiozero = importlib.import_module("gpiozero")
        except ImportError as exc:
            raise RelayError(
                "relay driver 'gpio' needs gpiozero and lgpio (pip install gpiozero lgpio)",
                connector=connector,
            ) from exc
        self._connector = connector
        # initial_value=False: the pin comes up with the relay open (fail-safe at start).
        self._device: Any = gpiozero.OutputDevice(pin, active_high=active_high, initial_value=False)

    async def set_closed(self, closed: bool) -> None:
        try:
            self._device.on() if closed else self._device.off()
        except Exception as exc:  # gpiozero raises its own tree, GPIOZeroError and OSError
            raise RelayError(f"GPIO write failed: {exc}", connector=self._connector) from exc

    async def is_closed(self) -> bool | None:
        return bool(self._device.value)


class FakeRelay:
    """The ``fake`` driver: a relay held in memory, for tests, demos and the simulator. It
    records every command (``history``), fails every call while ``fail`` is set, and with
    ``welded`` set accepts commands while its contacts stay closed (the stuck-relay rule).
    ``edge_agent.testing`` offers it to tests."""

    name = "fake"

    def __init__(self, connector: int = 1) -> None:
        self.connector = connector
        self.commanded: bool = False
        self.welded = False
        self.fail = False
        self.history: list[bool] = []

    @property
    def contacts_closed(self) -> bool:
        """Whether power can physically flow (what a meter would see)."""
        return self.commanded or self.welded

    async def set_closed(self, closed: bool) -> None:
        if self.fail:
            raise RelayError("fake relay set to fail", connector=self.connector)
        self.commanded = closed
        self.history.append(closed)

    async def is_closed(self) -> bool | None:
        if self.fail:
            raise RelayError("fake relay set to fail", connector=self.connector)
        return self.commanded


class NoRelayDriver:
    """No relay: commands are accepted and change nothing (monitoring-only sites)."""

    name = "none"

    async def set_closed(self, closed: bool) -> None:
        return None

    async def is_closed(self) -> bool | None:
        return None


def make_driver(
    settings: RelaySettings, *, connector: int, buses: dict[str, ModbusBus]
) -> RelayDriver:
    """Build the configured driver; a Modbus relay reuses the bus (and lock) of its line."""
    match settings:
        case ModbusCoilRelay():
            return ModbusCoilDriver(
                buses[settings.link.bus_key],
                unit_id=settings.unit_id,
                coil=settings.coil,
                connector=connector,
            )
        case GpioRelay():
            return GpioDriver(settings.pin, active_high=settings.active_high, connector=connector)
        case FakeRelaySettings():
            return FakeRelay(connector)
        case NoRelay():
            return NoRelayDriver()
