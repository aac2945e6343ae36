"""Relay fail-safe rules: each rule fires at its threshold and not before."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.relay.failsafe import (
    Observation,
    SafetyLimits,
    VerdictKind,
    Watch,
    assess,
    plausible,
    relay_opened,
    start_watch,
)
from protocols.enums import StopReason
from protocols.meters import Quantity

LIM = SafetyLimits(rating_a=32.0)


def _values(
    energy: float = 1000.0, power: float = 7000.0, amps: float = 30.0
) -> dict[Quantity, float]:
    return {Quantity.ENERGY_IMPORT_WH: energy, Quantity.POWER_W: power, Quantity.CURRENT_L1_A: amps}


def _closed(mono: float, values: dict[Quantity, float] | None = None, **kw: object) -> Observation:
    return Observation(mono=mono, relay_closed=True, values=values, **kw)  # type: ignore[arg-type]


def test_good_readings_keep_the_relay_closed() -> None:
    watch = start_watch(0.0)
    for t in range(10):
        watch, verdict = assess(watch, _closed(float(t), _values(1000 + t)), LIM)
        assert verdict is None


def test_silent_meter_stops_after_three_seconds_not_before() -> None:
    watch, _ = assess(start_watch(0.0), _closed(0.0, _values()), LIM)
    watch, verdict = assess(watch, _closed(3.0, None), LIM)
    assert verdict is None
    watch, verdict = assess(watch, _closed(3.01, None, polled=False), LIM)
    assert verdict is not None
    assert verdict.kind is VerdictKind.STOP
    assert verdict.reason is StopReason.METER_FAILURE


def test_implausible_readings_count_as_silence() -> None:
    watch, _ = assess(start_watch(0.0), _closed(0.0, _values(1000)), LIM)
    # The import register jumps by 50 kWh in a second: not trusted.
    watch, verdict = assess(watch, _closed(1.0, _values(51_000)), LIM)
    assert verdict is None
    _, verdict = assess(watch, _closed(3.5, _values(51_000)), LIM)
    assert verdict is not None
    assert verdict.reason is StopReason.METER_FAILURE


def test_plausibility_reasons() -> None:
    assert plausible(_values(), None, LIM) is None
    assert plausible({Quantity.POWER_W: 1.0}, None, LIM) is not None
    assert plausible(_values(energy=-1), None, LIM) is not None
    assert plausible(_values(power=-500), None, LIM) is not None
    assert plausible(_values(power=-10), None, LIM) is None
    assert plausible(_values(energy=20_001), 10_000, LIM) is not None


def test_overcurrent_stops_after_the_hold_time_and_resets_when_it_drops() -> None:
    over = 32 * 1.1 + 0.5
    watch = start_watch(0.0)
    watch, verdict = assess(watch, _closed(0.0, _values(amps=over)), LIM)
    assert verdict is None
    watch, verdict = assess(watch, _closed(4.9, _values(amps=over)), LIM)
    assert verdict is None
    # It drops below the limit: the hold timer starts again.
    watch, verdict = assess(watch, _closed(5.0, _values(amps=30)), LIM)
    assert verdict is None
    watch, _ = assess(watch, _closed(6.0, _values(amps=over)), LIM)
    watch, verdict = assess(watch, _closed(10.9, _values(amps=over)), LIM)
    assert verdict is None
    _, verdict = assess(watch, _closed(11.0, _values(amps=over)), LIM)
    assert verdict is not None
    assert verdict.reason is StopReason.OVER_CURRENT


def test_current_at_exactly_110_percent_is_allowed() -> None:
    watch = start_watch(0.0)
    for t in range(10):
        watch, verdict = assess(watch, _closed(float(t), _values(amps=32 * 1.1)), LIM)
        assert verdict is None


def test_limits_and_deauthorization_stop() -> None:
    watch = start_watch(0.0)
    cases: list[tuple[dict[str, object], StopReason]] = [
        ({"session_energy_wh": 10_000, "max_wh": 10_000}, StopReason.ENERGY_LIMIT_REACHED),
        ({"session_elapsed_s": 3600.0, "max_s": 3600}, StopReason.TIME_LIMIT_REACHED),
        ({"authorized": False}, StopReason.DE_AUTHORIZED),
    ]
    for extra, reason in cases:
        _, verdict = assess(watch, _closed(0.5, _values(), **extra), LIM)
        assert verdict is not None
        assert verdict.reason is reason
    _, verdict = assess(watch, _closed(0.5, _values(), session_energy_wh=9_999, max_wh=10_000), LIM)
    assert verdict is None


def _open(mono: float, values: dict[Quantity, float] | None) -> Observation:
    return Observation(mono=mono, relay_closed=False, values=values)


def test_power_two_seconds_after_opening_is_a_stuck_relay() -> None:
    watch = relay_opened(start_watch(0.0), 10.0)
    watch, verdict = assess(watch, _open(11.9, _values(power=7000)), LIM)
    assert verdict is None  # the contactor and the meter's averaging need time
    watch, verdict = assess(watch, _open(12.0, _values(power=7000)), LIM)
    assert verdict is not None
    assert verdict.kind is VerdictKind.STUCK_RELAY
    assert watch.opened_at is None


def test_no_power_after_opening_confirms_the_relay_open() -> None:
    watch = relay_opened(start_watch(0.0), 10.0)
    watch, verdict = assess(watch, _open(12.5, None), LIM)
    assert verdict is None  # no evidence yet: keep waiting
    watch, verdict = assess(watch, _open(13.0, _values(power=3)), LIM)
    assert verdict is not None
    assert verdict.kind is VerdictKind.RELAY_CONFIRMED_OPEN
    _, verdict = assess(watch, _open(20.0, _values(power=3)), LIM)
    assert verdict is None


def test_an_open_relay_never_triggers_stop_rules() -> None:
    watch = start_watch(0.0)
    _, verdict = assess(watch, _open(100.0, None), LIM)
    assert verdict is None


@given(
    st.lists(
        st.tuples(
            st.floats(0.01, 2.0),
            st.one_of(st.none(), st.floats(0, 100)),
        ),
        max_size=40,
    )
)
def test_meter_silence_is_always_caught_within_the_limit(
    steps: list[tuple[float, float | None]],
) -> None:
    """Whatever the pattern of good and failed polls, the relay never stays closed while the
    last plausible reading is more than meter_silence_s old."""
    watch = start_watch(0.0)
    mono = 0.0
    energy = 1000.0
    for gap, amps in steps:
        mono += gap
        values = None if amps is None else _values(energy, 1000.0, min(amps, 35.0))
        watch, verdict = assess(watch, _closed(mono, values), LIM)
        if mono - watch.last_good_mono > LIM.meter_silence_s:
            assert verdict is not None
            assert verdict.reason is StopReason.METER_FAILURE
            return
        assert isinstance(watch, Watch)


def test_a_physically_impossible_reading_is_not_trusted() -> None:
    """The fail-safe shares doctor's physics (edge_agent/plausible.py): a NaN import register
    or a 50 kV phase is no reading, however complete."""
    assert plausible(_values(energy=math.nan), None, LIM) is not None
    assert plausible({**_values(), Quantity.VOLTAGE_L1_V: 50_000.0}, None, LIM) is not None
    assert plausible({**_values(), Quantity.VOLTAGE_L1_V: 231.0}, None, LIM) is None
