"""Session rows are folded from events in event_seq order, whatever the arrival order."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cloud.sessions.fold import fold_session
from cloud.sessions.models import SessionState
from protocols.enums import StopReason
from protocols.messages import SessionEvent
from protocols.testing import session_events

SID = "01HZZZZZZZZZZZZZZZZZZZZZZZ"
EVENTS = session_events("dev-1", SID, 1, updates=5)  # event_seq 1..7, 7 = stopped


def test_in_order_events_give_the_stopped_row() -> None:
    row = fold_session(EVENTS)
    assert row.state is SessionState.STOPPED
    assert row.energy_wh == 600
    assert row.meter_stop_wh == 1600
    assert row.stop_reason is StopReason.EV_DISCONNECTED
    assert row.last_event_seq == 7
    assert row.events_received == 7


def test_stopped_before_the_missing_updates_is_final() -> None:
    stopped, early = EVENTS[-1], EVENTS[:2]
    row = fold_session([stopped, *early])
    assert row.state is SessionState.STOPPED
    assert row.energy_wh == 600
    assert row.events_received == 3  # the gap (3..6) shows


def test_without_stop_the_highest_event_seq_wins() -> None:
    row = fold_session([EVENTS[3], EVENTS[1], EVENTS[0]])
    assert row.state is SessionState.ACTIVE
    assert row.energy_wh == 300
    assert row.power_w == 3500.0


def test_without_the_started_event_the_start_fields_come_from_any_event() -> None:
    row = fold_session([EVENTS[4]])
    assert row.started_at == EVENTS[0].started_at
    assert row.meter_start_wh == 1000


@given(st.permutations(EVENTS), st.sets(st.integers(0, 6), min_size=1), st.booleans())
def test_result_depends_on_the_set_of_events_not_their_order(
    order: list[SessionEvent], keep: set[int], duplicate: bool
) -> None:
    subset = [e for e in order if e.event_seq - 1 in keep]
    if duplicate:
        subset = subset + subset[:1]
    expected = fold_session(
        sorted({e.event_seq: e for e in subset}.values(), key=lambda e: e.event_seq)
    )
    assert fold_session(subset) == expected
    assert fold_session(reversed(subset)) == expected
    assert fold_session(subset).state is (
        SessionState.STOPPED if 6 in keep else SessionState.ACTIVE
    )
