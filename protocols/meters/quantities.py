"""The physical quantities a meter reading may hold. Each name ends in its unit."""

from __future__ import annotations

from enum import StrEnum


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
