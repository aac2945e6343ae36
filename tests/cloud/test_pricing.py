"""cloud.billing.quote: one pricing rule for a booking's estimate, a walk-up quote, a running
session's cost so far and a final bill — lines in integer paise that add up."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.billing.quote import (
    GST_RATE_BP,
    TAX_LINES,
    Line,
    LineKind,
    Quote,
    Rates,
    Tariff,
    Usage,
    cost_so_far_paise,
    is_upper_bound,
    max_energy_wh,
    price,
    window_usage,
)
from cloud.chargers.models import Charger, PricingMode

START = datetime(2026, 1, 1, tzinfo=UTC)
KWH = PricingMode.PER_KWH
HOUR = PricingMode.PER_HOUR


def _kinds(quote: Quote) -> dict[LineKind, int]:
    return {line.kind: line.amount_paise for line in quote.lines}


@pytest.mark.parametrize(
    ("tariff", "usage", "lines"),
    [
        # Per kWh: 7.4 kWh at 18.00 = 133.20; GST 9 % + 9 % of it = 11.988 -> 11.99 each.
        (
            Tariff(KWH, 1800, 0, 0, 0),
            Usage(timedelta(hours=1), 7400),
            {LineKind.ENERGY: 13320, LineKind.CGST: 1199, LineKind.SGST: 1199},
        ),
        # 1 Wh at 18.00/kWh is 1.8 paise: 2, halves up. Plus the session fee.
        (
            Tariff(KWH, 1800, 0, 500, 0),
            Usage(timedelta(minutes=1), 1),
            {LineKind.ENERGY: 2, LineKind.SESSION_FEE: 500, LineKind.CGST: 45, LineKind.SGST: 45},
        ),
        # 0.5 paise rounds half up to 1; 1.2 paise to 1.
        (Tariff(KWH, 500, 0, 0, 0), Usage(timedelta(0), 1), {LineKind.ENERGY: 1}),
        (Tariff(KWH, 1200, 0, 0, 0), Usage(timedelta(0), 1), {LineKind.ENERGY: 1}),
        # 0.4 paise rounds to 0.
        (Tariff(KWH, 400, 0, 0, 0), Usage(timedelta(0), 1), {LineKind.ENERGY: 0}),
        # Per hour: 60.00/h for 90 min, the energy ignored.
        (
            Tariff(HOUR, 1800, 6000, 0, 0),
            Usage(timedelta(minutes=90), 99_999),
            {LineKind.TIME: 9000, LineKind.CGST: 810, LineKind.SGST: 810},
        ),
        # 1.00/h for 20 min is 33.3 paise: 33 (a booking of 20 min costs the same).
        (
            Tariff(HOUR, 0, 100, 0, 0),
            Usage(timedelta(minutes=20), 0),
            {LineKind.TIME: 33, LineKind.CGST: 3, LineKind.SGST: 3},
        ),
        # 0.50/h for 15 min is 12.5 paise: 13, halves up; milliseconds count.
        (
            Tariff(HOUR, 0, 50, 0, 0),
            Usage(timedelta(minutes=15), 0),
            {LineKind.TIME: 13, LineKind.CGST: 1, LineKind.SGST: 1},
        ),
        (Tariff(HOUR, 0, 3_600_000, 0, 0), Usage(timedelta(milliseconds=1), 0), {LineKind.TIME: 1}),
        # The minimum charge tops usage + fee up to 50.00.
        (
            Tariff(KWH, 1800, 0, 500, 5000),
            Usage(timedelta(minutes=5), 100),
            {
                LineKind.ENERGY: 180,
                LineKind.SESSION_FEE: 500,
                LineKind.MINIMUM_CHARGE: 4320,
                LineKind.CGST: 450,
                LineKind.SGST: 450,
            },
        ),
        # Above the minimum: no top-up line.
        (
            Tariff(HOUR, 0, 6000, 0, 2000),
            Usage(timedelta(hours=1), 0),
            {LineKind.TIME: 6000, LineKind.CGST: 540, LineKind.SGST: 540},
        ),
        # Idle: 2.00/min after a 10-minute grace, per started minute; 25.5 minutes idle is
        # 15.5 beyond the grace, 16 started minutes = 32.00.
        (
            Tariff(KWH, 1000, 0, 0, 0, idle_fee_per_min_paise=200, idle_grace_min=10),
            Usage(timedelta(hours=1), 1000, idle=timedelta(minutes=25, seconds=30)),
            {
                LineKind.ENERGY: 1000,
                LineKind.IDLE_FEE: 3200,
                LineKind.CGST: 378,
                LineKind.SGST: 378,
            },
        ),
        # One millisecond beyond the grace starts a minute.
        (
            Tariff(KWH, 1000, 0, 0, 0, idle_fee_per_min_paise=200, idle_grace_min=10),
            Usage(timedelta(hours=1), 1000, idle=timedelta(minutes=10, milliseconds=1)),
            {LineKind.ENERGY: 1000, LineKind.IDLE_FEE: 200, LineKind.CGST: 108, LineKind.SGST: 108},
        ),
        # Idle within the grace costs nothing (no line).
        (
            Tariff(KWH, 1000, 0, 0, 0, idle_fee_per_min_paise=200, idle_grace_min=10),
            Usage(timedelta(hours=1), 1000, idle=timedelta(minutes=10)),
            {LineKind.ENERGY: 1000, LineKind.CGST: 90, LineKind.SGST: 90},
        ),
        # The idle fee is not part of the minimum charge's base: it is a fee on its own.
        (
            Tariff(KWH, 1000, 0, 0, 5000, idle_fee_per_min_paise=100, idle_grace_min=0),
            Usage(timedelta(0), 0, idle=timedelta(minutes=1)),
            {
                LineKind.ENERGY: 0,
                LineKind.MINIMUM_CHARGE: 5000,
                LineKind.IDLE_FEE: 100,
                LineKind.CGST: 459,
                LineKind.SGST: 459,
            },
        ),
        # Free: every line zero, the total zero.
        (Tariff(KWH, 0, 0, 0, 0), Usage(timedelta(hours=1), 5000), {LineKind.ENERGY: 0}),
    ],
)
def test_each_line_follows_its_rule(
    tariff: Tariff, usage: Usage, lines: dict[LineKind, int]
) -> None:
    quote = price(tariff, usage)
    expected = {LineKind.CGST: 0, LineKind.SGST: 0} | lines
    assert _kinds(quote) == expected
    assert quote.total_paise == sum(expected.values())
    assert quote.gst_paise == expected[LineKind.CGST] + expected[LineKind.SGST]


def test_lines_say_what_was_priced() -> None:
    quote = price(Tariff(KWH, 1800, 0, 500, 0), Usage(timedelta(hours=1), 7400))
    assert quote.lines == (
        Line(LineKind.ENERGY, 13320, 7400, "Wh"),
        Line(LineKind.SESSION_FEE, 500, 1, "session"),
        Line(LineKind.CGST, 1244, 900, "bp"),
        Line(LineKind.SGST, 1244, 900, "bp"),
    )
    assert quote.taxable_paise == 13820
    assert quote.total_paise == 13820 + 2488


def test_commission_is_a_share_of_the_taxable_value_and_the_host_gets_the_rest() -> None:
    tariff = Tariff(KWH, 1800, 0, 500, 0)
    usage = Usage(timedelta(hours=1), 7400)
    default = price(tariff, usage)
    assert default.commission_paise == 1382  # 10 % of 138.20
    assert default.host_share_paise == 13820 - 1382
    custom = price(tariff, usage, Rates(commission_bp=1250))
    assert custom.commission_paise == 1728  # 12.5 % of 138.20 = 17.275 -> 17.28
    assert custom.host_share_paise == 13820 - 1728
    assert custom.total_paise == default.total_paise  # the driver pays the same


def test_an_interstate_supply_is_charged_igst() -> None:
    quote = price(Tariff(KWH, 1800, 0, 0, 0), Usage(timedelta(hours=1), 7400), interstate=True)
    assert _kinds(quote) == {LineKind.ENERGY: 13320, LineKind.IGST: 2398}  # 18 % of 133.20


def test_the_tariff_is_read_from_the_charger_row() -> None:
    charger = Charger(
        pricing_mode=PricingMode.PER_HOUR,
        price_per_kwh_paise=1,
        price_per_hour_paise=2,
        session_fee_paise=3,
        min_charge_paise=4,
        idle_fee_per_min_paise=5,
        idle_grace_min=6,
    )
    assert Tariff.from_charger(charger) == Tariff(HOUR, 1, 2, 3, 4, 5, 6)
    unsaved = Charger(
        pricing_mode=KWH,
        price_per_kwh_paise=1,
        price_per_hour_paise=0,
        session_fee_paise=0,
        min_charge_paise=0,
    )
    assert Tariff.from_charger(unsaved) == Tariff(KWH, 1, 0, 0, 0, 0, 10)


def test_a_session_not_started_costs_its_fee() -> None:
    tariff = Tariff(HOUR, 0, 6000, 100, 0)
    assert cost_so_far_paise(tariff, energy_wh=500, started_at=None, until=START) == 118


def test_the_most_energy_of_a_window_is_rounded_up_to_the_watt_hour() -> None:
    assert max_energy_wh(timedelta(hours=1), 7400) == 7400
    assert max_energy_wh(timedelta(minutes=15), 1) == 1  # 0.25 Wh
    assert max_energy_wh(timedelta(0), 7400) == 0
    assert is_upper_bound(Tariff(KWH, 1, 0, 0, 0))
    assert not is_upper_bound(Tariff(HOUR, 0, 1, 0, 0))


# --- properties -----------------------------------------------------------------------------

prices = st.integers(0, 1_000_000)  # up to the listing cap, ₹10,000
tariffs = st.builds(
    Tariff,
    mode=st.sampled_from(PricingMode),
    price_per_kwh_paise=prices,
    price_per_hour_paise=prices,
    session_fee_paise=prices,
    min_charge_paise=prices,
    idle_fee_per_min_paise=st.integers(0, 100_000),
    idle_grace_min=st.integers(0, 120),
)
durations = st.integers(0, 48 * 3_600_000).map(lambda ms: timedelta(milliseconds=ms))
usages = st.builds(Usage, duration=durations, energy_wh=st.integers(0, 10_000_000), idle=durations)
rates = st.builds(Rates, commission_bp=st.integers(0, 10_000))


def _is_int(value: object) -> bool:
    return type(value) is int


@given(tariff=tariffs, usage=usages, rates=rates, interstate=st.booleans())
def test_every_amount_is_an_int_and_the_lines_add_up(
    tariff: Tariff, usage: Usage, rates: Rates, interstate: bool
) -> None:
    quote = price(tariff, usage, rates, interstate=interstate)
    amounts = [line.amount_paise for line in quote.lines]
    fields = (quote.taxable_paise, quote.gst_paise, quote.total_paise)
    assert all(_is_int(a) and a >= 0 for a in (*amounts, *fields, quote.commission_paise))
    assert _is_int(quote.host_share_paise)
    assert sum(amounts) == quote.total_paise
    assert quote.taxable_paise == sum(
        line.amount_paise for line in quote.lines if line.kind not in TAX_LINES
    )
    assert quote.total_paise == quote.taxable_paise + quote.gst_paise
    assert quote.host_share_paise + quote.commission_paise == quote.taxable_paise
    assert quote.taxable_paise >= tariff.min_charge_paise
    # GST within a paisa per tax line of 18 % of the taxable value.
    exact = Fraction(quote.taxable_paise * GST_RATE_BP, 10_000)
    tax_lines = 1 if interstate else 2
    assert abs(quote.gst_paise - exact) <= Fraction(tax_lines, 2)


@given(
    tariff=tariffs,
    window=st.integers(0, 48 * 4).map(lambda q: timedelta(minutes=15 * q)),
    max_power_w=st.integers(1, 350_000),
    time_share=st.fractions(0, 1),
    energy_share=st.fractions(0, 1),
)
def test_an_estimate_bounds_the_bill_of_any_session_within_its_window(
    tariff: Tariff,
    window: timedelta,
    max_power_w: int,
    time_share: Fraction,
    energy_share: Fraction,
) -> None:
    estimate = price(tariff, window_usage(window, max_power_w))
    ms = int(window // timedelta(milliseconds=1) * time_share)
    # Any energy the connector can deliver in that time (a meter counts whole Wh).
    most_wh = max_power_w * ms // 3_600_000
    session = Usage(timedelta(milliseconds=ms), int(most_wh * energy_share))
    bill = price(tariff, session)
    assert bill.total_paise <= estimate.total_paise
    assert bill.taxable_paise <= estimate.taxable_paise
    assert bill.commission_paise <= estimate.commission_paise
    if tariff.mode is HOUR:
        # Per hour the estimate is exact: the bill of a session lasting the whole window.
        whole = price(tariff, Usage(window, 0))
        assert whole == estimate


@given(tariff=tariffs, usage=usages, more_ms=st.integers(0, 10**7), more_wh=st.integers(0, 10**6))
def test_more_usage_never_costs_less(
    tariff: Tariff, usage: Usage, more_ms: int, more_wh: int
) -> None:
    longer = Usage(
        usage.duration + timedelta(milliseconds=more_ms),
        usage.energy_wh + more_wh,
        usage.idle + timedelta(milliseconds=more_ms),
    )
    assert price(tariff, longer).total_paise >= price(tariff, usage).total_paise


@given(tariff=tariffs, energy_wh=st.integers(0, 10**6), ms=st.integers(0, 10**8))
def test_the_cost_so_far_is_the_bill_of_the_session_so_far(
    tariff: Tariff, energy_wh: int, ms: int
) -> None:
    until = START + timedelta(milliseconds=ms)
    so_far = cost_so_far_paise(tariff, energy_wh=energy_wh, started_at=START, until=until)
    assert so_far == price(tariff, Usage(until - START, energy_wh)).total_paise
