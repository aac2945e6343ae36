"""What a meter measures on the charging circuit: the physical value of every quantity a
register map can hold. Pure functions.

Three-phase quantities come from phasors at 120° (a balanced 230/400 V grid): line-to-line
voltage ``|V1 - V2|`` and neutral current ``|I1 + I2 + I3|``. A single-phase meter sees L1
only. The EV's power factor is :data:`EV_POWER_FACTOR` (lagging); an idle phase reads power
factor 1, as Eastron meters do with no load.
"""

from __future__ import annotations

import cmath
import math
import random
from dataclasses import dataclass

from protocols.meters import Quantity

NOMINAL_VOLTAGE_V = 230.0
NOMINAL_FREQUENCY_HZ = 50.0
#: Relative voltage noise (±) and absolute frequency noise (±), new every simulated second.
VOLTAGE_NOISE = 0.01
FREQUENCY_NOISE_HZ = 0.05
EV_POWER_FACTOR = 0.99
_PHASE_ANGLES = (0.0, -2 * math.pi / 3, 2 * math.pi / 3)


@dataclass(frozen=True, slots=True)
class Grid:
    """Supply voltages (L-N, per phase) and frequency at one moment."""

    voltage_v: tuple[float, float, float]
    frequency_hz: float


def grid_at(t_s: float, seed: int) -> Grid:
    """The grid at simulated time ``t_s``: nominal plus small noise, held for one second.

    Deterministic in (seed, whole second), so two reads within a second agree and a test on
    a manual clock sees exactly the values the control interface reports.
    """
    # Not cryptographic: reproducible measurement noise.
    rng = random.Random(f"{seed}:{math.floor(t_s)}")  # noqa: S311
    volts = tuple(
        NOMINAL_VOLTAGE_V * (1 + rng.uniform(-VOLTAGE_NOISE, VOLTAGE_NOISE)) for _ in range(3)
    )
    freq = NOMINAL_FREQUENCY_HZ + rng.uniform(-FREQUENCY_NOISE_HZ, FREQUENCY_NOISE_HZ)
    return Grid((volts[0], volts[1], volts[2]), freq)


def meter_quantities(
    *,
    phases: int,
    grid: Grid,
    phase_power_w: tuple[float, float, float],
    import_wh: tuple[float, float, float],
    export_wh: float,
) -> dict[Quantity, float]:
    """Every quantity a ``phases``-phase meter on this circuit reads."""
    n = 1 if phases == 1 else 3
    q: dict[Quantity, float] = {}
    currents: list[complex] = []
    total_p = total_s = 0.0
    for i in range(n):
        v = grid.voltage_v[i]
        p = phase_power_w[i]
        pf = EV_POWER_FACTOR if p > 0 else 1.0
        s = p / pf
        amps = s / v
        currents.append(cmath.rect(amps, _PHASE_ANGLES[i] - math.acos(pf)))
        total_p += p
        total_s += s
        q[Quantity(f"voltage_l{i + 1}_v")] = v
        q[Quantity(f"current_l{i + 1}_a")] = amps
        if n == 3:
            q[Quantity(f"power_l{i + 1}_w")] = p
            q[Quantity(f"power_factor_l{i + 1}")] = pf
            q[Quantity(f"energy_import_l{i + 1}_wh")] = import_wh[i]
    if n == 3:
        phasors = [cmath.rect(grid.voltage_v[i], _PHASE_ANGLES[i]) for i in range(3)]
        for a, b, name in ((0, 1, "l1_l2"), (1, 2, "l2_l3"), (2, 0, "l3_l1")):
            q[Quantity(f"voltage_{name}_v")] = abs(phasors[a] - phasors[b])
        q[Quantity.CURRENT_N_A] = abs(sum(currents))
    total_import = sum(import_wh[:n])
    q[Quantity.POWER_W] = total_p
    q[Quantity.APPARENT_POWER_VA] = total_s
    q[Quantity.REACTIVE_POWER_VAR] = math.sqrt(max(0.0, total_s**2 - total_p**2))
    q[Quantity.POWER_FACTOR] = total_p / total_s if total_s > 0 else 1.0
    q[Quantity.FREQUENCY_HZ] = grid.frequency_hz
    q[Quantity.ENERGY_IMPORT_WH] = total_import
    q[Quantity.ENERGY_EXPORT_WH] = export_wh
    q[Quantity.ENERGY_TOTAL_WH] = total_import + export_wh
    return q
