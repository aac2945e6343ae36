"""Injected faults: what can go wrong on a meter bus, and which faults are on right now.

Pure bookkeeping: the table stores faults with their scope (one unit id, or the whole bus
when ``unit`` is None) and their expiry on the simulation clock. What each fault *does*
lives where it acts: the bus (:mod:`firmware_sim.bus`: exception), the transports
(:mod:`firmware_sim.rtu`, :mod:`firmware_sim.tcp`: timeout, crc, flapping, slow) and the
site (:mod:`firmware_sim.site`: frozen, reset, overcurrent, welded).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from firmware_sim.errors import ConfigError


class FaultKind(StrEnum):
    #: The addressed meter (or the whole bus) does not answer: the client times out.
    TIMEOUT = "timeout"
    #: Answers arrive with a wrong CRC (RTU only: Modbus TCP has no CRC).
    CRC = "crc"
    #: Every request is answered with a Modbus exception (``exception_code``, default 4).
    EXCEPTION = "exception"
    #: The register image stops updating (a hung meter CPU still answering).
    FROZEN = "frozen"
    #: The meter was reset/replaced: its energy registers restart from zero (jump back).
    RESET = "reset"
    #: The EV draws ``overcurrent_ratio`` times its rated current.
    OVERCURRENT = "overcurrent"
    #: Intermittent silence: each frame is dropped with probability ``drop_ratio``.
    FLAPPING = "flapping"
    #: The meter takes ``turnaround_s`` to answer instead of its configured turnaround.
    SLOW = "slow"
    #: The contactor is welded closed: power flows whatever the relay's coil says (the coil
    #: still reads back what was last written to it). ``unit`` is ignored.
    WELDED = "welded"
    #: The meter lacks registers ``first_address``..``last_address`` (an older firmware or a
    #: cheaper variant of the model): a register read touching them is answered with
    #: ``exception_code`` (default 2, illegal data address); the rest of the map reads as usual.
    REFUSE = "refuse"

    @classmethod
    def parse(cls, text: str) -> FaultKind:
        try:
            return cls(text.lower())
        except ValueError:
            known = ", ".join(k.value for k in cls)
            raise ConfigError(f"unknown fault {text!r}; known: {known}", field="kind") from None


@dataclass(frozen=True, slots=True)
class Fault:
    kind: FaultKind
    #: The unit id it affects, or None for every device on the bus.
    unit: int | None = None
    #: Simulation-clock time it switches itself off, or None (until cleared).
    until_s: float | None = None
    exception_code: int = 4
    turnaround_s: float = 0.7
    drop_ratio: float = 0.5
    overcurrent_ratio: float = 1.5
    #: The register range a ``refuse`` fault takes away (zero-based, inclusive).
    first_address: int = 0
    last_address: int = 0xFFFF

    def applies_to(self, unit: int) -> bool:
        return self.unit is None or self.unit == unit

    def refuses(self, start: int, count: int) -> bool:
        """Whether a read of ``count`` registers from ``start`` touches the refused range."""
        return start <= self.last_address and self.first_address <= start + count - 1

    def to_json(self, now_s: float) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "unit": self.unit,
            "remaining_s": None if self.until_s is None else max(0.0, self.until_s - now_s),
            "exception_code": self.exception_code,
            "turnaround_s": self.turnaround_s,
            "drop_ratio": self.drop_ratio,
            "overcurrent_ratio": self.overcurrent_ratio,
            "first_address": self.first_address,
            "last_address": self.last_address,
        }


def make_fault(
    kind: str,
    *,
    unit: int | None = None,
    for_s: float | None = None,
    now_s: float = 0.0,
    exception_code: int | None = None,
    turnaround_s: float | None = None,
    drop_ratio: float | None = None,
    overcurrent_ratio: float | None = None,
    first_address: int | None = None,
    last_address: int | None = None,
) -> Fault:
    """Validate user input into a :class:`Fault` (ConfigError naming the bad field)."""
    fault = Fault(FaultKind.parse(kind), unit=unit)
    if fault.kind is FaultKind.REFUSE:
        # Modbus Application Protocol v1.1b3 §7: what a meter answers for registers it lacks.
        fault = replace(fault, exception_code=2)
    if first_address is not None:
        fault = replace(fault, first_address=_address("first_address", first_address))
    if last_address is not None:
        fault = replace(fault, last_address=_address("last_address", last_address))
    if fault.first_address > fault.last_address:
        raise ConfigError(
            f"first_address {fault.first_address} is after last_address {fault.last_address}",
            field="first_address",
        )
    if unit is not None and not 0 < unit < 248:
        raise ConfigError(f"unit id {unit} outside 1..247", field="unit")
    if for_s is not None:
        if for_s <= 0:
            raise ConfigError(f"fault duration {for_s} s must be positive", field="for_s")
        fault = replace(fault, until_s=now_s + for_s)
    if exception_code is not None:
        if not 1 <= exception_code <= 255:
            raise ConfigError(f"exception code {exception_code} outside 1..255", field="code")
        fault = replace(fault, exception_code=exception_code)
    if turnaround_s is not None:
        if not 0 <= turnaround_s <= 60:
            raise ConfigError(f"turnaround {turnaround_s} s outside 0..60", field="turnaround")
        fault = replace(fault, turnaround_s=turnaround_s)
    if drop_ratio is not None:
        if not 0 < drop_ratio <= 1:
            raise ConfigError(f"drop ratio {drop_ratio} outside (0, 1]", field="drop_ratio")
        fault = replace(fault, drop_ratio=drop_ratio)
    if overcurrent_ratio is not None:
        if not 1 < overcurrent_ratio <= 10:
            raise ConfigError(
                f"overcurrent ratio {overcurrent_ratio} outside (1, 10]", field="ratio"
            )
        fault = replace(fault, overcurrent_ratio=overcurrent_ratio)
    return fault


def _address(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} {value!r} is not an integer", field=name)
    if not 0 <= value <= 0xFFFF:
        raise ConfigError(f"{name} {value} outside 0..65535", field=name)
    return value


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h)?\s*$")


def parse_duration_s(text: str) -> float:
    """``"10s"``, ``"500ms"``, ``"2m"``, ``"1h"`` or a bare number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise ConfigError(f"bad duration {text!r}; e.g. 10s, 500ms, 2m", field="for")
    value = float(match.group(1))
    factor = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}
    seconds = value * factor[match.group(2)]
    if seconds <= 0:
        raise ConfigError(f"duration {text!r} must be positive", field="for")
    return seconds


