"""The running simulator: one composition root that opens every endpoint of a site.

``async with SimSite(SimConfig(...)) as sim:`` starts the Modbus TCP server, the RTU bus on
a pseudo-terminal, the RFID reader and keypad ptys, the relay file watcher and the control
interface (each only if configured), and stops them all on exit, saving the state file.
``sim.endpoints()`` says where everything is; the control methods (``plug``, ``set_fault``,
``tap`` …) are the ones the HTTP control interface calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from firmware_sim.bus import Bus
from firmware_sim.clock import Clock, ManualClock, SystemClock
from firmware_sim.control import ControlServer
from firmware_sim.errors import ConfigError, ControlError
from firmware_sim.ev import Profile
from firmware_sim.faults import FaultKind, make_fault
from firmware_sim.keys import encode_events, key_events
from firmware_sim.rfid import rdm6300_frame
from firmware_sim.rtu import RtuServer
from firmware_sim.serial_line import PseudoTerminal
from firmware_sim.site import MeterSpec, Site, check_unit
from firmware_sim.tcp import TcpServer

log = logging.getLogger(__name__)

#: Baud rates RS-485 meters offer (Eastron, ABB, Schneider manuals).
STANDARD_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
#: How often the relay file (GPIO stand-in) is looked at.
RELAY_FILE_POLL_S = 0.05


@dataclass(frozen=True)
class SimConfig:
    """What to simulate and where to serve it. Validated on construction."""

    meters: tuple[MeterSpec, ...] = (MeterSpec("sdm630", 1),)
    #: Unit id of the Modbus coil relay on the bus (and on TCP), or None.
    relay_unit: int | None = None
    #: Initial relay state (a site with a relay starts open: fail-safe).
    relay_closed: bool = False
    #: GPIO stand-in: a file holding "1" (relay closed) or "0", written by the agent.
    relay_file: Path | None = None
    #: Modbus TCP listen address, or None.
    tcp: tuple[str, int] | None = None
    #: Serve the bus as Modbus RTU on a pseudo-terminal.
    serial: bool = False
    baud: int = 9600
    parity: str = "N"
    #: Devices answer only a client whose line speed is theirs (a meter's own ``baud``, else
    #: ``baud``), as on a real RS-485 line. Always on when a meter has its own baud.
    check_baud: bool = False
    turnaround_s: float = 0.02
    rfid: bool = False
    keys: bool = False
    #: Control interface listen address, or None.
    control: tuple[str, int] | None = ("127.0.0.1", 0)
    state_path: Path | None = None
    seed: int = 0
    save_interval_s: float = 1.0
    #: Plug an EV with this profile in at start (else: whatever the state file says).
    plugged: Profile | None = None

    def __post_init__(self) -> None:
        if not self.meters:
            raise ConfigError("a site needs at least one meter", field="meters")
        if self.baud not in STANDARD_BAUDS:
            raise ConfigError(
                f"baud {self.baud} is not a standard rate; use one of "
                f"{', '.join(map(str, STANDARD_BAUDS))}",
                field="baud",
            )
        for meter in self.meters:
            if meter.baud is not None and meter.baud not in STANDARD_BAUDS:
                raise ConfigError(
                    f"meter {meter.unit}: baud {meter.baud} is not a standard rate", field="baud"
                )
        if self.parity not in ("N", "E", "O"):
            raise ConfigError(f"parity {self.parity!r}: expected N, E or O", field="parity")
        if not 0 <= self.turnaround_s <= 10:
            raise ConfigError(f"turnaround {self.turnaround_s} s outside 0..10", field="turnaround")
        if self.relay_unit is not None:
            check_unit(self.relay_unit)
            if self.relay_unit in {m.unit for m in self.meters}:
                raise ConfigError(
                    f"relay unit id {self.relay_unit} is already a meter's", field="relay_unit"
                )


class SimSite:
    """A running simulated site (async context manager)."""

    def __init__(self, config: SimConfig, *, clock: Clock | None = None) -> None:
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.site = Site(
            config.meters,
            clock=self.clock,
            relay_closed=config.relay_closed,
            state_path=config.state_path,
            seed=config.seed,
        )
        if config.plugged is not None:
            self.site.plug(config.plugged)
        self.bus = Bus(self.site, relay_unit=config.relay_unit)
        self.tcp: TcpServer | None = None
        self.serial: PseudoTerminal | None = None
        self.rfid: PseudoTerminal | None = None
        self.keypad: PseudoTerminal | None = None
        self.control: ControlServer | None = None
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []

    def device_bauds(self) -> dict[int, int] | None:
        """Each device's line speed when speeds are checked (see ``check_baud``), else None."""
        cfg = self.config
        if not cfg.check_baud and all(m.baud is None for m in cfg.meters):
            return None
        bauds = dict.fromkeys(self.bus.devices, cfg.baud)
        bauds.update({m.unit: m.baud for m in cfg.meters if m.baud is not None})
        return bauds

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> SimSite:
        stack = self._stack
        try:
            cfg = self.config
            if cfg.tcp is not None:
                self.tcp = await stack.enter_async_context(TcpServer(self.bus, *cfg.tcp))
            if cfg.serial:
                self.serial = await stack.enter_async_context(PseudoTerminal("serial"))
            if cfg.rfid:
                self.rfid = await stack.enter_async_context(PseudoTerminal("rfid"))
            if cfg.keys:
                self.keypad = await stack.enter_async_context(PseudoTerminal("keys"))
            if cfg.relay_file is not None:
                self._write_relay_file(self.site.relay_closed)
            if cfg.control is not None:
                self.control = await stack.enter_async_context(ControlServer(self, *cfg.control))
            stack.callback(self.site.save)
            group = await stack.enter_async_context(asyncio.TaskGroup())
            stack.push_async_callback(self._stop_tasks)
            if self.serial is not None:
                rtu = RtuServer(
                    self.bus,
                    self.serial,
                    baud=cfg.baud,
                    turnaround_s=cfg.turnaround_s,
                    device_bauds=self.device_bauds(),
                )
                self._tasks.append(group.create_task(rtu.serve(), name="sim-rtu"))
            if cfg.state_path is not None:
                self._tasks.append(group.create_task(self._save_loop(), name="sim-save"))
            if cfg.relay_file is not None:
                self._tasks.append(group.create_task(self._relay_file_loop(), name="sim-relay"))
        except BaseException:
            await stack.aclose()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stack.__aexit__(exc_type, exc, tb)

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _save_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.save_interval_s)
            self.site.save_if_changed()

    def _write_relay_file(self, closed: bool) -> None:
        assert self.config.relay_file is not None
        self.config.relay_file.write_text("1\n" if closed else "0\n", "ascii")

    async def _relay_file_loop(self) -> None:
        path = self.config.relay_file
        assert path is not None
        last = ""
        while True:
            try:
                text = path.read_text("ascii").strip()
            except (OSError, UnicodeDecodeError):
                text = last  # being rewritten, or removed: keep the last level
            if text != last:
                if text in ("0", "1"):
                    self.site.set_relay(text == "1")
                else:
                    log.warning("relay file %s holds %r, expected 0 or 1", path, text)
                last = text
            await asyncio.sleep(RELAY_FILE_POLL_S)

    # --- where things are -----------------------------------------------------------------

    def endpoints(self) -> dict[str, Any]:
        """Where a client connects (the CLI prints this as one JSON line when ready)."""
        cfg = self.config
        return {
            "tcp": None if self.tcp is None else f"{self.tcp.address[0]}:{self.tcp.address[1]}",
            "serial": None if self.serial is None else self.serial.path,
            "baud": cfg.baud if self.serial is not None else None,
            "parity": cfg.parity if self.serial is not None else None,
            "control": None if self.control is None else self.control.url,
            "meters": {str(m.unit): m.model for m in cfg.meters},
            "relay_unit": cfg.relay_unit,
            "relay_file": None if cfg.relay_file is None else str(cfg.relay_file),
            "rfid": None if self.rfid is None else self.rfid.path,
            "keys": None if self.keypad is None else self.keypad.path,
            "state": None if cfg.state_path is None else str(cfg.state_path),
        }

    # --- control (also what the HTTP control interface calls) -----------------------------

    def snapshot(self) -> dict[str, Any]:
        return self.site.snapshot()

    def plug(self, profile: str, *, soc: float = 0.2, capacity_wh: float = 40_000.0) -> None:
        self.site.plug(Profile.parse(profile), soc=soc, capacity_wh=capacity_wh)
        self.site.save()

    def unplug(self) -> None:
        self.site.unplug()
        self.site.save()

    def set_relay(self, closed: bool) -> None:
        self.site.set_relay(closed)
        if self.config.relay_file is not None:
            self._write_relay_file(closed)

    def set_fault(self, kind: str, **params: Any) -> dict[str, Any]:
        """Switch a fault on; ``params`` as in :func:`~firmware_sim.faults.make_fault`."""
        known = {
            "unit",
            "for_s",
            "exception_code",
            "turnaround_s",
            "drop_ratio",
            "overcurrent_ratio",
            "first_address",
            "last_address",
        }
        unknown = set(params) - known
        if unknown:
            raise ConfigError(
                f"unknown fault parameter(s): {', '.join(sorted(unknown))}", field="params"
            )
        try:
            fault = make_fault(kind, now_s=self.site.sync(), **params)
        except TypeError as exc:
            raise ConfigError(f"bad fault parameter: {exc}", field="params") from exc
        if fault.unit is not None and fault.unit not in self.bus.devices:
            raise ConfigError(f"no device with unit id {fault.unit} on this bus", field="unit")
        self.site.set_fault(fault)
        return fault.to_json(self.site.sync())

    def clear_faults(self, kind: str | None = None, unit: int | None = None) -> int:
        """Switch faults off (all kinds when ``kind`` is None); how many were on."""
        return len(self.site.clear_faults(None if kind is None else FaultKind.parse(kind), unit))

    def tap(self, tag: str, *, frames: int = 1) -> None:
        """Hold ``tag`` to the RFID reader. A real RDM6300 repeats its frame for as long as
        the card lies on it: ``frames`` > 1 is a card held there (back to back)."""
        frame = rdm6300_frame(tag)
        if self.rfid is None:
            raise ControlError("this simulator has no RFID reader (start it with --rfid)")
        if frames < 1:
            raise ConfigError("frames must be at least 1", field="frames")
        self.rfid.write(frame * frames)

    def keys(self, text: str) -> None:
        """Type ``text`` on the keypad / QR scanner stand-in."""
        events = key_events(text)
        if self.keypad is None:
            raise ControlError("this simulator has no keypad (start it with --keys)")
        self.keypad.write(encode_events(events))

    def advance(self, seconds: float) -> None:
        """Step simulated time (only when the simulator runs on a manual clock)."""
        if not isinstance(self.clock, ManualClock):
            raise ControlError("the simulator runs on the real clock; start it with --manual-clock")
        if seconds < 0:
            raise ConfigError("seconds must not be negative", field="seconds")
        self.clock.advance(seconds)
