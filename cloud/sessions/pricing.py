"""Cost so far of a session from its charger's pricing (pure, integer paise).

This is the running estimate shown live and in ``GET /sessions/{id}`` until billing prices
the session (``sessions.amount_paise``); idle fees, which only exist after the session, are
not in it. Rounding is half up, once, on the total.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from cloud.chargers.models import PricingMode


@dataclass(frozen=True, slots=True)
class Tariff:
    mode: PricingMode
    price_per_kwh_paise: int
    price_per_hour_paise: int
    session_fee_paise: int
    min_charge_paise: int


def cost_so_far_paise(
    tariff: Tariff,
    *,
    energy_wh: int,
    started_at: datetime | None,
    until: datetime,
) -> int:
    """What the session costs up to ``until`` (its stop, or now while it runs)."""
    if tariff.mode is PricingMode.PER_HOUR:
        elapsed_ms = 0
        if started_at is not None:
            # Floor division of timedeltas is exact integer arithmetic (no float seconds).
            elapsed_ms = max(0, (until - started_at) // timedelta(milliseconds=1))
        # paise/hour * ms / 3,600,000 ms/hour, rounded half up.
        usage = (tariff.price_per_hour_paise * elapsed_ms + 1_800_000) // 3_600_000
    else:
        # paise/kWh * Wh / 1000 Wh/kWh, rounded half up.
        usage = (tariff.price_per_kwh_paise * max(0, energy_wh) + 500) // 1000
    return max(tariff.session_fee_paise + usage, tariff.min_charge_paise)
