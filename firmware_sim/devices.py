"""The Modbus devices on the bus, as pymodbus device contexts over the :class:`Site`.

:meth:`pdu.update_datastore` (pymodbus 3.11) calls ``async_getValues``/``async_setValues``
with the request's function code and 0-based address; returning an :class:`ExcCodes` makes
it answer that Modbus exception. The devices answer what the real ones do:

- a meter reads only with its map's function code (3 or 4) and only inside the map's
  readable windows; anything else is exception 2 (illegal data address), a count outside
  1..125 is exception 3 (Modbus Application Protocol v1.1b3, §6.3/6.4);
- the relay is coil 0 (read 1, write 5/15) with its state mirrored as discrete input 0.
"""

from __future__ import annotations

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusBaseDeviceContext

from firmware_sim.site import Site

#: Modbus Application Protocol v1.1b3 §6.3/6.4: quantity of registers 1..125.
MAX_READ_REGISTERS = 125


class SimDevice(ModbusBaseDeviceContext):
    """A device on the simulated bus; ``function_codes`` are the ones it implements."""

    function_codes: frozenset[int] = frozenset()

    def reset(self) -> None:
        """Nothing to reset: a device's state lives in the site."""


class MeterDevice(SimDevice):
    def __init__(self, site: Site, unit: int) -> None:
        self.site = site
        self.unit = unit
        self.register_map = site.maps[unit]
        self.function_codes = frozenset({self.register_map.function.code})

    def getValues(  # noqa: N802 (pymodbus's name)
        self, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        if func_code not in self.function_codes:
            return ExcCodes.ILLEGAL_FUNCTION
        if not 1 <= count <= MAX_READ_REGISTERS:
            return ExcCodes.ILLEGAL_VALUE
        window = self.register_map.window_of(address)
        if window is None or address + count - 1 not in window:
            return ExcCodes.ILLEGAL_ADDRESS
        image = self.site.image(self.unit)
        return [image[a] for a in range(address, address + count)]

    def setValues(  # noqa: N802 (pymodbus's name)
        self, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        return ExcCodes.ILLEGAL_FUNCTION


class RelayDevice(SimDevice):
    """A Modbus relay module driving the contactor: coil 0 closes it."""

    def __init__(self, site: Site, unit: int) -> None:
        self.site = site
        self.unit = unit
        self.function_codes = frozenset({1, 2, 5, 15})

    def getValues(  # noqa: N802 (pymodbus's name)
        self, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        if func_code not in self.function_codes:
            return ExcCodes.ILLEGAL_FUNCTION
        if address != 0 or count != 1:
            return ExcCodes.ILLEGAL_ADDRESS
        return [self.site.coil_closed]

    def setValues(  # noqa: N802 (pymodbus's name)
        self, func_code: int, address: int, values: list[int] | list[bool]
    ) -> ExcCodes | None:
        if func_code not in (5, 15):
            return ExcCodes.ILLEGAL_FUNCTION
        # Function 15 pads its bits to whole bytes; only the first one is ours.
        if address != 0 or not values:
            return ExcCodes.ILLEGAL_ADDRESS
        self.site.set_relay(bool(values[0]))
        return None
