"""The connector state machine: transitions, effects in a safe order, honest energy."""

from __future__ import annotations

import itertools
from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from edge_agent.sessions.machine import (
    Authorize,
    ClearFault,
    CloseByHand,
    Connector,
    EmitSessionEvent,
    Fault,
    Rejected,
    RelayConfirmedOpen,
    Release,
    Reserve,
    Sample,
    SetRelay,
    Stop,
    Thresholds,
    progress,
    step,
)
from protocols.enums import ConnectorStatus, CredentialKind, SessionEventType, StopReason
from protocols.ids import new_ulid
from protocols.messages import CredentialRef

from .conftest import T0

TAG = CredentialRef(kind=CredentialKind.ID_TAG, ref="f" * 64)
TH = Thresholds(charging_power_w=100.0, suspended_after_s=10.0)


def _authorize(meter_wh: int = 5000, mono: float = 0.0) -> Authorize:
    return Authorize(new_ulid(), TAG, T0, mono, meter_wh)


def _sample(mono: float, meter_wh: int, power_w: float) -> Sample:
    return Sample(T0 + timedelta(seconds=mono), mono, meter_wh, power_w)


def test_authorize_stores_the_session_before_closing_the_relay() -> None:
    conn, effects = step(Connector(1), _authorize())
    assert conn.status is ConnectorStatus.PREPARING
    assert isinstance(effects[0], EmitSessionEvent)
    assert effects[0].event is SessionEventType.STARTED
    assert effects[0].session.event_seq == 1
    assert effects[1] == SetRelay(closed=True)


def test_full_cycle_available_to_available() -> None:
    conn, _ = step(Connector(1), _authorize(5000))
    conn, _ = step(conn, _sample(1, 5001, 7000), TH)
    assert conn.status is ConnectorStatus.CHARGING
    conn, _ = step(conn, _sample(2, 5010, 0), TH)
    assert conn.status is ConnectorStatus.CHARGING  # a dip is not a pause
    conn, _ = step(conn, _sample(12, 5010, 0), TH)
    assert conn.status is ConnectorStatus.SUSPENDED_EV
    conn, _ = step(conn, _sample(13, 5020, 6500), TH)
    assert conn.status is ConnectorStatus.CHARGING
    conn, effects = step(conn, Stop(StopReason.LOCAL, T0, 14, meter_wh=5100))
    assert conn.status is ConnectorStatus.FINISHING
    # Power off first, then the record.
    assert effects[0] == SetRelay(closed=False)
    stopped = effects[1]
    assert isinstance(stopped, EmitSessionEvent)
    assert stopped.event is SessionEventType.STOPPED
    assert stopped.session.energy_wh == 100
    assert stopped.session.event_seq == 2
    assert stopped.session.stop_reason is StopReason.LOCAL
    conn, effects = step(conn, RelayConfirmedOpen(16))
    assert conn == Connector(1)
    assert effects == ()


def test_authorize_on_a_busy_connector_is_rejected_without_effects() -> None:
    conn, _ = step(Connector(1), _authorize())
    again, effects = step(conn, _authorize())
    assert again == conn
    assert len(effects) == 1
    assert isinstance(effects[0], Rejected)


def test_stop_without_session_is_rejected() -> None:
    conn, effects = step(Connector(1), Stop(StopReason.LOCAL, T0, 0))
    assert conn == Connector(1)
    assert isinstance(effects[0], Rejected)


def test_fault_opens_relay_stops_session_and_needs_clearing() -> None:
    conn, _ = step(Connector(1), _authorize(100))
    conn, _ = step(conn, _sample(1, 150, 7000), TH)
    conn, effects = step(conn, Fault(StopReason.STUCK_RELAY, T0, 2))
    assert conn.status is ConnectorStatus.FAULTED
    assert effects[0] == SetRelay(closed=False)
    assert isinstance(effects[1], EmitSessionEvent)
    assert effects[1].session.stop_reason is StopReason.STUCK_RELAY
    assert effects[1].session.energy_wh == 50
    still, effects = step(conn, _authorize())
    assert still.status is ConnectorStatus.FAULTED
    assert isinstance(effects[0], Rejected)
    cleared, _ = step(conn, ClearFault(3))
    assert cleared == Connector(1)