class FaultTable:
    """The faults switched on now, at most one per (kind, unit)."""

    def __init__(self) -> None:
        self._faults: dict[tuple[FaultKind, int | None], Fault] = {}

    def set(self, fault: Fault) -> None:
        self._faults[(fault.kind, fault.unit)] = fault

    def clear(self, kind: FaultKind | None = None, unit: int | None = None) -> list[Fault]:
        """Switch off faults of ``kind`` (all kinds when None) on ``unit`` (any when None)."""
        gone = [
            f
            for f in self._faults.values()
            if (kind is None or f.kind is kind) and (unit is None or f.unit == unit)
        ]
        for f in gone:
            del self._faults[(f.kind, f.unit)]
        return gone

    def expire(self, now_s: float) -> list[Fault]:
        """Drop faults whose time is up; return them."""
        gone = [f for f in self._faults.values() if f.until_s is not None and f.until_s <= now_s]
        for f in gone:
            del self._faults[(f.kind, f.unit)]
        return gone

    def find(self, kind: FaultKind, unit: int) -> Fault | None:
        """The fault of ``kind`` acting on ``unit`` (a unit-specific one wins over bus-wide)."""
        return self._faults.get((kind, unit)) or self._faults.get((kind, None))

    def active(self) -> list[Fault]:
        return list(self._faults.values())
