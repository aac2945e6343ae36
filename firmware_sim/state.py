"""The state file: what survives a simulator restart (energy that has flowed, the EV).

A meter keeps its energy register across power cycles; so does the simulator, in a small
JSON file written atomically (temp file + rename, so a crash mid-write leaves the old file).
The relay is not kept: a contactor drops out when its supply goes away.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from firmware_sim.errors import ConfigError
from firmware_sim.ev import Profile

STATE_VERSION = 1


@dataclass
class SavedState:
    energy_wh: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    #: The plugged EV as (profile, capacity_wh, soc), or None.
    ev: tuple[Profile, float, float] | None = None

    def to_json(self) -> dict[str, Any]:
        ev = None
        if self.ev is not None:
            profile, capacity_wh, soc = self.ev
            ev = {"profile": profile.value, "capacity_wh": capacity_wh, "soc": soc}
        return {"version": STATE_VERSION, "energy_wh": self.energy_wh, "ev": ev}


def load_state(path: Path) -> SavedState:
    """Read ``path``; a missing file is a fresh site (all zero, nothing plugged)."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        return SavedState()
    except (OSError, ValueError) as exc:
        raise ConfigError(f"state file {path} is unreadable: {exc}", field="state") from exc
    try:
        if data["version"] != STATE_VERSION:
            raise ValueError(f"version {data['version']!r}, expected {STATE_VERSION}")
        energy = [float(x) for x in data["energy_wh"]]
        if len(energy) != 3 or any(not x >= 0 for x in energy):
            raise ValueError("energy_wh must be three non-negative numbers")
        ev_data = data["ev"]
        ev = None
        if ev_data is not None:
            ev = (
                Profile(ev_data["profile"]),
                float(ev_data["capacity_wh"]),
                float(ev_data["soc"]),
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(
            f"state file {path} is not a simulator state: {exc}", field="state"
        ) from exc
    return SavedState(energy, ev)


def save_state(path: Path, state: SavedState) -> None:
    """Write ``state`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state.to_json()), "utf-8")
    tmp.replace(path)