def test_fault_in_finishing_does_not_emit_a_second_stop() -> None:
    conn, _ = step(Connector(1), _authorize())
    conn, _ = step(conn, Stop(StopReason.LOCAL, T0, 1))
    conn, effects = step(conn, Fault(StopReason.STUCK_RELAY, T0, 3))
    assert conn.status is ConnectorStatus.FAULTED
    assert effects == (SetRelay(closed=False),)


def test_progress_events_count_up_within_the_session() -> None:
    conn, _ = step(Connector(1), _authorize())
    conn, first = progress(conn)
    conn, second = progress(conn)
    assert first is not None
    assert second is not None
    assert (first.session.event_seq, second.session.event_seq) == (2, 3)
    assert second.event is SessionEventType.UPDATED
    _, effects = step(conn, Stop(StopReason.REMOTE, T0, 5))
    stop = effects[1]
    assert isinstance(stop, EmitSessionEvent)
    assert stop.session.event_seq == 4
    assert progress(Connector(2)) == (Connector(2), None)


def test_register_going_backwards_is_flagged_and_bills_what_was_seen() -> None:
    conn, _ = step(Connector(1), _authorize(1000))
    conn, _ = step(conn, _sample(1, 1400, 7000), TH)
    conn, effects = step(conn, Stop(StopReason.LOCAL, T0, 2, meter_wh=3))  # meter replaced
    stop = effects[1]
    assert isinstance(stop, EmitSessionEvent)
    assert stop.session.went_backwards
    assert stop.session.energy_wh == 400
    assert stop.session.meter_wh == 3


@given(
    start=st.integers(0, 10**9),
    deltas=st.lists(st.integers(-5000, 5000), min_size=0, max_size=40),
)
def test_energy_is_never_negative_and_exact_when_monotonic(start: int, deltas: list[int]) -> None:
    conn, _ = step(Connector(1), _authorize(start))
    meter = start
    seen = [start]
    for i, delta in enumerate(deltas):
        meter = max(0, meter + delta)
        seen.append(meter)
        conn, _ = step(conn, _sample(float(i + 1), meter, 1000.0), TH)
    conn, effects = step(conn, Stop(StopReason.LOCAL, T0, 100.0))
    stop = effects[1]
    assert isinstance(stop, EmitSessionEvent)
    energy = stop.session.energy_wh
    assert energy >= 0
    monotonic = all(b >= a for a, b in itertools.pairwise(seen))
    assert stop.session.went_backwards is not monotonic
    if monotonic:
        assert energy == meter - start
    else:
        assert energy == max(seen) - start


# --- a technician's hands: reservation, a relay closed by hand, release ---------------------


def test_a_technician_holds_an_available_connector_closes_and_releases_it() -> None:
    held, effects = step(Connector(1), Reserve(0.0))
    assert (held.status, held.held, effects) == (ConnectorStatus.UNAVAILABLE, True, ())
    closed, effects = step(held, CloseByHand(1.0))
    assert closed.closed_by_hand
    assert effects == (SetRelay(closed=True),)
    refused, effects = step(closed, _authorize(mono=2.0))
    assert refused == closed
    assert isinstance(effects[0], Rejected)
    released, effects = step(closed, Release(3.0))
    assert released == Connector(1)
    assert effects == (SetRelay(closed=False),)


