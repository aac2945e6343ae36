"""The adaptive backlog window shared by the agent and the fleet simulator (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols.pacing import INITIAL_WINDOW, MIN_WINDOW, AckPacer


def test_slow_start_doubles_per_round_trip_then_grows_by_one() -> None:
    p = AckPacer(target_rtt_s=5.0, maximum=1000)
    assert p.room(0) == INITIAL_WINDOW
    for _ in range(INITIAL_WINDOW):  # a whole window acked in time
        p.acked(0.2, 1.0)
    assert p.window == 2 * INITIAL_WINDOW
    p.acked(6.0, 2.0)  # too slow: halve, and grow slowly from here
    assert p.window == INITIAL_WINDOW
    assert p.threshold == INITIAL_WINDOW
    for _ in range(INITIAL_WINDOW):  # one window of timely acks above the threshold
        p.acked(0.2, 10.0)
    assert INITIAL_WINDOW + 0.9 < p.window < INITIAL_WINDOW + 1.1


def test_one_decrease_per_round_trip() -> None:
    p = AckPacer(target_rtt_s=5.0, maximum=1000)
    p.acked(8.0, 100.0)
    p.acked(8.0, 101.0)  # the same flight's acks: no second halving
    p.timed_out(107.9, 30.0)
    assert p.window == INITIAL_WINDOW / 2
    p.acked(8.0, 108.0)  # a round trip later the signal is new
    assert p.window == INITIAL_WINDOW / 4


def test_room_counts_everything_awaiting_ack() -> None:
    p = AckPacer(target_rtt_s=5.0, maximum=1000)
    assert p.room(INITIAL_WINDOW - 3) == 3
    assert p.room(INITIAL_WINDOW + 50) == 0


def test_the_window_stays_within_its_bounds_and_restarts() -> None:
    p = AckPacer(target_rtt_s=1.0, maximum=20)
    for i in range(100):
        p.acked(0.1, float(i))
    assert p.window == 20
    for i in range(100):
        p.timed_out(1000.0 + 100 * i, 30.0)
    assert p.window == MIN_WINDOW
    p.restart()
    assert p.window == INITIAL_WINDOW


@pytest.mark.parametrize(("target", "maximum"), [(0.0, 100), (-1.0, 100), (5.0, MIN_WINDOW - 1)])
def test_bad_settings_are_refused(target: float, maximum: int) -> None:
    with pytest.raises(ValueError, match="must"):
        AckPacer(target_rtt_s=target, maximum=maximum)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["ack", "timeout", "restart"]),
            st.floats(0.0, 60.0),
            st.floats(0.0, 5.0),
        ),
        max_size=200,
    ),
    st.integers(MIN_WINDOW, 5000),
)
def test_the_window_never_leaves_its_bounds(
    ops: list[tuple[str, float, float]], maximum: int
) -> None:
    p = AckPacer(target_rtt_s=5.0, maximum=maximum)
    now = 0.0
    for op, rtt, step in ops:
        now += step
        if op == "ack":
            p.acked(rtt, now)
        elif op == "timeout":
            p.timed_out(now, 30.0)
        else:
            p.restart()
        assert MIN_WINDOW <= p.window <= maximum
        assert p.room(0) >= MIN_WINDOW
