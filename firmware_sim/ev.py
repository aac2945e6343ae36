"""The EV and its charging circuit: who draws how much power, and the energy it adds up to.

Pure model, no I/O and no clock: :meth:`Circuit.advance` is told how much time passed.
Power flows only when the relay is closed and an EV is plugged; the EV draws its profile's
constant power until its battery passes :data:`TAPER_START_SOC`, then tapers linearly to
zero and stops when the taper falls below :data:`STOP_FRACTION` (CC/CV charging as seen from
the AC side). Energy is the exact integral of that piecewise-constant power, per phase, and
never decreases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from firmware_sim.errors import ConfigError

#: Battery state of charge where the constant-power phase ends.
TAPER_START_SOC = 0.8
#: The EV stops charging when its taper has fallen below this fraction of full power.
STOP_FRACTION = 0.05
#: Longest step of the integration: power is re-evaluated (taper) at least this often.
MAX_STEP_S = 1.0


class Profile(StrEnum):
    """AC charging profiles: on-board charger power and phase count."""

    AC_3_3KW = "3.3kw"
    AC_7_4KW = "7.4kw"
    AC_11KW = "11kw"
    AC_22KW = "22kw"

    @property
    def power_w(self) -> float:
        return {"3.3kw": 3300.0, "7.4kw": 7400.0, "11kw": 11000.0, "22kw": 22000.0}[self.value]

    @property
    def phases(self) -> int:
        return 1 if self in (Profile.AC_3_3KW, Profile.AC_7_4KW) else 3

    @classmethod
    def parse(cls, text: str) -> Profile:
        try:
            return cls(text.lower())
        except ValueError:
            known = ", ".join(p.value for p in cls)
            raise ConfigError(
                f"unknown EV profile {text!r}; known: {known}", field="profile"
            ) from None


@dataclass
class Ev:
    """A plugged-in EV: its profile and battery."""

    profile: Profile
    capacity_wh: float = 40_000.0
    soc: float = 0.2

    @property
    def full(self) -> bool:
        return self.taper() < STOP_FRACTION

    def taper(self) -> float:
        """Fraction of profile power the EV accepts at its state of charge."""
        if self.soc < TAPER_START_SOC:
            return 1.0
        return max(0.0, (1.0 - self.soc) / (1.0 - TAPER_START_SOC))

    def demand_w(self) -> float:
        return 0.0 if self.full else self.profile.power_w * self.taper()


@dataclass
class Circuit:
    """Relay → cable → EV, with the energy that has flowed through each phase."""

    relay_closed: bool = False
    ev: Ev | None = None
    energy_wh: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    #: Multiplier on the EV's draw while an overcurrent fault is injected (1.0: none).
    overcurrent_ratio: float = 1.0

    def phase_power_w(self) -> tuple[float, float, float]:
        """Active power drawn now on L1, L2, L3."""
        if not self.relay_closed or self.ev is None:
            return (0.0, 0.0, 0.0)
        total = self.ev.demand_w() * self.overcurrent_ratio
        if self.ev.profile.phases == 1:
            return (total, 0.0, 0.0)
        return (total / 3, total / 3, total / 3)

    def advance(self, dt_s: float) -> None:
        """Let ``dt_s`` seconds pass: integrate power into energy and into the battery."""
        if dt_s < 0:
            raise ValueError("time cannot go back")
        remaining = dt_s
        while remaining > 0:
            step = min(remaining, MAX_STEP_S)
            powers = self.phase_power_w()
            total = sum(powers)
            if total == 0:
                return  # nothing flows and nothing will change until someone acts
            for i, p in enumerate(powers):
                self.energy_wh[i] += p * step / 3600.0
            if self.ev is not None:
                self.ev.soc = min(1.0, self.ev.soc + total * step / 3600.0 / self.ev.capacity_wh)
            remaining -= step
