"""The uplink's pure bookkeeping: window bounds, acks, timeouts, resets, rate, backoff, and
the resend schedule of rows the broker dropped for want of a subscriber (PUBACK 0x10)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge_agent.backoff import Backoff
from edge_agent.sync.window import TokenBucket, UplinkWindow
from protocols.pacing import INITIAL_WINDOW, MIN_WINDOW, AckPacer


def window() -> UplinkWindow:
    return UplinkWindow(max_publishing=3, max_unacked=5, ack_timeout_s=10.0)


def test_room_is_bounded_by_both_stages() -> None:
    w = window()
    assert w.room() == 3
    for seq in (1, 2, 3):
        w.published(seq, 0.0)
    assert w.room() == 0  # three without PUBACK
    w.puback(1, 0.1)
    w.puback(2, 0.1)
    assert w.room() == 2  # publishing 1/3, unacked 3/5
    w.published(4, 0.2)
    w.published(5, 0.2)
    assert w.room() == 0  # five unacked


def test_a_puback_is_not_an_ack() -> None:
    w = window()
    w.published(1, 0.0)
    assert w.puback(1, 0.5)
    assert 1 in w
    assert w.acked([(1, 1)], 1.0) == [1]
    assert 1 not in w
    assert not w.puback(1, 0.6)  # late PUBACK for a forgotten seq changes nothing


def test_unacked_rows_time_out_oldest_first() -> None:
    w = window()
    w.published(2, 0.0)
    w.published(1, 1.0)
    w.puback(2, 5.0)
    # The PUBACK restarted seq 2's clock: it now waits for the cloud's ack until 15.0.
    assert w.timed_out(10.9) == []
    assert w.timed_out(11.0) == [1]
    assert w.timed_out(14.9) == []
    assert w.timed_out(15.0) == [2]
    assert len(w) == 0


def test_reset_returns_everything_in_flight() -> None:
    w = window()
    for seq in (3, 1, 2):
        w.published(seq, 0.0)
    w.puback(3, 0.0)
    assert w.reset() == [1, 2, 3]
    assert (len(w), w.publishing, w.room()) == (0, 0, 3)


def test_publishing_the_same_seq_twice_is_a_bug() -> None:
    w = window()
    w.published(1, 0.0)
    with pytest.raises(ValueError, match="already in flight"):
        w.published(1, 0.0)


def dropping_window(rand: float, ack_timeout_s: float = 30.0) -> UplinkWindow:
    """A window whose dropped rows back off from 1 s, with the jitter fixed at ``rand``."""
    return UplinkWindow(
        max_publishing=3,
        max_unacked=5,
        ack_timeout_s=ack_timeout_s,
        no_subscribers=Backoff(initial_s=1.0, max_s=ack_timeout_s),
        rand=lambda: rand,
    )


def drop_until_due(w: UplinkWindow, seq: int, now: float) -> float:
    """Publish ``seq``, have the broker drop it, and return when it came due (left the window
    for the resend lane), checking each 10 ms as the drain would."""
    w.published(seq, now)
    delay_s = w.dropped(seq, now)
    assert delay_s is not None
    assert w.next_drop_due == now + delay_s
    t = now
    while True:
        t = round(t + 0.01, 2)
        if w.timed_out(t):
            return t - now


def test_a_dropped_row_alone_comes_due_early_and_the_others_wait_for_their_ack() -> None:
    w = dropping_window(rand=1.0)
    for seq in (1, 2, 3):
        w.published(seq, 0.0)
    w.puback(1, 0.0)
    assert w.dropped(2, 0.0) == 1.0  # the broker dropped seq 2: no ack will come for it
    assert w.publishing == 1  # a drop is a PUBACK: the window has room again
    assert w.timed_out(0.99) == []
    assert w.timed_out(1.0) == [2]
    assert (1 in w, 2 in w, 3 in w) == (True, False, True)
    assert w.timed_out(29.9) == []  # seq 1 (PUBACKed) and 3 (publishing) keep their timeout
    assert w.timed_out(30.0) == [1, 3]


def test_a_dropped_rows_backoff_doubles_per_consecutive_drop_and_caps_at_the_ack_timeout() -> None:
    for rand, expected in ((1.0, [1, 2, 4, 8, 16, 30, 30, 30]), (0.0, [0.5, 1, 2, 4, 8, 15, 15])):
        w = dropping_window(rand)
        now, delays = 0.0, []
        for _ in expected:
            delay = drop_until_due(w, 7, now)
            delays.append(delay)
            now += delay
        assert delays == pytest.approx(expected)


def test_a_routed_puback_an_ack_or_a_new_connection_starts_the_backoff_over() -> None:
    w = dropping_window(rand=1.0)
    assert [drop_until_due(w, 7, t) for t in (0.0, 10.0, 20.0)] == pytest.approx([1, 2, 4])
    w.published(7, 30.0)
    w.puback(7, 30.0)  # ingest is back: the broker routed it
    w.timed_out(60.0)
    assert drop_until_due(w, 7, 100.0) == pytest.approx(1)
    assert drop_until_due(w, 7, 110.0) == pytest.approx(2)
    w.published(7, 120.0)
    w.acked([(7, 7)], 121.0)
    assert drop_until_due(w, 7, 130.0) == pytest.approx(1)
    assert drop_until_due(w, 7, 140.0) == pytest.approx(2)
    w.reset()
    assert drop_until_due(w, 7, 150.0) == pytest.approx(1)
    # Each seq has its own streak.
    assert drop_until_due(w, 8, 160.0) == pytest.approx(1)


def test_without_a_backoff_a_dropped_row_waits_for_the_ack_timeout() -> None:
    w = window()  # ack_timeout_s 10, no no_subscribers backoff: the agent before 0x10 resends
    w.published(1, 0.0)
    assert w.dropped(1, 2.0) == 10.0
    assert w.timed_out(11.9) == []
    assert w.timed_out(12.0) == [1]


def test_a_late_drop_for_a_row_not_publishing_changes_nothing() -> None:
    w = dropping_window(rand=1.0)
    assert w.dropped(1, 0.0) is None  # unknown seq
    w.published(1, 0.0)
    w.puback(1, 0.0)
    assert w.dropped(1, 0.1) is None  # already PUBACKed
    assert w.timed_out(29.9) == []


@given(
    st.lists(
        st.tuples(st.sampled_from(["pub", "puback", "drop", "ack", "tick"]), st.integers(1, 20))
    )
)
def test_window_invariants_hold_under_any_sequence(ops: list[tuple[str, int]]) -> None:
    w = UplinkWindow(
        max_publishing=4,
        max_unacked=8,
        ack_timeout_s=3.0,
        no_subscribers=Backoff(initial_s=0.5, max_s=3.0),
        pacer=AckPacer(target_rtt_s=2.0, maximum=8),
    )
    now = 0.0
    for op, seq in ops:
        now += 1.0
        if op == "pub" and w.room() > 0 and seq not in w:
            w.published(seq, now)
        elif op == "puback":
            w.puback(seq, now)
        elif op == "drop":
            delay = w.dropped(seq, now)
            assert delay is None or 0 < delay <= 3.0
        elif op == "ack":
            w.acked([(seq, seq + 2)], now)
        else:
            w.timed_out(now)
        assert 0 <= w.publishing <= 4
        assert len(w) <= 8
        assert 0 <= w.paced_room() <= w.room()
        assert MIN_WINDOW <= w.pacer.window <= 8  # type: ignore[union-attr]


def test_token_bucket_limits_rate_and_burst() -> None:
    bucket = TokenBucket(rate_per_s=10.0, burst=5.0, now=0.0)
    assert bucket.available(0.0) == 5
    bucket.take(5, 0.0)
    assert bucket.available(0.0) == 0
    assert bucket.wait_s(0.0) == pytest.approx(0.1)
    assert bucket.available(0.35) == 3
    assert bucket.available(100.0) == 5  # never more than the burst
    with pytest.raises(ValueError, match="more tokens"):
        bucket.take(6, 100.0)


def test_backoff_grows_with_jitter_and_caps() -> None:
    b = Backoff(initial_s=1.0, max_s=30.0)
    assert [b.delay_s(n, lambda: 0.0) for n in range(7)] == [0.5, 1, 2, 4, 8, 15, 15]
    assert [b.delay_s(n, lambda: 1.0) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert b.delay_s(10_000, lambda: 0.5) == 22.5


def paced_window() -> UplinkWindow:
    return UplinkWindow(
        max_publishing=200,
        max_unacked=10_000,
        ack_timeout_s=30.0,
        no_subscribers=Backoff(initial_s=1.0, max_s=30.0),
        pacer=AckPacer(target_rtt_s=5.0, maximum=10_000),
    )


def test_the_pacer_limits_paced_rows_not_the_window() -> None:
    w = paced_window()
    assert w.paced_room() == INITIAL_WINDOW
    for seq in range(1, INITIAL_WINDOW + 1):
        w.published(seq, 0.0, paced=True)
    assert w.paced_room() == 0
    assert w.room() == 200 - INITIAL_WINDOW  # live and urgent rows still go


def test_live_rows_in_flight_never_leave_the_backlog_without_room() -> None:
    """A cloud steadily slower than the target pins the pacer at its minimum; the rows it
    does not pace (live, urgent) must not take that minimum too."""
    w = paced_window()
    assert w.pacer is not None
    for seq in range(1, 5):  # every ack 6 s late: slower than the target, halving each time
        w.published(seq, 100.0 * seq, paced=True)
        w.acked([(seq, seq)], 100.0 * seq + 6)
    assert w.pacer.window == MIN_WINDOW
    for seq in range(100, 120):  # live readings awaiting their slow acks
        w.published(seq, 500.0)
    assert w.paced_room() == MIN_WINDOW


def test_the_ack_of_a_resent_row_does_not_grow_the_pacer() -> None:
    """It may be the first copy's ack, long after the timeout: no round trip to learn from
    (Karn's rule)."""
    w = paced_window()
    assert w.pacer is not None
    w.published(1, 0.0, paced=True)
    assert w.timed_out(30.0) == [1]
    halved = w.pacer.window
    w.published(1, 30.5, paced=True)
    w.acked([(1, 1)], 31.0)  # 0.5 s after the resend, 31 s after the first copy
    assert w.pacer.window == halved
    w.published(2, 40.0, paced=True)
    w.acked([(2, 2)], 40.1)  # a fresh row's ack counts again
    assert w.pacer.window > halved


def test_timely_acks_grow_the_pacer_and_slow_ones_halve_it() -> None:
    w = paced_window()
    for seq in range(1, 17):
        w.published(seq, 0.0)
    w.acked([(1, 16)], 0.5)  # slow start: one more row per timely ack
    assert w.pacer is not None
    assert w.pacer.window == 32
    for seq in range(17, 49):
        w.published(seq, 1.0)
    w.acked([(17, 48)], 7.0)  # the cloud took 6 s: queueing somewhere
    assert w.pacer.window == 16  # halved once for the whole flight, not 32 times


def test_a_timeout_halves_the_pacer_but_a_drop_does_not() -> None:
    w = paced_window()
    assert w.pacer is not None
    w.published(1, 0.0)
    w.published(2, 0.0)
    w.dropped(1, 0.1)  # no subscriber: not congestion
    assert w.timed_out(2.0) == [1]
    assert w.pacer.window == INITIAL_WINDOW
    assert w.timed_out(30.0) == [2]  # no ack at all within the timeout
    assert w.pacer.window == INITIAL_WINDOW / 2


def test_a_new_connection_slow_starts_the_pacer_again() -> None:
    w = paced_window()
    assert w.pacer is not None
    w.published(1, 0.0)
    assert w.timed_out(30.0) == [1]
    assert w.pacer.window < INITIAL_WINDOW
    w.reset()
    assert w.pacer.window == INITIAL_WINDOW
