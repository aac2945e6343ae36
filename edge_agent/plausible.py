"""Is a meter reading plausible? The one definition, pure.

:func:`implausible` is physics: every value within what the Indian grid and an EV charging
circuit can show, with a wide margin (230 V ±, 50 Hz ±, no more than a few hundred amps).
``doctor`` uses it (a meter that answers with nonsense is as broken as a silent one), and
``meter scan`` (the register map under which a device's answer makes physical sense names its
model). :func:`untrusted` is what the relay fail-safe (edge_agent/relay/failsafe.py) asks of
each reading while a session runs: the same physics, and the import register and power
present, no power negative beyond the meter's noise, no import register jump between two
samples (a corrupted frame that passed its CRC, or the wrong meter answering).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from protocols.meters import Quantity

#: Phase-to-neutral voltage of a live phase; a dead phase reads (near) 0.
VOLTAGE_RANGE_V = (150.0, 300.0)
LINE_VOLTAGE_RANGE_V = (260.0, 520.0)
DEAD_PHASE_V = 15.0
FREQUENCY_RANGE_HZ = (45.0, 65.0)
MAX_CURRENT_A = 400.0
MAX_POWER_W = 300_000.0
#: An energy register beyond this (10 GWh) is garbage decoded as a number.
MAX_ENERGY_WH = 1e10

_PHASE_V = (Quantity.VOLTAGE_L1_V, Quantity.VOLTAGE_L2_V, Quantity.VOLTAGE_L3_V)
_LINE_V = (Quantity.VOLTAGE_L1_L2_V, Quantity.VOLTAGE_L2_L3_V, Quantity.VOLTAGE_L3_L1_V)
_CURRENTS = (
    Quantity.CURRENT_L1_A,
    Quantity.CURRENT_L2_A,
    Quantity.CURRENT_L3_A,
    Quantity.CURRENT_N_A,
)
_POWERS = (
    Quantity.POWER_W,
    Quantity.POWER_L1_W,
    Quantity.POWER_L2_W,
    Quantity.POWER_L3_W,
    Quantity.APPARENT_POWER_VA,
    Quantity.REACTIVE_POWER_VAR,
)
_PF = (
    Quantity.POWER_FACTOR,
    Quantity.POWER_FACTOR_L1,
    Quantity.POWER_FACTOR_L2,
    Quantity.POWER_FACTOR_L3,
)
_ENERGY = (
    Quantity.ENERGY_IMPORT_WH,
    Quantity.ENERGY_EXPORT_WH,
    Quantity.ENERGY_TOTAL_WH,
    Quantity.ENERGY_IMPORT_L1_WH,
    Quantity.ENERGY_IMPORT_L2_WH,
    Quantity.ENERGY_IMPORT_L3_WH,
)


def _problem(quantity: Quantity, value: float) -> str | None:
    if not math.isfinite(value):
        return f"{quantity.value} is {value}"
    if quantity in _PHASE_V:
        lo, hi = VOLTAGE_RANGE_V
        if not (lo <= value <= hi or abs(value) <= DEAD_PHASE_V):
            return f"{quantity.value} = {value:.1f} V, expected {lo:.0f}-{hi:.0f} V (or 0)"
    elif quantity in _LINE_V:
        lo, hi = LINE_VOLTAGE_RANGE_V
        if not (lo <= value <= hi or abs(value) <= DEAD_PHASE_V):
            return f"{quantity.value} = {value:.1f} V, expected {lo:.0f}-{hi:.0f} V (or 0)"
    elif quantity is Quantity.FREQUENCY_HZ:
        lo, hi = FREQUENCY_RANGE_HZ
        if not lo <= value <= hi:
            return f"frequency {value:.2f} Hz, expected {lo:.0f}-{hi:.0f} Hz"
    elif quantity in _CURRENTS:
        if not -1.0 <= value <= MAX_CURRENT_A:
            return f"{quantity.value} = {value:.1f} A, expected 0-{MAX_CURRENT_A:.0f} A"
    elif quantity in _POWERS:
        if abs(value) > MAX_POWER_W:
            return f"{quantity.value} = {value:.0f}, beyond ±{MAX_POWER_W:.0f}"
    elif quantity in _PF:
        if abs(value) > 1.01:
            return f"{quantity.value} = {value:.3f}, expected -1..1"
    elif quantity in _ENERGY and not 0 <= value <= MAX_ENERGY_WH:
        return f"{quantity.value} = {value:.0f} Wh, expected 0-{MAX_ENERGY_WH:.0e} Wh"
    return None


def implausible(values: Mapping[Quantity, float]) -> list[str]:
    """Why ``values`` cannot be a real meter's reading (empty when plausible).

    Beyond each value's range, a live meter shows at least one live phase and its frequency.
    """
    problems = [p for q, v in values.items() if (p := _problem(q, v)) is not None]
    voltages = [values[q] for q in _PHASE_V if q in values]
    if voltages and max(voltages) < VOLTAGE_RANGE_V[0]:
        problems.append("no phase carries a mains voltage")
    if not values:
        problems.append("no quantity decoded")
    return problems


def plausibility_score(values: Mapping[Quantity, float]) -> int:
    """How many quantities a map decoded with plausible values (0 when any is implausible):
    the larger map that still makes sense is the better explanation of a device."""
    return 0 if implausible(values) else len(values)


def untrusted(
    values: Mapping[Quantity, float],
    previous_energy_wh: float | None,
    *,
    max_energy_step_wh: float,
    negative_power_noise_w: float,
) -> str | None:
    """Why the fail-safe cannot trust ``values`` as a running session's reading, or None."""
    energy = values.get(Quantity.ENERGY_IMPORT_WH)
    power = values.get(Quantity.POWER_W)
    if energy is None or power is None:
        return "reading lacks the import register or power"
    if energy < 0:
        return f"import register negative ({energy})"
    if power < -negative_power_noise_w:
        return f"power {power} W is negative"
    if previous_energy_wh is not None and abs(energy - previous_energy_wh) > max_energy_step_wh:
        return f"import register jumped from {previous_energy_wh} to {energy}"
    problems = implausible(values)
    return "; ".join(problems) if problems else None
