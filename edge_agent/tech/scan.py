"""``meter scan``: find the Modbus devices on a serial line and name the meters among them.

For each baud rate and parity, every unit id is asked for two input registers with a short
timeout: any answer — even a Modbus exception (an ABB or Schneider meter has no input
registers) — means a device is there. Each device found is then read under every register
map in :mod:`protocols.meters`; the map under which it answers every block with physically
plausible values, and explains the most quantities, names its model (:func:`best_model`).

A pseudo-terminal (the simulator) keeps the speed a client sets but not the parity, so on
one a device is found at the first parity tried; a real line drops wrongly framed bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from edge_agent.config import BusTiming, SerialLink, build
from edge_agent.errors import BusError, BusFault, InputError, MeterError
from edge_agent.plausible import implausible, plausibility_score
from edge_agent.tech.direct import read_map
from protocols.errors import DecodeError
from protocols.meters import Quantity, available_models, load_map

if TYPE_CHECKING:
    from edge_agent.meters.bus import ModbusBus

STANDARD_BAUDS = (9600, 19200, 2400, 4800, 38400, 1200, 57600, 115200)
PARITIES = ("N", "E", "O")
#: Characters of a probe exchange (8-byte request, 9-byte answer) plus margin.
_PROBE_CHARS = 40
#: Characters of the longest identification answer (125 registers).
_READ_CHARS = 8 + 5 + 2 * 125


def probe_timeout_s(baud: int) -> float:
    """Long enough for a probe's request and answer at ``baud`` plus a meter's turnaround."""
    return round(_PROBE_CHARS * 11 / baud + 0.04, 3)


def read_timeout_s(baud: int) -> float:
    return round(_READ_CHARS * 11 / baud + 0.15, 3)


def parse_units(text: str) -> list[int]:
    """``"1-247"``, ``"1,3,7-9"`` → unit ids (InputError outside 1..247)."""
    units: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            lo, hi = int(first), int(last or first)
            units.extend(range(lo, hi + 1))
    except ValueError:
        raise InputError(f"bad unit list {text!r}; e.g. 1-247 or 1,3,7-9", field="units") from None
    if not units or any(not 1 <= u <= 247 for u in units):
        raise InputError(f"unit ids {text!r} must lie in 1..247", field="units")
    return sorted(set(units))


def parse_bauds(text: str) -> list[int]:
    try:
        bauds = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise InputError(f"bad baud list {text!r}; e.g. 9600,19200", field="bauds") from None
    bad = [b for b in bauds if b not in STANDARD_BAUDS]
    if not bauds or bad:
        raise InputError(
            f"baud {bad or text}: use {', '.join(map(str, sorted(STANDARD_BAUDS)))}",
            field="bauds",
        )
    return bauds


def parse_parities(text: str) -> list[str]:
    parities = [p.strip().upper() for p in text.split(",") if p.strip()]
    if not parities or any(p not in PARITIES for p in parities):
        raise InputError(f"parity {text!r}: use N, E, O", field="parities")
    return parities


@dataclass(frozen=True, slots=True)
class ModelFit:
    model: str
    score: int
    problems: tuple[str, ...] = ()


def best_model(fits: Sequence[ModelFit]) -> tuple[str | None, list[str]]:
    """The model that explains the device best, and every model tied with it (pure)."""
    good = [f for f in fits if f.score > 0]
    if not good:
        return None, []
    top = max(f.score for f in good)
    tied = sorted(f.model for f in good if f.score == top)
    return (tied[0] if len(tied) == 1 else None), tied


@dataclass(slots=True)
class Found:
    unit: int
    baud: int
    parity: str
    model: str | None
    candidates: list[str] = field(default_factory=list)
    summary: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "unit": self.unit,
            "baud": self.baud,
            "parity": self.parity,
            "model": self.model,
            "candidates": self.candidates,
            "summary": self.summary,
        }


async def answers(bus: ModbusBus, unit: int) -> bool:
    """Whether anything at ``unit`` answers (an exception is an answer)."""
    try:
        await bus.read_registers(unit, 4, 0, 2)
    except BusError as exc:
        if exc.kind is BusFault.DISCONNECTED:
            raise
        return exc.kind in (BusFault.EXCEPTION, BusFault.GARBAGE)
    return True


async def identify(bus: ModbusBus, unit: int) -> tuple[list[ModelFit], dict[Quantity, float]]:
    """Read ``unit`` under every register map; the fits and the best map's values."""
    fits: list[ModelFit] = []
    best: dict[Quantity, float] = {}
    for model in available_models():
        try:
            values = await read_map(bus, unit, load_map(model))
        except (BusError, DecodeError) as exc:
            if isinstance(exc, BusError) and exc.kind is BusFault.DISCONNECTED:
                raise
            fits.append(ModelFit(model, 0, (str(exc),)))
            continue
        score = plausibility_score(values)
        fits.append(ModelFit(model, score, tuple(implausible(values))))
        if score > plausibility_score(best):
            best = values
    return fits, best


