"""cloud.sessions.pricing: one tariff priced as a session so far and as a booking ahead."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.chargers.models import Charger, PricingMode
from cloud.sessions.pricing import Estimate, Tariff, cost_so_far_paise, estimate_amount

START = datetime(2026, 1, 1, tzinfo=UTC)


def _so_far(tariff: Tariff, minutes: int, energy_wh: int) -> int:
    return cost_so_far_paise(
        tariff, energy_wh=energy_wh, started_at=START, until=START + timedelta(minutes=minutes)
    )


@pytest.mark.parametrize(
    ("tariff", "minutes", "energy_wh", "max_power_w", "so_far", "booked"),
    [
        # Per hour: the hourly price pro rata; the booking is exact.
        (Tariff(PricingMode.PER_HOUR, 0, 6000, 0, 0), 60, 0, 7400, 6000, 6000),
        (Tariff(PricingMode.PER_HOUR, 0, 6000, 100, 0), 90, 0, 7400, 9100, 9100),
        # 12.5 paise: half up so far, up for the booking -- both 13.
        (Tariff(PricingMode.PER_HOUR, 0, 50, 0, 0), 15, 0, 7400, 13, 13),
        # 33.3 paise: 33 so far, but the booking rounds up to 34.
        (Tariff(PricingMode.PER_HOUR, 0, 100, 0, 0), 20, 0, 7400, 33, 34),
        # Per kWh: the meter so far; the booking is the connector at full power throughout.
        (Tariff(PricingMode.PER_KWH, 1800, 0, 0, 0), 60, 7400, 7400, 13320, 13320),
        (Tariff(PricingMode.PER_KWH, 1800, 0, 0, 0), 60, 3000, 7400, 5400, 13320),
        # 1.8 paise so far rounds half up to 2; the booking ceiling is 3330 + the fee.
        (Tariff(PricingMode.PER_KWH, 1800, 0, 500, 0), 15, 1, 7400, 502, 3830),
        # 1.2 paise so far rounds half up to 1; 0.3 paise for the booking rounds up to 1.
        (Tariff(PricingMode.PER_KWH, 1200, 0, 0, 0), 15, 1, 1, 1, 1),
        # The minimum charge raises both.
        (Tariff(PricingMode.PER_KWH, 1800, 0, 0, 5000), 15, 100, 3300, 5000, 5000),
        (Tariff(PricingMode.PER_HOUR, 0, 6000, 0, 2000), 15, 0, 7400, 2000, 2000),
    ],
)
def test_one_tariff_prices_the_session_so_far_and_the_booking_ahead(
    tariff: Tariff, minutes: int, energy_wh: int, max_power_w: int, so_far: int, booked: int
) -> None:
    assert _so_far(tariff, minutes, energy_wh) == so_far
    upper_bound = tariff.mode is PricingMode.PER_KWH
    assert estimate_amount(tariff, timedelta(minutes=minutes), max_power_w) == Estimate(
        booked, upper_bound
    )


def test_a_session_not_started_costs_its_fee() -> None:
    tariff = Tariff(PricingMode.PER_HOUR, 0, 6000, 100, 0)
    assert cost_so_far_paise(tariff, energy_wh=500, started_at=None, until=START) == 100


def test_the_tariff_is_read_from_the_charger_row() -> None:
    charger = Charger(
        pricing_mode=PricingMode.PER_HOUR,
        price_per_kwh_paise=1,
        price_per_hour_paise=2,
        session_fee_paise=3,
        min_charge_paise=4,
    )
    assert Tariff.from_charger(charger) == Tariff(PricingMode.PER_HOUR, 1, 2, 3, 4)


prices = st.integers(0, 1_000_000)  # up to the listing cap, ₹10,000


@given(
    price=prices,
    fee=prices,
    minimum=prices,
    slots=st.integers(1, 48),
    max_power_w=st.integers(1, 350_000),
    share=st.fractions(0, 1),
)
def test_a_per_kwh_booking_bounds_any_session_that_fits_in_it(
    price: int, fee: int, minimum: int, slots: int, max_power_w: int, share: Fraction
) -> None:
    tariff = Tariff(PricingMode.PER_KWH, price, 0, fee, minimum)
    duration = timedelta(minutes=15 * slots)
    most_wh = max_power_w * (duration // timedelta(seconds=1)) // 3600
    energy_wh = int(most_wh * share)  # any energy the connector can deliver in the booking
    booked = estimate_amount(tariff, duration, max_power_w)
    assert booked.upper_bound
    assert _so_far(tariff, 15 * slots, energy_wh) <= booked.amount_paise


@given(price=prices, fee=prices, minimum=prices, slots=st.integers(1, 48))
def test_a_per_hour_booking_is_the_session_of_its_length_or_one_paisa_more(
    price: int, fee: int, minimum: int, slots: int
) -> None:
    tariff = Tariff(PricingMode.PER_HOUR, 0, price, fee, minimum)
    booked = estimate_amount(tariff, timedelta(minutes=15 * slots), 1)
    assert not booked.upper_bound
    assert 0 <= booked.amount_paise - _so_far(tariff, 15 * slots, 0) <= 1
