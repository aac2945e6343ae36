"""The hardware used directly, when the agent is not running: serial ports, meters, relays.

Before a serial port is used it is checked: present, openable (permissions: the ``dialout``
group), and not held by another process — a program holding an exclusive ``flock`` (pyserial
``exclusive=True``, ModemManager, …) or ``TIOCEXCL``. RS-485 is one shared line: a second
master on it garbles both, so a busy port is refused, never shared.

pymodbus is reached only through :mod:`edge_agent.meters.bus` (imported lazily).
"""

from __future__ import annotations

import errno
import fcntl
import grp
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Self

from edge_agent.config import (
    AgentSettings,
    BusTiming,
    MeterSettings,
    ModbusCoilRelay,
    SerialLink,
    TcpLink,
    register_map_of,
)
from edge_agent.errors import InputError, MeterError, PortBusy
from protocols.meters import Quantity, RegisterMap, decode_blocks, plan_blocks

if TYPE_CHECKING:
    from edge_agent.meters.bus import ModbusBus
    from edge_agent.relay.base import RelayDriver


def lock_holder(port: str) -> str | None:
    """Which process holds a lock on ``port``, from ``/proc/locks`` (Linux), if we can tell."""
    try:
        inode = Path(port).stat().st_ino
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 1234 00:05:7 0 EOF" (after a "->" for waiters)
        if "->" in fields:
            continue
        if len(fields) >= 6 and fields[5].rsplit(":", 1)[-1] == str(inode):
            pid = fields[4]
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").strip()
            except OSError:
                cmd = b"?"
            return f"pid {pid} ({cmd.decode(errors='replace')[:80]})"
    return None


def dialout_hint(port: str) -> str:
    try:
        group = grp.getgrgid(Path(port).stat().st_gid).gr_name
    except (OSError, KeyError):
        group = "dialout"
    return f"add the user to the {group} group (sudo usermod -aG {group} $USER) and log in again"


def check_port(port: str) -> None:
    """Raise :class:`InputError` (missing, no permission) or :class:`PortBusy` unless ``port``
    can be opened for our exclusive use right now."""
    try:
        mode = Path(port).stat().st_mode
    except FileNotFoundError:
        raise InputError(
            f"serial port {port} does not exist (is the RS-485 adapter plugged in? "
            "see ls /dev/ttyUSB* /dev/serial/by-id/)",
            field="port",
        ) from None
    except OSError as exc:
        raise InputError(f"serial port {port}: {exc.strerror}", field="port") from None
    if not stat.S_ISCHR(mode):
        raise InputError(f"{port} is not a serial device", field="port")
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except PermissionError:
        raise InputError(
            f"no permission to open {port}: {dialout_hint(port)}", field="port"
        ) from None
    except OSError as exc:
        if exc.errno == errno.EBUSY:
            raise PortBusy(port, "opened exclusively (TIOCEXCL) by another process") from None
        raise InputError(f"cannot open {port}: {exc.strerror}", field="port") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(port) or "another process"
        raise PortBusy(port, f"locked by {holder}") from None
    finally:
        os.close(fd)  # also drops our lock


#: Linux device majors of Unix98 pseudo-terminal slaves (Documentation/admin-guide/devices.txt).
_PTY_MAJORS = range(136, 144)


def is_pty(port: str) -> bool:
    """Whether ``port`` is a pseudo-terminal (the simulator's line). Linux forces 8 bits and
    no parity on one: asking for parity E fails in tcsetattr, and may leave the port locked."""
    try:
        return os.major(Path(port).stat().st_rdev) in _PTY_MAJORS
    except OSError:
        return False


def serial_ports(links: Sequence[SerialLink | TcpLink]) -> list[str]:
    return sorted({link.port for link in links if isinstance(link, SerialLink)})


