"""A real Modbus TCP peer for the meter and relay tests: pymodbus 3.11's own server, serving
register images built by :func:`protocols.meters.encode_registers`.

It counts the frames it answers, can change a meter's values, and can fall silent for one
unit (the server then ignores requests for it, so the agent sees a timeout, as on a real
bus with a dead meter).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

from pymodbus import datastore
from pymodbus.datastore import ModbusDeviceContext
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer

from protocols.meters import Quantity, encode_registers, load_map

# pymodbus's datastore and server classes are not annotated; used through Any, as data.
_store: Any = datastore
ModbusSparseDataBlock: Any = _store.ModbusSparseDataBlock
ModbusServerContext: Any = _store.ModbusServerContext


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ModbusPeer:
    """``async with ModbusPeer({1: ("sdm630", values)}) as peer:`` then poll 127.0.0.1:peer.port.

    Units listed in ``coil_units`` also hold coil 0 (a Modbus relay module).
    """

    def __init__(
        self,
        meters: Mapping[int, tuple[str, Mapping[Quantity, float | None]]],
        *,
        coil_units: tuple[int, ...] = (),
    ) -> None:
        self.port = free_port()
        self.requests = 0
        self._models = {unit: model for unit, (model, _) in meters.items()}
        self._devices: dict[int, ModbusDeviceContext] = {}
        for unit, (model, values) in meters.items():
            self._devices[unit] = self._device(model, values)
        for unit in coil_units:
            # A relay module has no registers: reading them answers exception 2.
            device = self._devices.get(unit) or ModbusDeviceContext(
                ir=ModbusSparseDataBlock({60000: 0}), hr=ModbusSparseDataBlock({60000: 0})
            )
            # pymodbus device contexts add 1 to every address (datastore/context.py).
            device.store["c"] = ModbusSparseDataBlock({1: [False]})
            self._devices[unit] = device
        self._silenced: dict[int, ModbusDeviceContext] = {}
        self.context: Any = ModbusServerContext(devices=dict(self._devices), single=False)
        self._server: Any = ModbusTcpServer(
            self.context,
            address=("127.0.0.1", self.port),
            ignore_missing_devices=True,
            trace_pdu=self._count,
        )

    def _count(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests += 1
        return pdu

    @staticmethod
    def _device(model: str, values: Mapping[Quantity, float | None]) -> ModbusDeviceContext:
        register_map = load_map(model)
        image = encode_registers(register_map, values)
        block = ModbusSparseDataBlock({addr + 1: word for addr, word in image.items()})
        if register_map.function.code == 4:
            return ModbusDeviceContext(ir=block)
        return ModbusDeviceContext(hr=block)

    def set_values(self, unit: int, values: Mapping[Quantity, float | None]) -> None:
        register_map = load_map(self._models[unit])
        table = "i" if register_map.function.code == 4 else "h"
        store: Any = self._devices[unit].store[table]
        for addr, word in encode_registers(register_map, values).items():
            store.values[addr + 1] = word

    def coil(self, unit: int) -> bool:
        store: Any = self._devices[unit].store["c"]
        return bool(store.values[1])

    def set_coil(self, unit: int, closed: bool) -> None:
        store: Any = self._devices[unit].store["c"]
        store.values[1] = closed

    def silence(self, unit: int) -> None:
        self._silenced[unit] = self._devices[unit]
        del self.context[unit]

    def revive(self, unit: int) -> None:
        self.context[unit] = self._silenced.pop(unit)

    async def __aenter__(self) -> Self:
        await self._server.serve_forever(background=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._server.shutdown()


class ChargingMeter:
    """Physics for a peer: a meter whose import register advances while a relay coil is
    closed, in whole Wh (so float32 kWh decodes back to the same integer)."""

    def __init__(
        self,
        peer: ModbusPeer,
        *,
        meter_unit: int,
        relay_unit: int,
        energy_wh: int = 50_000,
        wh_per_tick: int = 1,
        tick_s: float = 0.5,
        power_w: float = 7200.0,
    ) -> None:
        self.peer = peer
        self.meter_unit = meter_unit
        self.relay_unit = relay_unit
        self.energy_wh = energy_wh
        self.wh_per_tick = wh_per_tick
        self.tick_s = tick_s
        self.power_w = power_w
        self.current_a = power_w / 230.0
        self.publish()

    def publish(self) -> None:
        flowing = self.peer.coil(self.relay_unit)
        self.peer.set_values(
            self.meter_unit,
            {
                Quantity.ENERGY_IMPORT_WH: float(self.energy_wh),
                Quantity.POWER_W: self.power_w if flowing else 0.0,
                Quantity.CURRENT_L1_A: self.current_a if flowing else 0.0,
                Quantity.VOLTAGE_L1_V: 230.0,
            },
        )

    async def run(self) -> None:
        """Advance the register while the coil is closed; run it in the test's TaskGroup."""
        while True:
            await asyncio.sleep(self.tick_s)
            if self.peer.coil(self.relay_unit):
                self.energy_wh += self.wh_per_tick
            self.publish()
