"""The physical quantities a meter reading may hold. Each name ends in its unit.

:data:`QUANTITY_BOUNDS` gives each one the range a real installation can read — generous
(grid-scale, not charger-scale) but finite, so that no value that passes the wire contract can
overflow the cloud's aggregates: two readings of ``1e308`` in one rollup bucket once did
(issue 13). Decoding leaves a value outside its range out, as it leaves out a NaN.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final


class Quantity(StrEnum):
    VOLTAGE_L1_V = "voltage_l1_v"
    VOLTAGE_L2_V = "voltage_l2_v"
    VOLTAGE_L3_V = "voltage_l3_v"
    VOLTAGE_L1_L2_V = "voltage_l1_l2_v"
    VOLTAGE_L2_L3_V = "voltage_l2_l3_v"
    VOLTAGE_L3_L1_V = "voltage_l3_l1_v"
    CURRENT_L1_A = "current_l1_a"
    CURRENT_L2_A = "current_l2_a"
    CURRENT_L3_A = "current_l3_a"
    CURRENT_N_A = "current_n_a"
    POWER_W = "power_w"
    POWER_L1_W = "power_l1_w"
    POWER_L2_W = "power_l2_w"
    POWER_L3_W = "power_l3_w"
    APPARENT_POWER_VA = "apparent_power_va"
    REACTIVE_POWER_VAR = "reactive_power_var"
    POWER_FACTOR = "power_factor"
    POWER_FACTOR_L1 = "power_factor_l1"
    POWER_FACTOR_L2 = "power_factor_l2"
    POWER_FACTOR_L3 = "power_factor_l3"
    FREQUENCY_HZ = "frequency_hz"
    ENERGY_IMPORT_WH = "energy_import_wh"
    ENERGY_EXPORT_WH = "energy_export_wh"
    ENERGY_TOTAL_WH = "energy_total_wh"
    ENERGY_IMPORT_L1_WH = "energy_import_l1_wh"
    ENERGY_IMPORT_L2_WH = "energy_import_l2_wh"
    ENERGY_IMPORT_L3_WH = "energy_import_l3_wh"


#: What every map must provide: a session is billed from the import register, and the
#: fail-safes watch power and current.
REQUIRED_QUANTITIES = frozenset(
    {Quantity.ENERGY_IMPORT_WH, Quantity.POWER_W, Quantity.CURRENT_L1_A}
)


#: 100 kV and 100 kA: past any meter on a VT/CT, let alone an EV charger (≤ 1 kV DC).
_VOLTS_MAX = 1e5
_AMPS_MAX = 1e5
#: 1 GW either way: a signed power is negative while exporting (and ABB's apparent power is
#: a signed register).
_WATTS_MAX = 1e9
#: Energy registers count up from zero: negative energy is refused. 2**53 Wh (9 TWh, a
#: gigawatt for a thousand years) is also where a float stops holding every whole Wh, and the
#: bound of a session's ``Wh`` fields.
_WH_MAX = float(2**53)
#: cos φ lies in [-1, 1]; a meter that computes it as P / S from separately measured values can
#: read a hair past 1 at unity, which is kept rather than dropped.
_PF_MAX = 1.05
#: 0 Hz is a dead line; 400 Hz aircraft and marine supplies are the highest anyone meters.
_HZ_MAX = 1000.0


def _bounds(quantity: Quantity) -> tuple[float, float]:
    name = quantity.value
    if name.endswith("_wh"):
        return 0.0, _WH_MAX
    if name.startswith("power_factor"):
        return -_PF_MAX, _PF_MAX
    if name.endswith(("_w", "_va", "_var")):
        return -_WATTS_MAX, _WATTS_MAX
    if name.endswith("_v"):
        return 0.0, _VOLTS_MAX
    if name.endswith("_a"):
        return 0.0, _AMPS_MAX
    if name.endswith("_hz"):
        return 0.0, _HZ_MAX
    raise AssertionError(f"{name} has no unit this module knows")  # caught at import


#: ``{quantity: (lowest, highest)}``, inclusive. Every value on the wire lies in its range.
QUANTITY_BOUNDS: Final[dict[Quantity, tuple[float, float]]] = {q: _bounds(q) for q in Quantity}
#: No bound is larger than this: what the cloud's aggregates clamp to (cloud.telemetry).
LARGEST_BOUND: Final = max(max(-lo, hi) for lo, hi in QUANTITY_BOUNDS.values())


def in_bounds(quantity: Quantity, value: float) -> bool:
    """Whether ``value`` is a reading ``quantity`` can physically have (False for NaN)."""
    low, high = QUANTITY_BOUNDS[quantity]
    return low <= value <= high
