"""Register maps: what a meter holds where, loaded from the TOML data files beside this module.

A map is data, not code: adding a meter model means adding a TOML file (with the manual it
was taken from), not writing a driver. Loading validates the file once; a bad map fails with
the model and the register at fault.
"""

from __future__ import annotations

import functools
import itertools
import math
import tomllib
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from typing import Any

from protocols.errors import RegisterMapError
from protocols.meters.quantities import REQUIRED_QUANTITIES, Quantity

#: Modbus addresses are 16 bits.
ADDRESS_SPACE = 65536


class DataType(StrEnum):
    UINT16 = "uint16"
    INT16 = "int16"
    UINT32 = "uint32"
    INT32 = "int32"
    UINT64 = "uint64"
    INT64 = "int64"
    FLOAT32 = "float32"

    @property
    def width(self) -> int:
        """Number of 16-bit registers the type occupies."""
        return {"16": 1, "32": 2, "64": 4}[self.value[-2:]]

    @property
    def signed(self) -> bool:
        return self.value.startswith("int")


class WordOrder(StrEnum):
    #: Most significant register first (Modbus convention; Eastron, ABB, Schneider).
    BIG = "big"
    #: Least significant register first (some Chinese DIN-rail meters).
    LITTLE = "little"


class Function(StrEnum):
    """Modbus read function: the register table the map lives in."""

    HOLDING = "holding"  # function code 3
    INPUT = "input"  # function code 4

    @property
    def code(self) -> int:
        return 3 if self is Function.HOLDING else 4


@dataclass(frozen=True, slots=True)
class Register:
    """One quantity in a meter: where it is, how it is encoded, how to scale it.

    ``physical = raw * scale`` gives the unit in the quantity's name (W, Wh, V, A, Hz).
    ``not_available`` is the raw value the meter uses for "no value" (for float32, NaN is
    always treated as not available).
    """

    quantity: Quantity
    address: int
    data_type: DataType
    scale: float = 1.0
    source_unit: str = ""
    not_available: int | None = None

    @property
    def width(self) -> int:
        return self.data_type.width

    @property
    def end(self) -> int:
        """One past the last register this quantity occupies."""
        return self.address + self.width


@dataclass(frozen=True, slots=True)
class Window:
    """An address range (inclusive) the meter answers as a whole.

    Reading any address inside it succeeds; addresses no quantity occupies read as ``fill``.
    Outside every window a real meter answers Modbus exception 2 (illegal data address), so
    the block planner never reads across a window's edge.
    """

    first: int
    last: int
    fill: int = 0

    def __contains__(self, address: object) -> bool:
        return isinstance(address, int) and self.first <= address <= self.last


@dataclass(frozen=True, slots=True)
class SerialDefaults:
    """The meter's factory serial settings (where `meter scan` starts looking)."""

    baud: int
    parity: str  # "N", "E" or "O"
    stop_bits: int
    unit_id: int


@dataclass(frozen=True)  # no slots: cached_property needs the instance __dict__
class RegisterMap:
    model: str
    name: str
    source: str
    function: Function
    word_order: WordOrder
    phases: int
    serial: SerialDefaults
    registers: tuple[Register, ...]
    windows: tuple[Window, ...]

    @functools.cached_property
    def by_quantity(self) -> dict[Quantity, Register]:
        return {r.quantity: r for r in self.registers}

    def window_of(self, address: int) -> Window | None:
        """The readable window holding ``address``, or None (the meter would answer exc. 2)."""
        for window in self.windows:
            if address in window:
                return window
        return None


def available_models() -> tuple[str, ...]:
    """Models with a map file in this package, sorted."""
    files = resources.files("protocols.meters")
    return tuple(sorted(f.name[:-5] for f in files.iterdir() if f.name.endswith(".toml")))


