"""The relay fail-safe rules, pure: what the meter shows and the clock says → open or not.

On any doubt the relay is open and no power flows. :func:`assess` is called after every poll
(good or failed) and on a timer, with the monotonic time; it returns the new watch state and
at most one :class:`Verdict`:

* relay closed, meter silent or implausible for more than ``meter_silence_s`` (3 s)
  → stop, MeterFailure
* relay closed, any phase current above ``overcurrent_ratio`` x rating (110 %) continuously
  for ``overcurrent_hold_s`` (5 s) → stop, OverCurrent
* relay closed, session energy ≥ its limit → EnergyLimitReached; duration ≥ its limit →
  TimeLimitReached; authorization withdrawn → DeAuthorized
* relay opened ``stuck_relay_check_s`` (2 s) ago: power above ``stuck_relay_power_w`` →
  StuckRelay fault; otherwise the opening is confirmed.

"Implausible" is :func:`edge_agent.plausible.untrusted` (the one definition, shared with
``doctor`` and ``meter scan``): a reading without the import register or power, a negative
power beyond the meter's noise, an import register that jumps by more than
``max_energy_step_wh`` between two samples, or any value outside physical ranges.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from edge_agent.plausible import untrusted
from protocols.enums import StopReason
from protocols.meters import Quantity

_PHASE_CURRENTS = (Quantity.CURRENT_L1_A, Quantity.CURRENT_L2_A, Quantity.CURRENT_L3_A)


@dataclass(frozen=True, slots=True)
class SafetyLimits:
    rating_a: float
    overcurrent_ratio: float = 1.10
    overcurrent_hold_s: float = 5.0
    meter_silence_s: float = 3.0
    stuck_relay_check_s: float = 2.0
    stuck_relay_power_w: float = 50.0
    max_energy_step_wh: int = 10_000
    #: Meters report a few watts either way with no load; more negative than this is garbage.
    negative_power_noise_w: float = 50.0


@dataclass(frozen=True, slots=True)
class Observation:
    """What the controller knows at ``mono``. ``values`` None: this poll failed (or no poll
    happened, on a timer tick, with ``polled`` False)."""

    mono: float
    relay_closed: bool
    values: dict[Quantity, float] | None = None
    polled: bool = True
    session_energy_wh: int = 0
    session_elapsed_s: float = 0.0
    max_wh: int | None = None
    max_s: int | None = None
    authorized: bool = True


@dataclass(frozen=True, slots=True)
class Watch:
    """What the rules remember between observations."""

    last_good_mono: float
    last_energy_wh: float | None = None
    overcurrent_since: float | None = None
    #: When the relay was last opened with the stuck check still pending.
    opened_at: float | None = None


class VerdictKind(StrEnum):
    STOP = "stop"
    STUCK_RELAY = "stuck_relay"
    RELAY_CONFIRMED_OPEN = "relay_confirmed_open"


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: VerdictKind
    reason: StopReason | None = None
    detail: str = ""


def start_watch(mono: float) -> Watch:
    """A fresh watch: the meter counts as heard now (a start is never a silence)."""
    return Watch(last_good_mono=mono)


def relay_opened(watch: Watch, mono: float) -> Watch:
    """Record that the relay was just commanded open: the stuck check starts now."""
    return replace(watch, opened_at=mono, overcurrent_since=None)


def plausible(
    values: dict[Quantity, float], previous_energy_wh: float | None, lim: SafetyLimits
) -> str | None:
    """Why ``values`` cannot be trusted, or None when they can (:func:`untrusted` with this
    charger's limits)."""
    return untrusted(
        values,
        previous_energy_wh,
        max_energy_step_wh=lim.max_energy_step_wh,
        negative_power_noise_w=lim.negative_power_noise_w,
    )


def assess(watch: Watch, obs: Observation, lim: SafetyLimits) -> tuple[Watch, Verdict | None]:
    """Apply the rules to one observation (see the module docstring)."""
    values = obs.values
    if values is not None and plausible(values, watch.last_energy_wh, lim) is None:
        watch = replace(
            watch, last_good_mono=obs.mono, last_energy_wh=values[Quantity.ENERGY_IMPORT_WH]
        )
    else:
        values = None

    if not obs.relay_closed:
        return _check_opened(watch, obs, values, lim)

    silent_s = obs.mono - watch.last_good_mono
    if silent_s > lim.meter_silence_s:
        return watch, Verdict(
            VerdictKind.STOP, StopReason.METER_FAILURE, f"no plausible reading for {silent_s:.1f} s"
        )
    if not obs.authorized:
        return watch, Verdict(VerdictKind.STOP, StopReason.DE_AUTHORIZED, "authorization withdrawn")
    if obs.max_wh is not None and obs.session_energy_wh >= obs.max_wh:
        return watch, Verdict(
            VerdictKind.STOP, StopReason.ENERGY_LIMIT_REACHED, f"{obs.session_energy_wh} Wh"
        )
    if obs.max_s is not None and obs.session_elapsed_s >= obs.max_s:
        return watch, Verdict(
            VerdictKind.STOP, StopReason.TIME_LIMIT_REACHED, f"{obs.session_elapsed_s:.0f} s"
        )
    if values is not None:
        current = max((values.get(q, 0.0) for q in _PHASE_CURRENTS), default=0.0)
        if current > lim.rating_a * lim.overcurrent_ratio:
            since = watch.overcurrent_since if watch.overcurrent_since is not None else obs.mono
            watch = replace(watch, overcurrent_since=since)
            if obs.mono - since >= lim.overcurrent_hold_s:
                return watch, Verdict(
                    VerdictKind.STOP,
                    StopReason.OVER_CURRENT,
                    f"{current:.1f} A > {lim.overcurrent_ratio:.0%} of {lim.rating_a} A "
                    f"for {obs.mono - since:.1f} s",
                )
        else:
            watch = replace(watch, overcurrent_since=None)
    return watch, None


def _check_opened(
    watch: Watch, obs: Observation, values: dict[Quantity, float] | None, lim: SafetyLimits
) -> tuple[Watch, Verdict | None]:
    watch = replace(watch, overcurrent_since=None)
    if watch.opened_at is None or obs.mono - watch.opened_at < lim.stuck_relay_check_s:
        return watch, None
    if values is None:
        # No trustworthy reading yet: keep waiting; the check is only decided on evidence.
        return watch, None
    power = values[Quantity.POWER_W]
    after_s = obs.mono - watch.opened_at
    watch = replace(watch, opened_at=None)
    if power > lim.stuck_relay_power_w:
        return watch, Verdict(
            VerdictKind.STUCK_RELAY,
            StopReason.STUCK_RELAY,
            f"{power:.0f} W flowing {after_s:.1f} s after the relay opened",
        )
    return watch, Verdict(VerdictKind.RELAY_CONFIRMED_OPEN)
