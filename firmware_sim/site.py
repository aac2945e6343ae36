"""The simulated site: meters on one charging circuit with a relay and an EV. Pure core.

:class:`Site` holds the physics (:mod:`firmware_sim.ev`), the injected faults
(:mod:`firmware_sim.faults`) and the meters' register maps, and answers two questions: what
are the physical values now (what the control interface reports), and what does a meter's
register image hold now (what a Modbus client reads). It does no I/O except reading and
writing its state file when asked; time comes from a :class:`~firmware_sim.clock.Clock` and
the circuit is brought up to date lazily, whenever someone looks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_sim.clock import Clock
from firmware_sim.electrical import grid_at, meter_quantities
from firmware_sim.errors import ConfigError
from firmware_sim.ev import Circuit, Ev, Profile
from firmware_sim.faults import Fault, FaultKind, FaultTable
from firmware_sim.state import SavedState, load_state, save_state
from protocols.meters import Quantity, RegisterMap, available_models, encode_registers, load_map

Phases = tuple[float, float, float]


@dataclass(frozen=True, slots=True)
class MeterSpec:
    """One meter on the bus: its model (a register map in :mod:`protocols.meters`), its unit,
    and the baud rate it is set to (None: the bus's). A meter set to another speed than the
    line's sees garbage and stays silent (the RTU server checks when asked to)."""

    model: str
    unit: int
    baud: int | None = None

    @classmethod
    def parse(cls, text: str) -> MeterSpec:
        """``"sdm630:3"``, ``"sdm630:3@19200"`` (or ``"sdm630"`` for unit 1)."""
        spec, _, baud = text.partition("@")
        model, _, unit = spec.partition(":")
        try:
            unit_id = int(unit) if unit else 1
        except ValueError:
            raise ConfigError(f"bad unit id in {text!r}", field="unit") from None
        try:
            baud_rate = int(baud) if baud else None
        except ValueError:
            raise ConfigError(f"bad baud rate in {text!r}", field="baud") from None
        return cls.checked(model, unit_id, baud_rate)

    @classmethod
    def checked(cls, model: str, unit: int, baud: int | None = None) -> MeterSpec:
        if model not in available_models():
            raise ConfigError(
                f"unknown meter model {model!r}; known models: {', '.join(available_models())}",
                field="model",
            )
        check_unit(unit)
        return cls(model, unit, baud)


def check_unit(unit: int) -> int:
    # Modbus over Serial Line §2.2: 1..247 are device addresses, 0 is broadcast.
    if not 1 <= unit <= 247:
        raise ConfigError(f"unit id {unit} outside 1..247", field="unit")
    return unit


class Site:
    """Meters, relay, EV and faults, at the clock's current time."""

    def __init__(
        self,
        meters: Sequence[MeterSpec],
        *,
        clock: Clock,
        relay_closed: bool = False,
        state_path: Path | None = None,
        seed: int = 0,
    ) -> None:
        units = [m.unit for m in meters]
        if len(set(units)) != len(units):
            raise ConfigError(f"two meters share a unit id: {units}", field="unit")
        self.clock = clock
        self.seed = seed
        self.maps: dict[int, RegisterMap] = {m.unit: load_map(m.model) for m in meters}
        self.state_path = state_path
        saved = load_state(state_path) if state_path is not None else SavedState()
        ev = None
        if saved.ev is not None:
            profile, capacity_wh, soc = saved.ev
            ev = Ev(profile, capacity_wh, soc)
        self.circuit = Circuit(relay_closed=relay_closed, ev=ev, energy_wh=list(saved.energy_wh))
        #: What the relay's coil was last told; the contactor follows it unless welded.
        self._coil = relay_closed
        self.faults = FaultTable()
        self._t_s = clock.now_s()
        self._frozen: dict[int, tuple[Fault, dict[int, int]]] = {}
        self._reset_base: dict[int, tuple[Fault, Phases]] = {}
        self._saved_energy_wh = sum(self.circuit.energy_wh)

    # --- time -----------------------------------------------------------------------------

    def sync(self) -> float:
        """Bring the circuit up to the clock's now, switching faults off on their expiry."""
        now = self.clock.now_s()
        while True:
            ends = [f.until_s for f in self.faults.active() if f.until_s is not None]
            step_to = min([now, *ends])
            if step_to > self._t_s:
                self.circuit.advance(step_to - self._t_s)
                self._t_s = step_to
            if not self.faults.expire(step_to):
                break
            self._apply_circuit_faults()
        return now

    def _apply_circuit_faults(self) -> None:
        over = [f for f in self.faults.active() if f.kind is FaultKind.OVERCURRENT]
        self.circuit.overcurrent_ratio = max((f.overcurrent_ratio for f in over), default=1.0)
        # Welded contacts conduct whatever the coil says; once repaired they follow it again.
        self.circuit.relay_closed = True if self._welded() else self._coil

    def _welded(self) -> bool:
        return any(f.kind is FaultKind.WELDED for f in self.faults.active())

    # --- actions --------------------------------------------------------------------------

    def plug(self, profile: Profile, *, soc: float = 0.2, capacity_wh: float = 40_000.0) -> None:
        if not 0 <= soc <= 1:
            raise ConfigError(f"state of charge {soc} outside 0..1", field="soc")
        if not capacity_wh > 0:
            raise ConfigError(
                f"battery capacity {capacity_wh} Wh must be positive", field="capacity"
            )
        self.sync()
        self.circuit.ev = Ev(profile, capacity_wh, soc)

    def unplug(self) -> None:
        self.sync()
        self.circuit.ev = None

    def set_relay(self, closed: bool) -> None:
        """Drive the relay's coil; the contactor follows unless it is welded."""
        self.sync()
        self._coil = closed
        self._apply_circuit_faults()

    @property
    def relay_closed(self) -> bool:
        """Whether the contactor conducts (power can flow)."""
        return self.circuit.relay_closed

    @property
    def coil_closed(self) -> bool:
        """What the relay module's coil reads back (the last command)."""
        return self._coil

    def set_fault(self, fault: Fault) -> None:
        self.sync()
        if fault.unit is not None and fault.unit not in self.maps and fault.kind in _METER_FAULTS:
            raise ConfigError(f"no meter with unit id {fault.unit} on this site", field="unit")
        self.faults.set(fault)
        if fault.kind is FaultKind.FROZEN:
            for unit in self._units_of(fault):
                self._frozen[unit] = (fault, self._live_image(unit))
        elif fault.kind is FaultKind.RESET:
            base = (self.circuit.energy_wh[0], self.circuit.energy_wh[1], self.circuit.energy_wh[2])
            for unit in self._units_of(fault):
                self._reset_base[unit] = (fault, base)
        self._apply_circuit_faults()

    def clear_faults(self, kind: FaultKind | None = None, unit: int | None = None) -> list[Fault]:
        self.sync()
        gone = self.faults.clear(kind, unit)
        self._apply_circuit_faults()
        return gone

    def _units_of(self, fault: Fault) -> list[int]:
        return [u for u in self.maps if fault.applies_to(u)]

    # --- what is measured -----------------------------------------------------------------

    def values(self, unit: int) -> dict[Quantity, float]:
        """The physical values meter ``unit`` measures now (faults on the circuit included)."""
        self.sync()
        return self._values(unit)

    def _values(self, unit: int) -> dict[Quantity, float]:
        register_map = self.maps[unit]
        energy: Phases = (
            self.circuit.energy_wh[0],
            self.circuit.energy_wh[1],
            self.circuit.energy_wh[2],
        )
        reset = self._reset_base.get(unit)
        if reset is not None and self.faults.find(FaultKind.RESET, unit) is reset[0]:
            base = reset[1]
            # A replacement meter counts from zero: the register jumps back.
            energy = (energy[0] - base[0], energy[1] - base[1], energy[2] - base[2])
        return meter_quantities(
            phases=register_map.phases,
            grid=grid_at(self._t_s, self.seed),
            phase_power_w=self.circuit.phase_power_w(),
            import_wh=energy,
            export_wh=0.0,
        )

    def _live_image(self, unit: int) -> dict[int, int]:
        register_map = self.maps[unit]
        quantities = self._values(unit)
        wanted = {r.quantity: quantities.get(r.quantity) for r in register_map.registers}
        return encode_registers(register_map, wanted)

    def image(self, unit: int) -> dict[int, int]:
        """Meter ``unit``'s register image as a client reads it now (frozen if frozen)."""
        self.sync()
        frozen = self._frozen.get(unit)
        if frozen is not None and self.faults.find(FaultKind.FROZEN, unit) is frozen[0]:
            return frozen[1]
        return self._live_image(unit)

    # --- reports and persistence ----------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Everything the control interface reports (``GET /state``)."""
        now = self.sync()
        ev = self.circuit.ev
        return {
            "clock_s": now,
            "relay_closed": self.circuit.relay_closed,
            "ev": None
            if ev is None
            else {
                "profile": ev.profile.value,
                "soc": ev.soc,
                "capacity_wh": ev.capacity_wh,
                "full": ev.full,
            },
            "power_w": sum(self.circuit.phase_power_w()),
            "circuit_energy_wh": list(self.circuit.energy_wh),
            "meters": {
                str(unit): {
                    "model": register_map.model,
                    "unit": unit,
                    "values": {q.value: v for q, v in self._values(unit).items()},
                }
                for unit, register_map in self.maps.items()
            },
            "faults": [f.to_json(now) for f in self.faults.active()],
        }

    def saved_state(self) -> SavedState:
        ev = self.circuit.ev
        return SavedState(
            list(self.circuit.energy_wh),
            None if ev is None else (ev.profile, ev.capacity_wh, ev.soc),
        )

    def save(self) -> None:
        """Write the state file (if any)."""
        if self.state_path is not None:
            self.sync()
            save_state(self.state_path, self.saved_state())
            self._saved_energy_wh = sum(self.circuit.energy_wh)

    def save_if_changed(self) -> bool:
        """Write the state file if energy flowed since the last write."""
        self.sync()
        if self.state_path is None or sum(self.circuit.energy_wh) == self._saved_energy_wh:
            return False
        self.save()
        return True


#: Faults that act on a meter, so their unit must be a meter's.
_METER_FAULTS = frozenset({FaultKind.FROZEN, FaultKind.RESET})
