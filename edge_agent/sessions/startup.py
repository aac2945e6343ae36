"""The sessions' start and end of a run of the agent.

Start-up (fail-safe first): every relay is commanded open (:func:`open_all`) before anything
else can fail; then each meter is read once and the sessions found open — the agent crashed
or lost power — are closed with PowerLoss or resumed (:func:`recover`, per the pure plan of
:mod:`edge_agent.sessions.recovery`). Shutdown (:func:`shut_down`): open sessions end with
Reboot (or are kept for the next start, ``recovery.on_shutdown``) and every relay opens.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence

from edge_agent.config import AgentSettings
from edge_agent.meters.poller import MeterPoller
from edge_agent.sessions.controller import Clocks, ConnectorController, energy_wh
from edge_agent.sessions.machine import Connector, EmitSessionEvent, Session, Stop, step
from edge_agent.sessions.recovery import Resume, plan_recovery
from edge_agent.store.sessions import EventContext, open_sessions, record_event
from protocols.enums import ConnectorStatus, StopReason
from protocols.messages import MeterReading

log = logging.getLogger(__name__)


async def open_all(controllers: Iterable[ConnectorController]) -> None:
    for controller in controllers:
        await controller.force_open()


async def recover(
    settings: AgentSettings,
    *,
    conn: sqlite3.Connection,
    pollers: Mapping[str, MeterPoller],
    controllers: Mapping[int, ConnectorController],
    fed_by: Mapping[str, Sequence[ConnectorController]],
    store: Callable[[MeterReading], None],
    clocks: Clocks,
) -> None:
    """Close or resume sessions left open by a crash (relays are already open)."""
    live: dict[str, MeterReading | None] = {}
    for meter_id, poller in pollers.items():
        live[meter_id] = reading = await poller.poll()
        if reading is not None:
            store(reading)
        for fed in fed_by.get(meter_id, ()):
            await fed.on_poll(reading)
    now, mono = clocks.wall(), clocks.mono()
    synced = clocks.synced()
    for session in open_sessions(conn, started_mono=mono):
        controller = controllers.get(session.connector)
        if controller is None:
            # The connector left the configuration: close the session, bill what is stored.
            context = EventContext(settings.device_id, now, synced, clocks.offline())
            _close_orphan(conn, session, context, mono)
            continue
        reading = live.get(settings.connector(session.connector).meter)
        live_wh = None if reading is None else energy_wh(dict(reading.values))
        plan = plan_recovery(
            session,
            mode=settings.recovery.on_restart,
            live_meter_wh=live_wh,
            now=now,
            clock_synced=synced,
        )
        if isinstance(plan, Resume):
            # It counts on from its stored elapsed seconds (open_sessions), not from the
            # wall clock, which may have stepped while the agent was down.
            log.warning(
                "resuming session %s on connector %s", session.session_id, session.connector
            )
            await controller.resume(session)
            continue
        log.warning(
            "closing session %s left open on connector %s (PowerLoss, %s meter value %s Wh)",
            session.session_id,
            session.connector,
            plan.source,
            plan.meter_wh,
        )
        await controller.close_recovered(session, plan.meter_wh)


def _close_orphan(
    conn: sqlite3.Connection, session: Session, context: EventContext, mono: float
) -> None:
    state = Connector(session.connector, ConnectorStatus.CHARGING, session=session)
    _, effects = step(state, Stop(StopReason.POWER_LOSS, context.now, mono, None))
    for effect in effects:
        if isinstance(effect, EmitSessionEvent):
            record_event(conn, effect, context)


async def shut_down(controllers: Iterable[ConnectorController], *, end_sessions: bool) -> None:
    """Open every relay; end the open sessions first (Reboot) when ``end_sessions``."""
    for controller in controllers:
        session = controller.session
        if session is not None and session.is_open and end_sessions:
            await controller.stop(StopReason.REBOOT)
        await controller.force_open()
    log.info("agent stopped; relays open")
