"""The connector state machine, pure: ``step(connector, event, limits) -> (connector, effects)``.

States (OCPP 1.6 ``ChargePointStatus``)::

    Available ──Authorize──► Preparing ──power──► Charging ◄──power── SuspendedEV
        ▲                        │                    │ └──low power for a while──┘
        │                        └──────Stop──────────┴──────Stop──► Finishing
        └──────────────────RelayConfirmedOpen────────────────────────────┘
    any ──Fault──► Faulted ──ClearFault──► Available
    Finishing ──StuckRelay──► Faulted

    Available, Finishing ──Reserve──► Unavailable (held) ──CloseByHand──► relay closed by hand
    Unavailable (held) ──Release──► Available (relay open; the stuck-relay check starts)
    Faulted ──Reserve──► Faulted (held) ──Release──► Faulted

A technician holds a connector (``relay on``, ``relay test`` beside the running agent) by
reserving it: no session starts while it is held, and only a held connector's relay may be
closed by hand. The shell (:class:`~edge_agent.sessions.controller.ConnectorController`)
watches a relay closed by hand with :mod:`edge_agent.relay.manual_close`.

No I/O and no clock: every event carries the wall time (for the wire) and the monotonic time
(for durations). Effects are instructions for the shell, in the order it must apply them:
on start the session is stored before the relay closes (a crash in between leaves a stored
session and an open relay, which recovery closes with zero energy); on stop the relay opens
before anything is written (power off first).

Energy is the cumulative import register at stop minus at start. A register that goes
backwards (meter replaced or reset mid-session) is flagged and bills the highest value seen,
never a negative amount.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

from protocols.enums import ConnectorStatus, SessionEventType, StopReason
from protocols.messages import CredentialRef

_ACTIVE = frozenset(
    {ConnectorStatus.PREPARING, ConnectorStatus.CHARGING, ConnectorStatus.SUSPENDED_EV}
)


@dataclass(frozen=True, slots=True)
class Session:
    """One charging session as the machine knows it (the store persists exactly this)."""

    session_id: str
    connector: int
    credential: CredentialRef
    started_at: datetime
    started_mono: float
    meter_start_wh: int
    meter_wh: int
    max_meter_wh: int
    event_seq: int = 1
    booking_id: str | None = None
    auth_expires_at: datetime | None = None
    max_wh: int | None = None
    max_s: int | None = None
    went_backwards: bool = False
    power_w: float | None = None
    stopped_at: datetime | None = None
    stop_reason: StopReason | None = None
    #: Seconds the session ran before ``started_mono`` was taken (a run of the agent before a
    #: restart: the monotonic clock does not survive a reboot, the store keeps this).
    elapsed_before_s: float = 0.0
    #: Seconds it ran, by the monotonic clock, fixed at the stop: what time is billed from,
    #: whatever the wall clock did meanwhile (``stopped_at - started_at`` does not survive an
    #: NTP step).
    elapsed_s: float | None = None

    def elapsed_at(self, mono: float) -> float:
        """Seconds run by the monotonic clock ``mono`` (never negative)."""
        return self.elapsed_before_s + max(0.0, mono - self.started_mono)

    @property
    def energy_wh(self) -> int:
        """Energy to bill: never negative, never more than the register advanced."""
        return self.max_meter_wh - self.meter_start_wh

    @property
    def is_open(self) -> bool:
        return self.stopped_at is None

    def with_meter(self, meter_wh: int, power_w: float | None) -> Session:
        backwards = self.went_backwards or meter_wh < self.meter_wh
        return replace(
            self,
            meter_wh=meter_wh,
            max_meter_wh=max(self.max_meter_wh, meter_wh),
            went_backwards=backwards,
            power_w=power_w,
        )


@dataclass(frozen=True, slots=True)
class Connector:
    id: int
    status: ConnectorStatus = ConnectorStatus.AVAILABLE
    session: Session | None = None
    #: Monotonic time since power has been below the charging threshold (SuspendedEV timer).
    low_power_since: float | None = None
    fault: StopReason | None = None
    #: A technician holds the connector (Unavailable, or Faulted): no session starts.
    held: bool = False
    #: The technician closed the relay by hand (only while held).
    closed_by_hand: bool = False


# --- events ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Authorize:
    """An accepted credential on an Available connector: start a session."""

    session_id: str
    credential: CredentialRef
    now: datetime
    mono: float
    meter_wh: int
    booking_id: str | None = None
    auth_expires_at: datetime | None = None
    max_wh: int | None = None
    max_s: int | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """A good meter reading of the connector's meter."""

    now: datetime
    mono: float
    meter_wh: int
    power_w: float


