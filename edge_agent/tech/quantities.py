"""A reading's quantity names (``power_w``, ``energy_wh``) split into name and unit, for the
technician's tables."""

from __future__ import annotations


def unit_of(quantity: str) -> str:
    """The unit a quantity's name ends in (``power_w`` → W)."""
    suffixes = {
        "_wh": "Wh",
        "_var": "var",
        "_va": "VA",
        "_hz": "Hz",
        "_v": "V",
        "_a": "A",
        "_w": "W",
    }
    for suffix, unit in suffixes.items():
        if quantity.endswith(suffix):
            return unit
    return ""


def name_of(quantity: str) -> str:
    unit = unit_of(quantity)
    return quantity[: -len(unit) - 1] if unit else quantity
