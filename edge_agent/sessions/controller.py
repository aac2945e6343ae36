"""The connector controller: the thin shell that feeds the pure machine and fail-safe rules
with meter readings and the clock, and applies their effects to the relay and the store.

Fail-safe: on any doubt the relay is open. A relay that cannot be switched, a store that
cannot record a start, a meter that has not been heard recently enough to bill from — each
leaves the contactor open.

A technician's live actions beside the running agent (``relay on/off``, ``relay test``, the
cloud's relay test) go through the controller too: it holds the connector for them (the
machine's ``Reserve``/``Release`` events, so no session starts meanwhile), runs the one relay
test (:mod:`edge_agent.relay.check`), and watches a relay closed by hand on the safety tick
(:mod:`edge_agent.relay.manual_close`). No other module assigns the controller's state.

Others learn of changes by subscribing (:meth:`ConnectorController.subscribe`): a change of
status or fault, and each session event recorded. The OCPP uplink waits on these rather than
polling the connectors and the store.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from edge_agent.auth.decision import AuthVerdict
from edge_agent.errors import MeterError, RelayError, StoreError
from edge_agent.relay import manual_close
from edge_agent.relay.base import RelayDriver
from edge_agent.relay.check import RelayTestResult, run_relay_test
from edge_agent.relay.failsafe import (
    Observation,
    SafetyLimits,
    VerdictKind,
    assess,
    plausible,
    relay_opened,
    start_watch,
)
from edge_agent.sessions.machine import (
    Authorize,
    ClearFault,
    CloseByHand,
    Connector,
    Effect,
    EmitSessionEvent,
    Event,
    Fault,
    Rejected,
    RelayConfirmedOpen,
    Release,
    Reserve,
    Sample,
    Session,
    SetRelay,
    Stop,
    Thresholds,
    progress,
    step,
)
from edge_agent.store.auth import wire_ref
from edge_agent.store.sessions import EventContext, extend_authorization, record_event
from protocols.enums import ConnectorStatus, SessionEventType, StopReason
from protocols.errors import MessageError
from protocols.ids import new_ulid
from protocols.messages import CredentialRef, MeterReading
from protocols.meters import Quantity

log = logging.getLogger(__name__)


def energy_wh(values: dict[Quantity, float]) -> int:
    """The import register in whole Wh. SDM meters hold kWh as float32 (~7 significant
    digits), so the decoded Wh carries float noise that rounding removes."""
    return round(values[Quantity.ENERGY_IMPORT_WH])


def _stricter(a: int | None, b: int | None) -> int | None:
    """The smaller of two optional limits (None: no limit)."""
    if a is None or b is None:
        return a if b is None else b
    return min(a, b)


@dataclass(frozen=True, slots=True)
class StartResult:
    session_id: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class Clocks:
    """The time sources the controller reads (fakes in tests)."""

    wall: Callable[[], datetime] = lambda: datetime.now(UTC)
    mono: Callable[[], float] = time.monotonic
    synced: Callable[[], bool] = lambda: True
    #: Whether the cloud link is down (the sync task knows; True until it says otherwise).
    offline: Callable[[], bool] = lambda: True


class ConnectorController:
    """Runs one connector: its session, its relay, its fail-safe watch."""

    def __init__(
        self,
        connector_id: int,
        *,
        relay: RelayDriver,
        conn: sqlite3.Connection,
        device_id: str,
        limits: SafetyLimits,
        thresholds: Thresholds,
        clocks: Clocks,
        read_meter: Callable[[], Awaitable[dict[Quantity, float] | None]] | None = None,
        session_max_wh: int | None = None,
        session_max_s: int | None = None,
    ) -> None:
        self.id = connector_id
        self.relay = relay
        self._conn = conn
        self._device_id = device_id
        self._limits = limits
        self._thresholds = thresholds
        self._clocks = clocks
        #: Reads the connector's meter now (the app gives the poller's read); None in tests
        #: that script readings.
        self._read_meter = read_meter
        #: Site-wide caps (``[limits]``); a credential's own limits apply when stricter.
        self._session_max_wh = session_max_wh
        self._session_max_s = session_max_s
        self._state = Connector(connector_id)
        #: Told when the status or fault changes, and when a session event is recorded
        #: (:meth:`subscribe`).
        self._on_status: list[Callable[[], None]] = []
        self._on_event: list[Callable[[], None]] = []
        self.relay_closed = False
        self.watch = start_watch(clocks.mono())
        self.last_values: dict[Quantity, float] | None = None
        #: Whether the latest poll gave a plausible reading (a failed one is doubt).
        self.last_poll_good = False
        self.last_stop_detail = ""
        #: Set by the authorization side when the session's credential is withdrawn.
        self.authorized = True
        #: The relay closed by hand by a technician, watched on the safety tick.
        self._hand: manual_close.ManualClose | None = None
        #: One change at a time: polls, ticks and control requests arrive concurrently, and
        #: each runs the machine then awaits the relay and the meter.
        self._lock = asyncio.Lock()

    # --- state and its watchers ---------------------------------------------------------

    @property
    def state(self) -> Connector:
        return self._state

    @state.setter
    def state(self, state: Connector) -> None:
        old = self._state
        self._state = state
        if old.status is not state.status or old.fault is not state.fault:
            _tell(self._on_status)

    def subscribe(
        self,
        *,
        status: Callable[[], None] | None = None,
        events: Callable[[], None] | None = None,
    ) -> None:
        """Call ``status()`` whenever the connector's status or fault changes, and
        ``events()`` whenever a session event is recorded in the store -- synchronously,
        on the event loop, so each must only note it (set an :class:`asyncio.Event`). The
        OCPP uplink waits on these instead of polling the connectors and the store."""
        if status is not None:
            self._on_status.append(status)
        if events is not None:
            self._on_event.append(events)

    # --- queries ------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self.state.status is not ConnectorStatus.AVAILABLE

    @property
    def session(self) -> Session | None:
        return self.state.session

    @property
    def closed_by_hand(self) -> bool:
        return self._hand is not None

    @property
    def hand_hold_s(self) -> float | None:
        return None if self._hand is None else self._hand.hold_s

    def hand_opens_in_s(self) -> float | None:
        """Seconds until the relay closed by hand is opened for its time limit."""
        hand = self._hand
        return (
            None if hand is None else max(0.0, hand.closed_at + hand.hold_s - self._clocks.mono())
        )

    def fresh_meter_wh(self) -> int | None:
        """The import register if the last poll was good and within the silence limit."""
        if self.last_values is None or not self.last_poll_good:
            return None
        if self._clocks.mono() - self.watch.last_good_mono > self._limits.meter_silence_s:
            return None
        return energy_wh(self.last_values)

    # --- commands -----------------------------------------------------------------------

    async def force_open(self) -> None:
        """Open the relay whatever the state (start-up, shutdown): power off first."""
        try:
            await self.relay.set_closed(False)
        except RelayError as exc:
            log.error("connector %s: cannot open relay: %s", self.id, exc)
        self.relay_closed = False

    async def start(self, decision: AuthVerdict) -> StartResult:
        """Start a session for an accepted decision; the relay closes only after the start
        is stored."""
        async with self._lock:
            return await self._start(decision)

    async def _start(self, decision: AuthVerdict) -> StartResult:
        if not decision.accepted:
            return StartResult(None, f"not accepted: {decision.status.value}")
        meter_wh = self.fresh_meter_wh()
        if meter_wh is None:
            return StartResult(None, "meter not heard recently: cannot bill, not starting")
        event = Authorize(
            # The id the authorizer reserved (and reported with the decision), if any.
            session_id=decision.session_id or new_ulid(),
            # The reference the decision was reported under (a foreign token's over-long jti
            # is hashed), so the session and its decision name the same credential.
            credential=CredentialRef(kind=decision.kind, ref=wire_ref(decision)),
            now=self._clocks.wall(),
            mono=self._clocks.mono(),
            meter_wh=meter_wh,
            booking_id=decision.booking_id,
            auth_expires_at=decision.expires_at,
            max_wh=_stricter(decision.max_wh, self._session_max_wh),
            max_s=_stricter(decision.max_s, self._session_max_s),
        )
        self.authorized = True
        rejected = await self._feed(event)
        if rejected:
            return StartResult(None, rejected)
        session = self.state.session
        return StartResult(session.session_id if session else None, "started")

    async def stop(self, reason: StopReason) -> str | None:
        """Stop the open session; returns a rejection reason, or None when stopped."""
        async with self._lock:
            return await self._stop(reason)

    async def _stop(self, reason: StopReason) -> str | None:
        return await self._feed(
            Stop(reason, self._clocks.wall(), self._clocks.mono(), self.fresh_meter_wh())
        )

    async def extend(self, session_id: str, until: datetime) -> bool:
        """The open session ``session_id``, if it is this connector's, is authorized until
        ``until`` (never shortened; None — no expiry — stays none). Stored with the session,
        so a restart during the extension resumes it (sessions/recovery.py). False when the
        connector has no such open session."""
        async with self._lock:
            session = self.state.session
            if session is None or not session.is_open or session.session_id != session_id:
                return False
            extend_authorization(self._conn, session_id, until)
            held = session.auth_expires_at
            if held is not None and held < until:
                self.state = replace(self.state, session=replace(session, auth_expires_at=until))
            return True

    async def clear_fault(self) -> str | None:
        async with self._lock:
            return await self._feed(ClearFault(self._clocks.mono()))

    async def emit_progress(self) -> None:
        async with self._lock:
            self.state, effect = progress(self.state)
            if effect is not None:
                await self._apply((effect,))

    async def resume(self, session: Session) -> None:
        """Adopt a session found open at start (recovery said resume) and close the relay."""
        async with self._lock:
            self.state = Connector(self.id, ConnectorStatus.PREPARING, session=session)
            await self._apply((SetRelay(closed=True),))

    async def close_recovered(self, session: Session, meter_wh: int) -> None:
        """End a session found open at start with PowerLoss, billing up to ``meter_wh`` (or
        the register read now, if the meter answers)."""
        async with self._lock:
            self.state = Connector(self.id, ConnectorStatus.CHARGING, session=session)
            await self._feed(
                Stop(StopReason.POWER_LOSS, self._clocks.wall(), self._clocks.mono(), meter_wh)
            )

    # --- inputs ---------------------------------------------------------------------------

    async def on_poll(self, reading: MeterReading | None) -> None:
        """A poll of this connector's meter finished (None: it failed)."""
        values = None if reading is None else dict(reading.values)
        async with self._lock:
            await self._observe(self._clocks.mono(), values, polled=True)

    async def on_tick(self) -> None:
        """A timer tick with no poll: silence is still silence."""
        async with self._lock:
            mono = self._clocks.mono()
            await self._observe(mono, None, polled=False)
            await self._watch_hand(mono)

    # --- a technician's hands ---------------------------------------------------------------

    async def close_by_hand(self, hold_s: float, *, force: bool) -> str | None:
        """Close the relay for a technician, for at most ``hold_s``; a refusal, or None.

        The connector is held (Unavailable) meanwhile; with ``force`` an open session is
        stopped first (Local), so it is billed and reported as usual.
        """
        async with self._lock:
            refused = await self._hold(force=force)
            if refused:
                return refused
            mono = self._clocks.mono()
            self.state, effects = step(self.state, CloseByHand(mono))
            if any(isinstance(e, Rejected) for e in effects):
                return f"connector {self.id} is not held"
            self._hand = manual_close.start(mono, hold_s)
            try:
                await self.relay.set_closed(True)
            except RelayError as exc:
                await self._release()
                return str(exc)
            return None

    async def set_available(self, available: bool) -> str | None:
        """Take the connector out of service (OCPP ChangeAvailability Inoperative: the
        machine's hold, so it is Unavailable and no session starts) or put it back; a
        refusal, or None. A connector a technician holds is not released from here."""
        async with self._lock:
            if not available:
                return None if self.state.held else await self._hold(force=False)
            if not self.state.held:
                return None
            if self._hand is not None:
                return f"connector {self.id}: a technician holds it"
            await self._release()
            return None

    async def open_by_hand(self) -> None:
        """Open the relay for a technician: always allowed, it is the safe state. An open
        session is stopped first (Local), so it is billed up to now."""
        async with self._lock:
            if self.session is not None and self.session.is_open:
                await self._stop(StopReason.LOCAL)
            if self.state.closed_by_hand:
                await self._release()
            else:
                await self.force_open()

    async def test_relay(self, *, watch_power: bool, force: bool) -> RelayTestResult | str:
        """The one relay test (:func:`edge_agent.relay.check.run_relay_test`) with the
        connector held: close, (watch power,) open, (watch it stop). A refusal or an error
        is a string. The controller's lock is not held while the test runs (seconds of bus
        time): the poll loop and the safety tick go on, and the hold keeps sessions away."""
        async with self._lock:
            refused = await self._hold(force=force)
            if refused:
                return refused
            # The test ends with the relay open: a close by hand before it is over.
            self._hand = None
        try:
            return await run_relay_test(
                self.relay,
                self._power if watch_power else None,
                charging_power_w=self._thresholds.charging_power_w,
                stuck_power_w=self._limits.stuck_relay_power_w,
                settle_s=self._limits.stuck_relay_check_s + 1.0,
            )
        except (RelayError, MeterError) as exc:
            await self.force_open()
            return str(exc)
        finally:
            async with self._lock:
                await self._release()

    async def _power(self) -> float | None:
        values = None if self._read_meter is None else await self._read_meter()
        return None if values is None else values.get(Quantity.POWER_W)

    async def _hold(self, *, force: bool) -> str | None:
        """Hold the connector for a technician (the machine's Reserve); a refusal, or None."""
        status = self.state.status
        if status is not ConnectorStatus.AVAILABLE and not force:
            session = self.session
            what = f"session {session.session_id} is active" if session else f"it is {status.value}"
            return f"connector {self.id}: {what}; use --force"
        if self.session is not None and self.session.is_open:
            refused = await self._stop(StopReason.LOCAL)
            if refused:
                return f"could not stop the session first: {refused}"
        self.state, effects = step(self.state, Reserve(self._clocks.mono()))
        for effect in effects:
            if isinstance(effect, Rejected):
                return f"connector {self.id}: {effect.reason}"
        # A stuck check still pending from a session stopped by --force would take the power
        # the technician lets through for a welded contactor.
        self.watch = replace(self.watch, opened_at=None)
        return None

    async def _release(self) -> None:
        """Give the connector back (the machine's Release): the relay is commanded open and
        the stuck-relay check starts now, whatever the technician let through."""
        self._hand = None
        self.state, effects = step(self.state, Release(self._clocks.mono()))
        if effects:
            await self.force_open()
            self.watch = relay_opened(self.watch, self._clocks.mono())

    async def _watch_hand(self, mono: float) -> None:
        """Open a relay closed by hand whose fail-safe rules tripped or whose time is up."""
        if self._hand is None:
            return
        hand, why = manual_close.assess(
            self._hand,
            mono=mono,
            heard_mono=self.watch.last_good_mono,
            values=self.last_values,
            limits=self._limits,
        )
        if why is None:
            self._hand = hand
            return
        log.warning("connector %s: opening the relay closed by hand: %s", self.id, why)
        await self._release()

    async def _observe(
        self, mono: float, values: dict[Quantity, float] | None, *, polled: bool
    ) -> None:
        session = self.state.session
        energy = session.energy_wh if session else 0
        elapsed = session.elapsed_at(mono) if session else 0.0
        obs = Observation(
            mono=mono,
            relay_closed=self.relay_closed,
            values=values,
            polled=polled,
            session_energy_wh=energy,
            session_elapsed_s=elapsed,
            max_wh=session.max_wh if session else None,
            max_s=session.max_s if session else None,
            authorized=self.authorized,
        )
        trusted = values is not None and (
            plausible(values, self.watch.last_energy_wh, self._limits) is None
        )
        self.watch, verdict = assess(self.watch, obs, self._limits)
        if polled:
            self.last_poll_good = trusted
        if trusted and values is not None:
            self.last_values = values
            await self._feed(
                Sample(self._clocks.wall(), mono, energy_wh(values), values[Quantity.POWER_W])
            )
        if verdict is None:
            return
        match verdict.kind:
            case VerdictKind.STOP:
                assert verdict.reason is not None
                self.last_stop_detail = verdict.detail
                log.warning(
                    "connector %s: stopping (%s): %s", self.id, verdict.reason.value, verdict.detail
                )
                await self._stop(verdict.reason)
            case VerdictKind.STUCK_RELAY:
                log.error("connector %s: stuck relay: %s", self.id, verdict.detail)
                await self._feed(Fault(StopReason.STUCK_RELAY, self._clocks.wall(), mono))
            case VerdictKind.RELAY_CONFIRMED_OPEN:
                await self._feed(RelayConfirmedOpen(mono))

    # --- effects ------------------------------------------------------------------------

    async def _feed(self, event: Event) -> str | None:
        self.state, effects = step(self.state, event, self._thresholds)
        return await self._apply(effects)

    async def _apply(self, effects: tuple[Effect, ...]) -> str | None:
        for effect in effects:
            match effect:
                case Rejected(reason):
                    return reason
                case SetRelay(closed=True):
                    try:
                        await self.relay.set_closed(True)
                        self.relay_closed = True
                        self.watch = replace(self.watch, opened_at=None)
                    except RelayError as exc:
                        log.error("connector %s: relay would not close: %s", self.id, exc)
                        await self.force_open()
                        await self._feed(
                            Fault(StopReason.OTHER, self._clocks.wall(), self._clocks.mono())
                        )
                        return f"relay would not close: {exc}"
                case SetRelay(closed=False):
                    was_closed = self.relay_closed or self._hand is not None
                    if not self.state.closed_by_hand:
                        self._hand = None  # a fault opened a relay closed by hand
                    await self.force_open()
                    if was_closed:
                        self.watch = relay_opened(self.watch, self._clocks.mono())
                    else:
                        # Never closed: there is nothing to check, the opening is confirmed.
                        self.state, _ = step(self.state, RelayConfirmedOpen(self._clocks.mono()))
                case EmitSessionEvent():
                    event = effect
                    try:
                        if self._wants_final_reading(event):
                            event = await self._final_reading(event)
                    finally:
                        # Recorded even if cancelled (shutdown) while reading the meter: the
                        # relay is already open and the stop must not be lost.
                        refused = self._record(event)
                    if refused is not None:
                        return refused
        return None

    def _wants_final_reading(self, event: EmitSessionEvent) -> bool:
        return (
            event.event is SessionEventType.STOPPED
            and self._read_meter is not None
            # A silent meter would only make the record wait for its timeout.
            and event.session.stop_reason is not StopReason.METER_FAILURE
        )

    def _record(self, event: EmitSessionEvent) -> str | None:
        try:
            record_event(self._conn, event, self._context())
        # MessageError: the event breaks the wire contract (encode_message refuses it before
        # it is stored) -- the same outcome as a store that refuses it.
        except (StoreError, MessageError) as exc:
            log.error("connector %s: cannot record %s: %s", self.id, event.event.value, exc)
            if event.event is SessionEventType.STARTED:
                # A start that cannot be stored must not close the relay (SetRelay(closed)
                # comes after it and is not applied).
                self.state = Connector(self.id)
            # A stop that cannot be stored leaves the session open in the file: recovery
            # closes it at the next start (PowerLoss), from its meter.
            return f"store refused the session event: {exc}"
        _tell(self._on_event)
        return None

    async def _final_reading(self, effect: EmitSessionEvent) -> EmitSessionEvent:
        """Bill up to the register read after the relay opened: energy that flowed between
        the last poll and the contactor opening was delivered and belongs to the session."""
        assert self._read_meter is not None
        values = await self._read_meter()
        if values is None:
            return effect
        reason = plausible(values, self.watch.last_energy_wh, self._limits)
        if reason is not None:
            log.warning("connector %s: final reading not used: %s", self.id, reason)
            return effect
        session = effect.session.with_meter(energy_wh(values), None)
        if self.state.session is not None:
            self.state = replace(self.state, session=session)
        return EmitSessionEvent(effect.event, session)

    def _context(self) -> EventContext:
        return EventContext(
            device_id=self._device_id,
            now=self._clocks.wall(),
            clock_synced=self._clocks.synced(),
            offline=self._clocks.offline(),
        )


def _tell(callbacks: list[Callable[[], None]]) -> None:
    """Call each subscriber. They are observers (the OCPP uplink sets an event): one that
    fails must not stop the state change it observes from taking effect -- the relay
    effects of a step run after the assignment that calls this."""
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("a connector subscriber failed; the connector goes on")