@dataclass(frozen=True, slots=True)
class Stop:
    """End the session (driver, cloud, limit or fail-safe). ``meter_wh`` None: no fresh value,
    the last one seen is used."""

    reason: StopReason
    now: datetime
    mono: float
    meter_wh: int | None = None


@dataclass(frozen=True, slots=True)
class RelayConfirmedOpen:
    """The stuck-relay check passed: no power flowed after the relay opened."""

    mono: float


@dataclass(frozen=True, slots=True)
class Fault:
    """A hardware fault (stuck relay, relay driver failure): the connector is unusable."""

    reason: StopReason
    now: datetime
    mono: float


@dataclass(frozen=True, slots=True)
class ClearFault:
    """An operator cleared the fault (after checking the contactor)."""

    mono: float


@dataclass(frozen=True, slots=True)
class Reserve:
    """A technician takes the connector (relay by hand, relay test). A session still open
    must be stopped first (Rejected otherwise); a Finishing one is left to the technician."""

    mono: float


@dataclass(frozen=True, slots=True)
class CloseByHand:
    """The technician closes the relay of the connector they hold."""

    mono: float


@dataclass(frozen=True, slots=True)
class Release:
    """The technician gives the connector back; its relay is commanded open."""

    mono: float


Event = (
    Authorize
    | Sample
    | Stop
    | RelayConfirmedOpen
    | Fault
    | ClearFault
    | Reserve
    | CloseByHand
    | Release
)


# --- effects ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SetRelay:
    closed: bool


@dataclass(frozen=True, slots=True)
class EmitSessionEvent:
    """Persist ``session`` and queue a session event of ``event`` type (one transaction)."""

    event: SessionEventType
    session: Session


@dataclass(frozen=True, slots=True)
class Rejected:
    """The event does not apply in this state (e.g. Authorize while Charging)."""

    reason: str