def test_an_active_session_cannot_be_held_and_a_relay_is_closed_by_hand_only_when_held() -> None:
    charging, _ = step(Connector(1), _authorize())
    same, effects = step(charging, Reserve(1.0))
    assert same == charging
    assert isinstance(effects[0], Rejected)
    same, effects = step(Connector(1), CloseByHand(1.0))
    assert same == Connector(1)
    assert isinstance(effects[0], Rejected)
    # Finishing (the session is stored): the technician takes over; the session is gone.
    finishing, _ = step(charging, Stop(StopReason.LOCAL, T0, 1.0))
    held, _ = step(finishing, Reserve(2.0))
    assert (held.status, held.session) == (ConnectorStatus.UNAVAILABLE, None)


def test_a_fault_while_closed_by_hand_opens_the_relay_and_the_technician_keeps_it() -> None:
    closed, _ = step(step(Connector(1), Reserve(0.0))[0], CloseByHand(0.0))
    faulted, effects = step(closed, Fault(StopReason.STUCK_RELAY, T0, 1.0))
    assert effects == (SetRelay(closed=False),)
    assert (faulted.status, faulted.held, faulted.closed_by_hand) == (
        ConnectorStatus.FAULTED,
        True,
        False,
    )
    cleared, _ = step(faulted, ClearFault(2.0))
    assert (cleared.status, cleared.held) == (ConnectorStatus.UNAVAILABLE, True)
    # A Faulted connector held and released stays Faulted.
    released, _ = step(faulted, Release(3.0))
    assert (released.status, released.held) == (ConnectorStatus.FAULTED, False)


EVENTS = st.one_of(
    st.builds(lambda m: _authorize(5000, m), st.floats(0, 100)),
    st.builds(lambda m, p: _sample(m, 5000 + int(m), p), st.floats(0, 100), st.floats(0, 10_000)),
    st.builds(lambda m: Stop(StopReason.LOCAL, T0, m), st.floats(0, 100)),
    st.builds(RelayConfirmedOpen, st.floats(0, 100)),
    st.builds(lambda m: Fault(StopReason.STUCK_RELAY, T0, m), st.floats(0, 100)),
    st.builds(ClearFault, st.floats(0, 100)),
    st.builds(Reserve, st.floats(0, 100)),
    st.builds(CloseByHand, st.floats(0, 100)),
    st.builds(Release, st.floats(0, 100)),
)


@given(st.lists(EVENTS, max_size=30))
def test_invariants_hold_for_any_event_sequence(events: list[object]) -> None:
    """Relay closed only with an open session or by the hands of a technician who holds the
    connector; a held connector has no session and no session starts on it; one start and
    at most one stop per session; event_seq of each session counts 1, 2, 3 …; Faulted and
    Available hold no session; after a release of a held connector its relay is open."""
    conn = Connector(1)
    relay_closed = False
    seqs: dict[str, list[int]] = {}
    for event in events:
        before = conn
        conn, effects = step(conn, event, TH)  # type: ignore[arg-type]
        for effect in effects:
            if isinstance(effect, SetRelay):
                relay_closed = effect.closed
            elif isinstance(effect, EmitSessionEvent):
                seqs.setdefault(effect.session.session_id, []).append(effect.session.event_seq)
        if relay_closed:
            by_session = conn.session is not None and conn.session.is_open
            by_hand = conn.held and conn.closed_by_hand
            assert by_session != by_hand
        if conn.held:
            assert conn.session is None
            assert conn.status in (ConnectorStatus.UNAVAILABLE, ConnectorStatus.FAULTED)
        if before.held and isinstance(event, Authorize):
            assert any(isinstance(e, Rejected) for e in effects)
        if isinstance(event, Release) and before.held:
            assert not conn.held
            assert not conn.closed_by_hand
            assert not relay_closed
        assert conn.held or not conn.closed_by_hand
        if conn.status in (ConnectorStatus.AVAILABLE, ConnectorStatus.FAULTED):
            assert conn.session is None
            assert not relay_closed or conn.closed_by_hand
        if conn.status is ConnectorStatus.UNAVAILABLE:
            assert conn.held
    for numbers in seqs.values():
        assert numbers == list(range(1, len(numbers) + 1))
        assert len(numbers) <= 2
