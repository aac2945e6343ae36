"""Hypothesis strategies for every wire message (shared by protocol tests)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from protocols import messages as m
from protocols.enums import (
    AuthListUpdateType,
    AuthorizationStatus,
    CommandStatus,
    ConnectorStatus,
    CredentialKind,
    SessionEventType,
    StopReason,
)
from protocols.ids import new_ulid
from protocols.meters import QUANTITY_BOUNDS, Quantity

ulids = st.integers(0, 2**48 - 1).map(new_ulid)
device_ids = st.from_regex(r"[a-z0-9][a-z0-9_-]{0,63}", fullmatch=True)
# Millisecond precision is what the wire keeps in practice; any aware datetime in the wire's
# window must survive. From 2020: a time the message calls synchronised may not be earlier
# (protocols.messages.EARLIEST_SYNCED_TS); the unsynchronised 1970s have their own tests.
times = st.datetimes(
    min_value=datetime(2020, 1, 1),
    max_value=datetime(2099, 12, 31, 23, 59, 59),
    timezones=st.just(UTC),
)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
#: A value within each quantity's physical bounds (protocols.meters.QUANTITY_BOUNDS).
quantity_values = st.lists(
    st.sampled_from(list(Quantity)).flatmap(
        lambda q: st.tuples(st.just(q), st.floats(*QUANTITY_BOUNDS[q]))
    ),
    min_size=1,
    unique_by=lambda pair: pair[0],
).map(dict)
seqs = st.integers(0, 2**63 - 1)
wh = st.integers(0, 2**53)
connectors = st.integers(1, 32)
short_text = st.text(max_size=50)


def envelope() -> dict[str, st.SearchStrategy[Any]]:
    return {
        "msg_id": ulids,
        "device_id": device_ids,
        "seq": seqs,
        "ts": times,
        "clock_synced": st.booleans(),
    }


def draw_envelope(draw: st.DrawFn) -> dict[str, Any]:
    return {k: draw(v) for k, v in envelope().items()}


readings = st.builds(
    m.MeterReading,
    meter_id=st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True),
    ts=times,
    clock_synced=st.booleans(),
    values=quantity_values,
)
telemetry = st.builds(
    m.TelemetryBatch, readings=st.lists(readings, min_size=1, max_size=5), **envelope()
)


@st.composite
def session_events(draw: st.DrawFn) -> m.SessionEvent:
    event = draw(st.sampled_from(list(SessionEventType)))
    started_at = draw(times)
    start = draw(wh)
    stopping = event is SessionEventType.STOPPED
    return m.SessionEvent(
        **draw_envelope(draw),
        session_id=draw(ulids),
        event=event,
        event_seq=1 if event is SessionEventType.STARTED else draw(st.integers(2, 10**6)),
        connector=draw(connectors),
        offline=draw(st.booleans()),
        credential=m.CredentialRef(kind=draw(st.sampled_from(list(CredentialKind))), ref="x"),
        booking_id=draw(st.none() | st.text(min_size=1, max_size=64)),
        started_at=started_at,
        meter_start_wh=start,
        meter_wh=draw(wh),
        energy_wh=draw(wh),
        power_w=draw(st.none() | st.floats(0, 1e6)),
        stopped_at=started_at + timedelta(seconds=draw(st.integers(0, 10**6)))
        if stopping
        else None,
        stop_reason=draw(st.sampled_from(list(StopReason))) if stopping else None,
        meter_went_backwards=draw(st.booleans()),
    )


statuses = st.builds(
    m.Status,
    online=st.booleans(),
    agent_version=st.none() | st.text(max_size=32),
    meters=st.lists(
        st.builds(
            m.MeterHealth,
            meter_id=st.just("m1"),
            model=st.sampled_from(["sdm630", "abb_b23"]),
            available=st.booleans(),
            errors=st.integers(0, 10**9),
        ),
        max_size=4,
    ),
    connectors=st.lists(
        st.builds(
            m.ConnectorState,
            connector=connectors,
            status=st.sampled_from(list(ConnectorStatus)),
            session_id=st.none() | ulids,
        ),
        max_size=4,
    ),
    backlog=st.none()
    | st.builds(
        m.Backlog,
        rows=st.integers(0, 10**9),
        oldest_age_s=st.none() | st.floats(0, 1e9),
        thinned=st.integers(0, 10**9),
    ),
    **envelope(),
)

hashes = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
actions = st.one_of(
    st.builds(m.StartSession, connector=connectors, token=st.text(min_size=1, max_size=100)),
    st.builds(m.StopSession, session_id=ulids, reason=st.sampled_from(list(StopReason))),
    st.builds(
        m.AuthListUpdate,
        version=st.integers(1, 10**9),
        update_type=st.just(AuthListUpdateType.DIFFERENTIAL),
        entries=st.lists(
            st.builds(
                m.AuthListEntry,
                id_tag_hash=hashes,
                status=st.none() | st.sampled_from(list(AuthorizationStatus)),
                expires_at=st.none() | times,
            ),
            max_size=5,
        ),
    ),
    st.builds(
        m.ConfigUpdate,
        settings=st.dictionaries(
            st.text(max_size=10), st.none() | st.booleans() | st.integers() | short_text, max_size=4
        ),
    ),
    st.builds(m.Diagnostics),
    st.builds(m.RelayTest, connector=connectors),
)
commands = st.builds(m.Command, cmd_id=ulids, expires_at=times, action=actions, **envelope())
command_results = st.builds(
    m.CommandResult,
    cmd_id=ulids,
    status=st.sampled_from(list(CommandStatus)),
    auth_status=st.none() | st.sampled_from(list(AuthorizationStatus)),
    session_id=st.none() | ulids,
    detail=short_text,
    data=st.dictionaries(st.text(max_size=10), st.integers() | short_text, max_size=4),
    **envelope(),
)
acks = st.builds(
    m.Ack,
    ranges=st.sets(st.integers(0, 10**6), min_size=1, max_size=50).map(m.ack_ranges),
    dead_lettered=st.lists(seqs, max_size=5),
    **envelope(),
)


@st.composite
def auth_decisions(draw: st.DrawFn) -> m.AuthDecision:
    """Decisions of every kind and status, with references in the shapes the agent writes."""
    kind = draw(st.sampled_from(list(CredentialKind)))
    ref = {
        CredentialKind.ID_TAG: hashes | st.just("malformed"),
        CredentialKind.PIN: st.from_regex(r"pin-[0-9a-f]{32}", fullmatch=True),
        CredentialKind.TOKEN: ulids | st.from_regex(r"tok-[0-9a-f]{32}", fullmatch=True),
        CredentialKind.REMOTE: st.text(min_size=1, max_size=128),
    }[kind]
    status = draw(st.sampled_from(list(AuthorizationStatus)))
    accepted = status is AuthorizationStatus.ACCEPTED
    return m.AuthDecision(
        **draw_envelope(draw),
        connector=draw(connectors),
        credential=m.CredentialRef(kind=kind, ref=draw(ref)),
        status=status,
        reason=draw(st.text(max_size=500)),
        decided_at=draw(times),
        session_id=draw(st.none() | ulids) if accepted else None,
    )


any_message = st.one_of(
    telemetry, session_events(), statuses, commands, command_results, acks, auth_decisions()
)