def open_bus(link: SerialLink | TcpLink, timing: BusTiming) -> ModbusBus:
    """A bus for this link; a serial port is checked first (missing, permissions, busy)."""
    from edge_agent.meters.bus import ModbusBus  # noqa: PLC0415 -- pymodbus when used

    if isinstance(link, SerialLink):
        check_port(link.port)
    return ModbusBus(link, timing)


async def read_map(bus: ModbusBus, unit: int, register_map: RegisterMap) -> dict[Quantity, float]:
    """Read every block of ``register_map`` from ``unit``; raises the bus's ``BusError``."""
    answers = []
    for block in plan_blocks(register_map):
        words = await bus.read_registers(unit, block.function_code, block.start, block.count)
        answers.append((block, words))
    return decode_blocks(register_map, answers)


#: A block the meter refused: its label, its quantities, the Modbus exception code.
RefusedInfo = tuple[str, tuple[str, ...], int]


async def read_configured(
    bus: ModbusBus, meter: MeterSettings
) -> tuple[dict[Quantity, float], list[RefusedInfo]]:
    """Read ``meter`` as the agent does — its own map, its chosen quantities, a refused block
    costing only its quantities — and say which blocks were refused. Raises the bus's
    ``BusError`` when the read fails (every block refused included), MeterError for garbage."""
    from edge_agent.meters.blocks import read_blocks  # noqa: PLC0415
    from protocols.errors import DecodeError, RegisterMapError  # noqa: PLC0415

    try:
        register_map = register_map_of(meter)
        read = await read_blocks(
            bus, meter.unit_id, plan_blocks(register_map, quantities=meter.quantities)
        )
        if read.refused and not read.answers:
            raise read.refused[0][1]
        values = decode_blocks(register_map, read.answers)
    except (DecodeError, RegisterMapError) as exc:
        raise MeterError(str(exc), meter_id=meter.id) from exc
    refused = [
        (block.label, tuple(q.value for q in block.quantities), exc.exception_code or 0)
        for block, exc in read.refused
    ]
    return values, refused


async def read_meter_blocks(
    meter: MeterSettings, timing: BusTiming
) -> tuple[dict[Quantity, float], list[RefusedInfo]]:
    """One reading of ``meter`` straight from the bus, with the blocks it refused."""
    async with open_bus(meter.link, timing) as bus:
        return await read_configured(bus, meter)


async def read_meter(meter: MeterSettings, timing: BusTiming) -> dict[Quantity, float]:
    """One reading of ``meter`` straight from the bus (MeterError when it fails)."""
    values, _ = await read_meter_blocks(meter, timing)
    return values


def port_of(link: SerialLink | TcpLink) -> str:
    if isinstance(link, SerialLink):
        return f"{link.port} {link.baud} {link.parity}{link.stop_bits}"
    return f"{link.host}:{link.port}"


class DirectSite:
    """The configured buses, relays and meters, opened on demand and closed together
    (``async with DirectSite(settings) as site``): one bus per line, shared by the meter
    and relay on it, as in the agent."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.buses: dict[str, ModbusBus] = {}

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        for bus in self.buses.values():
            bus.close()
        self.buses.clear()

    def bus(self, link: SerialLink | TcpLink) -> ModbusBus:
        if link.bus_key not in self.buses:
            self.buses[link.bus_key] = open_bus(link, self.settings.bus)
        return self.buses[link.bus_key]

    def relay(self, connector: int) -> RelayDriver:
        from edge_agent.relay.drivers import make_driver  # noqa: PLC0415

        relay = self.settings.connector(connector).relay
        if isinstance(relay, ModbusCoilRelay):
            self.bus(relay.link)
        return make_driver(relay, connector=connector, buses=self.buses)

    async def read(self, meter_id: str) -> dict[Quantity, float]:
        """One reading (raises the bus's errors, or MeterError for garbage)."""
        meter = self.settings.meter(meter_id)
        values, _ = await read_configured(self.bus(meter.link), meter)
        return values