def _summary(values: dict[Quantity, float]) -> dict[str, float]:
    keep = (
        Quantity.VOLTAGE_L1_V,
        Quantity.POWER_W,
        Quantity.ENERGY_IMPORT_WH,
        Quantity.FREQUENCY_HZ,
    )
    return {q.value: round(values[q], 2) for q in keep if q in values}


async def scan(
    port: str,
    *,
    bauds: Sequence[int],
    parities: Sequence[str],
    units: Sequence[int],
    timeout_s: float | None,
    progress: Callable[[str], None] = lambda _: None,
) -> list[Found]:
    """Every device found on ``port``; ``progress`` is called once per unit probed."""
    from edge_agent.tech.direct import is_pty, open_bus  # noqa: PLC0415

    if is_pty(port):
        parities = ["N"]  # a pty has no parity (see is_pty)
    found: list[Found] = []
    skipped: list[str] = []
    for baud in bauds:
        seen_here: set[int] = set()
        for parity in parities:
            link = build(SerialLink, {"port": port, "baud": baud, "parity": parity})
            probe = BusTiming(
                frame_gap_s=0.002, timeout_s=timeout_s or probe_timeout_s(baud), retries=0
            )
            present: list[int] = []
            try:
                async with open_bus(link, probe) as bus:
                    for unit in units:
                        progress(f"{baud} {parity} unit {unit}")
                        if unit not in seen_here and await answers(bus, unit):
                            present.append(unit)
            except MeterError as exc:
                skipped.append(f"{baud} {parity}: {exc}")
                continue
            if not present:
                continue
            reading = BusTiming(frame_gap_s=0.005, timeout_s=read_timeout_s(baud), retries=0)
            async with open_bus(link, reading) as bus:
                for unit in present:
                    fits, values = await identify(bus, unit)
                    model, tied = best_model(fits)
                    found.append(Found(unit, baud, parity, model, tied, _summary(values)))
                    seen_here.add(unit)
    if skipped and len(skipped) == len(bauds) * len(parities):
        raise MeterError(f"no line setting could be used: {skipped[0]}", meter_id=port)
    return found


async def find_meter(
    port: str, unit: int, *, bauds: Sequence[int], parities: Sequence[str]
) -> tuple[int, str] | None:
    """The (baud, parity) at which ``unit`` answers on ``port``, or None (doctor's question
    after a silent meter: is it merely set to another speed?)."""
    from edge_agent.tech.direct import is_pty, open_bus  # noqa: PLC0415

    if is_pty(port):
        parities = ["N"]  # a pty has no parity (see is_pty)
    for baud in bauds:
        for parity in dict.fromkeys(parities):
            link = build(SerialLink, {"port": port, "baud": baud, "parity": parity})
            timing = BusTiming(frame_gap_s=0.002, timeout_s=probe_timeout_s(baud), retries=0)
            try:
                async with open_bus(link, timing) as bus:
                    if await answers(bus, unit):
                        return baud, parity
            except MeterError:
                continue  # this setting cannot be used on this port
    return None