@functools.cache
def load_map(model: str) -> RegisterMap:
    """Load and validate the map of ``model`` (e.g. ``"sdm630"``). Cached: maps are immutable."""
    if model not in available_models():
        raise RegisterMapError(
            f"unknown meter model {model!r}; known models: {', '.join(available_models())}",
            model=model,
        )
    text = resources.files("protocols.meters").joinpath(f"{model}.toml").read_text("utf-8")
    return parse_map_text(model, text)


def parse_map_text(model: str, text: str) -> RegisterMap:
    """A map from the text of a TOML file in the catalogue's format (a site's own map file,
    read by the agent): the same checks as every catalogue map."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegisterMapError(f"{model}: not valid TOML: {exc}", model=model) from exc
    return parse_map(model, data)


def parse_map(model: str, data: dict[str, Any]) -> RegisterMap:
    """Build a :class:`RegisterMap` from the parsed TOML document and check it is consistent."""

    def fail(message: str) -> RegisterMapError:
        return RegisterMapError(f"register map {model!r}: {message}", model=model)

    try:
        registers = tuple(
            Register(
                quantity=Quantity(r["quantity"]),
                address=int(r["address"]),
                data_type=DataType(r["type"]),
                scale=float(r.get("scale", 1.0)),
                source_unit=str(r.get("source_unit", "")),
                not_available=r.get("not_available"),
            )
            for r in data["registers"]
        )
        serial = data["serial"]
        parsed = RegisterMap(
            model=model,
            name=str(data["name"]),
            source=str(data["source"]),
            function=Function(data["function"]),
            word_order=WordOrder(data.get("word_order", "big")),
            phases=int(data["phases"]),
            serial=SerialDefaults(
                baud=int(serial["baud"]),
                parity=str(serial["parity"]),
                stop_bits=int(serial["stop_bits"]),
                unit_id=int(serial.get("unit_id", 1)),
            ),
            registers=registers,
            windows=tuple(
                Window(int(w["first"]), int(w["last"]), int(w.get("fill", 0)))
                for w in data.get("windows", [])
            )
            or tuple(Window(r.address, r.end - 1) for r in registers),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise fail(f"bad or missing field: {exc!r}") from exc

    seen: dict[Quantity, int] = {}
    occupied: dict[int, Quantity] = {}
    for reg in parsed.registers:
        if reg.quantity in seen:
            raise fail(f"quantity {reg.quantity.value} appears twice")
        seen[reg.quantity] = reg.address
        if not (reg.address >= 0 and reg.end <= ADDRESS_SPACE):
            raise fail(f"{reg.quantity.value}: address {reg.address} outside 0..65535")
        if not math.isfinite(reg.scale) or reg.scale == 0:
            raise fail(f"{reg.quantity.value}: scale must be a finite non-zero number")
        for addr in range(reg.address, reg.end):
            if addr in occupied:
                raise fail(f"{reg.quantity.value} at {reg.address} overlaps {occupied[addr].value}")
            occupied[addr] = reg.quantity
        window = parsed.window_of(reg.address)
        if window is None or reg.end - 1 not in window:
            raise fail(f"{reg.quantity.value} at {reg.address} is not inside one window")
    missing = REQUIRED_QUANTITIES - seen.keys()
    if missing:
        raise fail(f"missing required quantities: {sorted(q.value for q in missing)}")
    ordered = sorted(parsed.windows, key=lambda w: w.first)
    for a, b in itertools.pairwise(ordered):
        if b.first <= a.last:
            raise fail(f"windows {a.first}-{a.last} and {b.first}-{b.last} overlap")
    for w in ordered:
        if not 0 <= w.first <= w.last < ADDRESS_SPACE or not 0 <= w.fill <= 0xFFFF:
            raise fail(f"window {w.first}-{w.last} (fill {w.fill}) out of range")
    if parsed.serial.parity not in {"N", "E", "O"}:
        raise fail(f"serial parity {parsed.serial.parity!r}: expected N, E or O")
    return parsed
