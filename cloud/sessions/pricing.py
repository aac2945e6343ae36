"""What charging costs under a charger's tariff (pure, integer paise).

One tariff, two questions about it:

* :func:`cost_so_far_paise` — a session's running cost from its metered energy and elapsed
  time: shown live and in ``GET /sessions/{id}`` until billing prices the session
  (``sessions.amount_paise``). Idle fees, which only exist after the session, are not in it.
* :func:`estimate_amount` — a booking's amount, before anything is metered: the session the
  booking reserves, priced ahead. Exact for per-hour pricing; for per-kWh pricing an upper
  bound, the connector at its maximum power for the whole booking.

Both add the session fee and raise the total to the charger's minimum charge. They round the
usage differently, on purpose: see the two functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cloud.chargers.models import Charger, PricingMode


@dataclass(frozen=True, slots=True)
class Tariff:
    """A charger's prices, detached from its row."""

    mode: PricingMode
    price_per_kwh_paise: int
    price_per_hour_paise: int
    session_fee_paise: int
    min_charge_paise: int

    @classmethod
    def from_charger(cls, charger: Charger) -> Tariff:
        return cls(
            mode=charger.pricing_mode,
            price_per_kwh_paise=charger.price_per_kwh_paise,
            price_per_hour_paise=charger.price_per_hour_paise,
            session_fee_paise=charger.session_fee_paise,
            min_charge_paise=charger.min_charge_paise,
        )


@dataclass(frozen=True, slots=True)
class Estimate:
    amount_paise: int
    #: True when the amount is a ceiling (per-kWh: the connector at full power throughout).
    upper_bound: bool


def _ceil_div(numerator: int, denominator: int) -> int:
    return -(-numerator // denominator)


def _div_half_up(numerator: int, denominator: int) -> int:
    """``numerator / denominator`` to the nearest integer, halves up (both non-negative)."""
    return (numerator + denominator // 2) // denominator


def _total(tariff: Tariff, usage_paise: int) -> int:
    return max(usage_paise + tariff.session_fee_paise, tariff.min_charge_paise)


def cost_so_far_paise(
    tariff: Tariff,
    *,
    energy_wh: int,
    started_at: datetime | None,
    until: datetime,
) -> int:
    """What the session costs up to ``until`` (its stop, or now while it runs).

    The usage rounds half up, once: this is a reading of the meter and the clock, so it
    shows the nearest paisa, with no bias either way.
    """
    if tariff.mode is PricingMode.PER_HOUR:
        elapsed_ms = 0
        if started_at is not None:
            # Floor division of timedeltas is exact integer arithmetic (no float seconds).
            # Milliseconds: a running session is priced at any instant, not on a slot.
            elapsed_ms = max(0, (until - started_at) // timedelta(milliseconds=1))
        # paise/hour * ms / 3,600,000 ms/hour
        usage = _div_half_up(tariff.price_per_hour_paise * elapsed_ms, 3_600_000)
    else:
        # paise/kWh * Wh / 1000 Wh/kWh
        usage = _div_half_up(tariff.price_per_kwh_paise * max(0, energy_wh), 1000)
    return _total(tariff, usage)


def estimate_amount(tariff: Tariff, duration: timedelta, max_power_w: int) -> Estimate:
    """What a booking of ``duration`` on a connector of ``max_power_w`` costs, in paise.

    Per hour: the hourly price pro rata. Per kWh: the kWh price times the most energy the
    connector can deliver in that time.

    The usage rounds up to the next paisa, not half up as :func:`cost_so_far_paise` does:
    the amount is what the booking may cost at most (docs/decisions.md; the late-cancellation
    fee is capped at it), so it is never quoted below the pro-rata price, and the per-kWh
    ceiling stays a ceiling. Hence for a per-hour price that does not divide evenly, the
    booking's amount may be one paisa above the cost so far of a session lasting exactly as
    long (100 paise/h for 20 minutes: 34 booked, 33 so far).
    """
    # Whole seconds are exact: bookings are whole 15-minute slots (cloud.bookings.policy).
    seconds = duration // timedelta(seconds=1)
    if tariff.mode is PricingMode.PER_HOUR:
        usage = _ceil_div(tariff.price_per_hour_paise * seconds, 3600)
        upper_bound = False
    else:
        # paise/kWh * W * s / (1000 W/kW * 3600 s/h)
        usage = _ceil_div(tariff.price_per_kwh_paise * max_power_w * seconds, 3_600_000)
        upper_bound = True
    return Estimate(_total(tariff, usage), upper_bound)
