"""The session row a set of device events adds up to (pure: no I/O).

Events of one session arrive in any order, possibly with gaps and duplicates: an agent that
was offline may deliver its ``stopped`` before the ``updated`` events it queued earlier, and
a ``progress`` may be lost for good. The row is therefore always recomputed from every event
stored so far, applied in ``event_seq`` order, so the result depends only on the *set* of
events, never on arrival order:

* ``stopped`` is terminal: once present, its meter, energy and stop fields are final and
  events numbered after it (there should be none) change nothing;
* otherwise the highest ``event_seq`` carries the latest meter and energy;
* ``offline`` and ``meter_went_backwards`` are sticky: true if any event says so.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from cloud.sessions.models import SessionState
from protocols.enums import CredentialKind, SessionEventType, StopReason
from protocols.messages import SessionEvent


@dataclass(frozen=True, slots=True)
class SessionRow:
    """The values of one ``sessions`` row, as the device's events define them."""

    device_id: str
    device_session_id: str
    connector_number: int
    booking_id: str | None
    credential_kind: CredentialKind
    credential_ref: str
    state: SessionState
    started_at: datetime
    stopped_at: datetime | None
    meter_start_wh: int
    meter_stop_wh: int
    energy_wh: int
    power_w: float | None
    stop_reason: StopReason | None
    offline: bool
    meter_went_backwards: bool
    last_event_seq: int
    events_received: int


def fold_session(events: Iterable[SessionEvent]) -> SessionRow:
    """Fold the events of one session (any order, duplicates allowed) into its row."""
    by_seq: dict[int, SessionEvent] = {}
    for event in events:
        by_seq.setdefault(event.event_seq, event)
    if not by_seq:
        raise ValueError("a session needs at least one event")
    ordered = [by_seq[k] for k in sorted(by_seq)]
    first = ordered[0]
    keys = {(e.device_id, e.session_id) for e in ordered}
    if len(keys) != 1:
        raise ValueError(f"events of several sessions folded together: {sorted(keys)}")
    stop = next((e for e in ordered if e.event is SessionEventType.STOPPED), None)
    latest = stop if stop is not None else ordered[-1]
    # The started event is authoritative for how the session began; without it (lost or
    # not yet arrived) every event repeats the same start fields.
    start = by_seq.get(1, first)
    return SessionRow(
        device_id=first.device_id,
        device_session_id=first.session_id,
        connector_number=start.connector,
        booking_id=start.booking_id,
        credential_kind=start.credential.kind,
        credential_ref=start.credential.ref,
        state=SessionState.STOPPED if stop is not None else SessionState.ACTIVE,
        started_at=start.started_at,
        stopped_at=stop.stopped_at if stop is not None else None,
        meter_start_wh=start.meter_start_wh,
        meter_stop_wh=latest.meter_wh,
        energy_wh=latest.energy_wh,
        power_w=None if stop is not None else latest.power_w,
        stop_reason=stop.stop_reason if stop is not None else None,
        offline=any(e.offline for e in ordered),
        meter_went_backwards=any(e.meter_went_backwards for e in ordered),
        last_event_seq=ordered[-1].event_seq,
        events_received=len(ordered),
    )