Effect = SetRelay | EmitSessionEvent | Rejected


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The few numbers the machine itself needs (fail-safe thresholds live in failsafe)."""

    charging_power_w: float = 100.0
    suspended_after_s: float = 10.0


def step(
    conn: Connector, event: Event, th: Thresholds = Thresholds()
) -> tuple[Connector, tuple[Effect, ...]]:
    """Apply ``event`` to ``conn``; return the new connector and the effects, in order."""
    match event:
        case Authorize():
            return _authorize(conn, event)
        case Sample():
            return _sample(conn, event, th), ()
        case Stop():
            return _stop(conn, event)
        case RelayConfirmedOpen():
            if conn.status is ConnectorStatus.FINISHING:
                return replace(conn, status=ConnectorStatus.AVAILABLE, session=None), ()
            return conn, ()
        case Fault():
            return _fault(conn, event)
        case ClearFault():
            if conn.status is ConnectorStatus.FAULTED:
                if conn.held:  # the technician keeps it until they release it
                    return replace(conn, status=ConnectorStatus.UNAVAILABLE, fault=None), ()
                return Connector(conn.id), ()
            return conn, (Rejected(f"connector is {conn.status.value}, not Faulted"),)
        case Reserve():
            return _reserve(conn)
        case CloseByHand():
            if not conn.held:
                return conn, (Rejected(f"connector {conn.id} is not held by a technician"),)
            return replace(conn, closed_by_hand=True), (SetRelay(closed=True),)
        case Release():
            if not conn.held:
                return conn, ()
            if conn.status is ConnectorStatus.FAULTED:
                released = replace(conn, held=False, closed_by_hand=False)
            else:
                released = Connector(conn.id)
            return released, (SetRelay(closed=False),)


def _reserve(conn: Connector) -> tuple[Connector, tuple[Effect, ...]]:
    if conn.held:
        return conn, ()
    if conn.status in _ACTIVE:
        assert conn.session is not None
        return conn, (Rejected(f"session {conn.session.session_id} is active"),)
    if conn.status is ConnectorStatus.FAULTED:
        return replace(conn, held=True), ()
    # Available, or Finishing (its session is stored: the stuck check is the technician's now).
    return Connector(conn.id, ConnectorStatus.UNAVAILABLE, held=True), ()


def _authorize(conn: Connector, ev: Authorize) -> tuple[Connector, tuple[Effect, ...]]:
    if conn.status is not ConnectorStatus.AVAILABLE:
        return conn, (Rejected(f"connector is {conn.status.value}"),)
    session = Session(
        session_id=ev.session_id,
        connector=conn.id,
        credential=ev.credential,
        started_at=ev.now,
        started_mono=ev.mono,
        meter_start_wh=ev.meter_wh,
        meter_wh=ev.meter_wh,
        max_meter_wh=ev.meter_wh,
        booking_id=ev.booking_id,
        auth_expires_at=ev.auth_expires_at,
        max_wh=ev.max_wh,
        max_s=ev.max_s,
    )
    started = replace(conn, status=ConnectorStatus.PREPARING, session=session, low_power_since=None)
    return started, (EmitSessionEvent(SessionEventType.STARTED, session), SetRelay(closed=True))


def _sample(conn: Connector, ev: Sample, th: Thresholds) -> Connector:
    if conn.session is None or conn.status not in _ACTIVE:
        return conn
    session = conn.session.with_meter(ev.meter_wh, ev.power_w)
    drawing = ev.power_w >= th.charging_power_w
    if drawing:
        return replace(conn, status=ConnectorStatus.CHARGING, session=session, low_power_since=None)
    since = conn.low_power_since if conn.low_power_since is not None else ev.mono
    status = conn.status
    if status is ConnectorStatus.CHARGING and ev.mono - since >= th.suspended_after_s:
        status = ConnectorStatus.SUSPENDED_EV
    return replace(conn, status=status, session=session, low_power_since=since)


def _closed(
    session: Session, reason: StopReason, now: datetime, mono: float, meter_wh: int | None
) -> Session:
    if meter_wh is not None:
        session = session.with_meter(meter_wh, session.power_w)
    return replace(
        session,
        stopped_at=now,
        stop_reason=reason,
        event_seq=session.event_seq + 1,
        power_w=None,
        elapsed_s=session.elapsed_at(mono),
    )


def _stop(conn: Connector, ev: Stop) -> tuple[Connector, tuple[Effect, ...]]:
    if conn.session is None or conn.status not in _ACTIVE:
        return conn, (Rejected(f"no session to stop on connector {conn.id}"),)
    session = _closed(conn.session, ev.reason, ev.now, ev.mono, ev.meter_wh)
    finishing = replace(
        conn, status=ConnectorStatus.FINISHING, session=session, low_power_since=None
    )
    return finishing, (SetRelay(closed=False), EmitSessionEvent(SessionEventType.STOPPED, session))


def _fault(conn: Connector, ev: Fault) -> tuple[Connector, tuple[Effect, ...]]:
    effects: list[Effect] = [SetRelay(closed=False)]
    if conn.session is not None and conn.session.is_open:
        session = _closed(conn.session, ev.reason, ev.now, ev.mono, None)
        effects.append(EmitSessionEvent(SessionEventType.STOPPED, session))
    # A fault opens a relay closed by hand too; the technician still holds the connector.
    faulted = Connector(conn.id, status=ConnectorStatus.FAULTED, fault=ev.reason, held=conn.held)
    return faulted, tuple(effects)


def progress(conn: Connector) -> tuple[Connector, EmitSessionEvent | None]:
    """A periodic ``updated`` event for the open session (the shell decides how often)."""
    if conn.session is None or not conn.session.is_open:
        return conn, None
    session = replace(conn.session, event_seq=conn.session.event_seq + 1)
    return replace(conn, session=session), EmitSessionEvent(SessionEventType.UPDATED, session)
