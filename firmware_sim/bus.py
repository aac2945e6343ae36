"""One Modbus bus: the devices on it by unit id, and how it answers a request PDU.

Both transports (:mod:`firmware_sim.rtu`, :mod:`firmware_sim.tcp`) decode a frame with
pymodbus's framer, hand the PDU to :meth:`Bus.answer`, and send what it says (or stay
silent). Faults that decide *whether and what* a device answers act here; faults that
decide *how the frame travels* (CRC, turnaround) are returned for the transport to apply.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ExceptionResponse, ModbusPDU

from firmware_sim.devices import MeterDevice, RelayDevice, SimDevice
from firmware_sim.faults import Fault, FaultKind
from firmware_sim.site import Site, check_unit

#: Modbus over Serial Line §2.2: address 0 is broadcast (execute, never answer).
BROADCAST = 0


@dataclass(frozen=True, slots=True)
class Answer:
    """What goes back on the wire for one request."""

    response: ModbusPDU
    #: A ``slow`` fault's turnaround, or None for the transport's configured one.
    slow_turnaround_s: float | None = None
    #: Send the frame with a wrong CRC (``crc`` fault; RTU only).
    corrupt_crc: bool = False


def _refused(request: ModbusPDU, fault: Fault) -> bool:
    """A register read (function 3 or 4) touching the range a ``refuse`` fault took away."""
    if request.function_code not in (3, 4):
        return False
    return fault.refuses(int(request.address), int(request.count))


class Bus:
    def __init__(self, site: Site, *, relay_unit: int | None = None) -> None:
        self.site = site
        self.devices: dict[int, SimDevice] = {u: MeterDevice(site, u) for u in site.maps}
        if relay_unit is not None:
            check_unit(relay_unit)
            if relay_unit in self.devices:
                raise ValueError(f"relay unit id {relay_unit} is a meter's")
            self.devices[relay_unit] = RelayDevice(site, relay_unit)
        # Not cryptographic: which frames a flapping bus drops.
        self._rng = random.Random(site.seed)  # noqa: S311

    async def answer(self, request: ModbusPDU) -> Answer | None:
        """The answer to ``request``, or None when the bus stays silent."""
        unit = request.dev_id
        if unit == BROADCAST:
            for member in self.devices.values():
                if request.function_code in member.function_codes:
                    await request.update_datastore(member)  # type: ignore[arg-type]
            return None
        device = self.devices.get(unit)
        if device is None:
            return None  # nobody on the bus has that address
        self.site.sync()
        faults = self.site.faults
        if faults.find(FaultKind.TIMEOUT, unit) is not None:
            return None
        flapping = faults.find(FaultKind.FLAPPING, unit)
        if flapping is not None and self._rng.random() < flapping.drop_ratio:
            return None
        slow = faults.find(FaultKind.SLOW, unit)
        corrupt = faults.find(FaultKind.CRC, unit) is not None
        exception = faults.find(FaultKind.EXCEPTION, unit)
        refuse = faults.find(FaultKind.REFUSE, unit)
        if request.function_code not in device.function_codes:
            response: ModbusPDU = ExceptionResponse(
                request.function_code, ExcCodes.ILLEGAL_FUNCTION
            )
        elif exception is not None:
            response = ExceptionResponse(request.function_code, exception.exception_code)
        elif refuse is not None and _refused(request, refuse):
            response = ExceptionResponse(request.function_code, refuse.exception_code)
        else:
            # pymodbus types the context as its ModbusDeviceContext; any device context works.
            response = await request.update_datastore(device)  # type: ignore[arg-type]
        response.dev_id = unit
        response.transaction_id = request.transaction_id
        return Answer(response, None if slow is None else slow.turnaround_s, corrupt)

    def illegal_function(self, unit: int, function_code: int) -> Answer | None:
        """Answer to a frame whose function code pymodbus cannot decode: exception 1 from a
        device that exists and is not silenced, as a real meter does."""
        if unit not in self.devices:
            return None
        self.site.sync()
        faults = self.site.faults
        if faults.find(FaultKind.TIMEOUT, unit) is not None:
            return None
        response = ExceptionResponse(function_code & 0x7F, ExcCodes.ILLEGAL_FUNCTION)
        response.dev_id = unit
        return Answer(response, None, faults.find(FaultKind.CRC, unit) is not None)
