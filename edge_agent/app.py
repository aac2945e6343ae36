"""The composition root: builds every part of the agent from its settings, nests their
lifetimes, runs the named tasks in one TaskGroup, and shuts down safely.

Start-up order matters (fail-safe first):

1. every relay is commanded open, before anything else can fail;
2. the store is opened (migrated) and each meter is read once;
3. sessions found open (the agent crashed or lost power) are closed with PowerLoss or
   resumed, by :mod:`edge_agent.sessions.recovery`;
4. the tasks start and systemd hears READY=1.

On SIGTERM/SIGINT the tasks stop, every relay opens, open sessions end with Reboot (or are
kept for the next start, per ``recovery.on_shutdown``), the readings handed over are committed.

Readings go from the poll task straight to :class:`~edge_agent.store.writer.StoreWriter`
(a thread that group-commits them) and, once durable, to the uplink: no timer in between.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import datetime, timedelta

from edge_agent import __version__
from edge_agent.auth.authorizer import Authorizer, Credential, Moment
from edge_agent.auth.keys import load_pin_secret, load_verifier
from edge_agent.auth.lockout import Lockout
from edge_agent.clock import KernelClockState, always_synced
from edge_agent.commands import AgentCommands, load_overrides
from edge_agent.config import AgentSettings, MeterSettings, ModbusCoilRelay, SerialLink, TcpLink
from edge_agent.control.messages import Refused, StartAnswer
from edge_agent.control.ports import Ports
from edge_agent.control.socket import ControlServer
from edge_agent.control.status import StatusView
from edge_agent.control.table import build_table
from edge_agent.errors import AgentError
from edge_agent.heartbeat import beat, heartbeat_path
from edge_agent.inputs.http import HttpLimits, UnlockEndpoint
from edge_agent.inputs.readers import run_hid, run_rdm6300
from edge_agent.memory import release_startup_memory
from edge_agent.meters.bus import ModbusBus
from edge_agent.meters.poller import MeterPoller
from edge_agent.relay.drivers import make_driver
from edge_agent.relay.failsafe import SafetyLimits
from edge_agent.safety import TickLateness, safety_loop
from edge_agent.sdnotify import notify, watchdog_interval_s
from edge_agent.sessions.controller import Clocks, ConnectorController, energy_wh
from edge_agent.sessions.machine import Connector, EmitSessionEvent, Session, Stop, Thresholds, step
from edge_agent.sessions.recovery import Resume, plan_recovery
from edge_agent.status import StatusParts, gather
from edge_agent.store import readings as reading_store
from edge_agent.store.db import connect
from edge_agent.store.sessions import EventContext, open_sessions, record_event
from edge_agent.store.writer import Durable, StoreWriter
from edge_agent.sync.downlink import WallClock
from edge_agent.sync.from_config import sync_settings
from edge_agent.sync.service import SyncService
from protocols.enums import ConnectorStatus, StopReason
from protocols.messages import MeterReading
from protocols.meters import Quantity

log = logging.getLogger(__name__)


class Agent:
    """One running agent. ``await Agent(settings).run(stop_event)``."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self._clock_synced: Callable[[], bool] = (
            always_synced if settings.clock.trust == "always" else KernelClockState()
        )
        self.clocks = Clocks(synced=self._clock_synced, offline=self._offline)
        self.sync: SyncService | None = None
        self._conn: sqlite3.Connection | None = None
        self.buses: dict[str, ModbusBus] = {}
        self.pollers: dict[str, MeterPoller] = {}
        self.controllers: dict[int, ConnectorController] = {}
        self.authorizer: Authorizer | None = None
        self.writer: StoreWriter | None = None
        self.safety_ticks = TickLateness()
        self.ready = asyncio.Event()
        self._stop = asyncio.Event()

    # --- construction -------------------------------------------------------------------

    def _offline(self) -> bool:
        """Whether the cloud link is down (session events say so in their ``offline`` flag)."""
        return self.sync is None or self.sync.offline

    def _build_sync(self) -> None:
        configured = sync_settings(self.settings)
        if configured is None:
            log.warning("no [mqtt] table: running standalone, nothing leaves the outbox")
            return
        conn = self._db()
        self.sync = SyncService(
            conn,
            configured,
            handler=AgentCommands(
                conn=conn,
                settings=self.settings,
                present=self.present,
                connectors=self.controllers,
                now=self.clocks.wall,
                snapshot=self._status_view(),
            ),
            clock=WallClock(now=self.clocks.wall, synced=self._clock_synced),
            thinned=lambda: reading_store.thinned_total(conn).readings,
            status_parts=self.status_parts,
            writer=self.writer,
        )

    def status_parts(self) -> StatusParts:
        """The meters and connectors the ``status`` message reports (edge_agent/status.py)."""
        return gather(self.pollers.values(), self.controllers.values())

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise AgentError("the store is not open")
        return self._conn

    def _store_writer(self) -> StoreWriter:
        if self.writer is None:
            raise AgentError("the store writer is not running")
        return self.writer

    def _status_view(self) -> StatusView:
        """The control socket's ``status`` (and the cloud's diagnostics snapshot)."""
        return StatusView(
            device_id=self.settings.device_id, clock_synced=self._clock_synced,
            controllers=self.controllers.values(), pollers=self.pollers.values(),
            conn=self._db(), writer=self._store_writer(), ticks=self.safety_ticks,
        )  # fmt: skip

    def _control_ports(self) -> Ports:
        return Ports(
            connectors=self.controllers, meters=self.pollers, buses=self.buses, sync=self.sync,
            present=self.present, status=self._status_view(),
        )  # fmt: skip

    def _build(self, stack: AsyncExitStack) -> None:
        s = self.settings
        for meter in s.meters:
            self._bus(meter.link, stack)
        for conn_settings in s.connectors:
            if isinstance(conn_settings.relay, ModbusCoilRelay):
                self._bus(conn_settings.relay.link, stack)
        for meter in s.meters:
            self.pollers[meter.id] = MeterPoller(
                meter, self.buses[meter.link.bus_key], clock_synced=self._clock_synced
            )
        for c in s.connectors:
            relay = make_driver(c.relay, connector=c.id, buses=self.buses)
            self.controllers[c.id] = ConnectorController(
                c.id,
                relay=relay,
                conn=self._db(),
                device_id=s.device_id,
                limits=SafetyLimits(
                    rating_a=c.max_current_a,
                    overcurrent_ratio=s.limits.overcurrent_ratio,
                    overcurrent_hold_s=s.limits.overcurrent_hold_s,
                    meter_silence_s=s.limits.meter_silence_s,
                    stuck_relay_check_s=s.limits.stuck_relay_check_s,
                    stuck_relay_power_w=s.limits.stuck_relay_power_w,
                    max_energy_step_wh=s.limits.max_energy_step_wh,
                ),
                thresholds=Thresholds(s.limits.charging_power_w, s.limits.suspended_after_s),
                clocks=self.clocks,
                read_meter=self._reader(c.meter),
                session_max_wh=s.limits.max_session_wh,
                session_max_s=s.limits.max_session_s,
            )
        self.authorizer = Authorizer(
            self._db(),
            charger_id=s.device_id,
            verifier=load_verifier(s.auth),
            pin_secret=load_pin_secret(s.auth.pin_secret_file),
            lockout=Lockout(s.auth.pin_max_failures, s.auth.pin_lockout_s),
            token_leeway=timedelta(seconds=s.auth.token_leeway_s),
            cache_max_entries=s.auth.cache_max_entries,
            cache_ttl=timedelta(seconds=s.auth.cache_ttl_s),
        )

    def _bus(self, link: SerialLink | TcpLink, stack: AsyncExitStack) -> None:
        if link.bus_key not in self.buses:
            bus = ModbusBus(link, self.settings.bus)
            stack.callback(bus.close)
            self.buses[link.bus_key] = bus

    def _reader(self, meter_id: str) -> Callable[[], Awaitable[dict[Quantity, float] | None]]:
        async def read() -> dict[Quantity, float] | None:
            reading = await self.pollers[meter_id].poll()
            return None if reading is None else dict(reading.values)

        return read

    def _connectors_of(self, meter_id: str) -> list[ConnectorController]:
        return [self.controllers[c.id] for c in self.settings.connectors if c.meter == meter_id]

    # --- start-up -----------------------------------------------------------------------

    async def _open_all_relays(self) -> None:
        for controller in self.controllers.values():
            await controller.force_open()

    async def _recover(self) -> None:
        """Close or resume sessions left open by a crash (relays are already open)."""
        live: dict[str, MeterReading | None] = {}
        for meter_id, poller in self.pollers.items():
            live[meter_id] = reading = await poller.poll()
            if reading is not None:
                self._store(reading)
            for fed in self._connectors_of(meter_id):
                await fed.on_poll(live[meter_id])
        now, mono = self.clocks.wall(), self.clocks.mono()
        synced = self._clock_synced()
        for session in open_sessions(self._db()):
            controller = self.controllers.get(session.connector)
            if controller is None:
                # The connector left the configuration: close the session, bill what is stored.
                self._close_orphan(session, now, mono)
                continue
            meter_id = self.settings.connector(session.connector).meter
            reading = live.get(meter_id)
            live_wh = None if reading is None else energy_wh(dict(reading.values))
            plan = plan_recovery(
                session, mode=self.settings.recovery.on_restart, live_meter_wh=live_wh,
                now=now, clock_synced=synced,
            )  # fmt: skip
            if isinstance(plan, Resume):
                elapsed_s = (now - session.started_at).total_seconds() if synced else 0.0
                log.warning("resuming session %s on connector %s", session.session_id,
                            session.connector)  # fmt: skip
                await controller.resume(replace(session, started_mono=mono - elapsed_s))
                continue
            log.warning(
                "closing session %s left open on connector %s (PowerLoss, %s meter value %s Wh)",
                session.session_id, session.connector, plan.source, plan.meter_wh,
            )  # fmt: skip
            await controller.close_recovered(session, plan.meter_wh)

    def _close_orphan(self, session: Session, now: datetime, mono: float) -> None:
        state = Connector(session.connector, ConnectorStatus.CHARGING, session=session)
        _, effects = step(state, Stop(StopReason.POWER_LOSS, now, mono, None))
        for effect in effects:
            if isinstance(effect, EmitSessionEvent):
                record_event(self._db(), effect, self._event_context())

    def _event_context(self) -> EventContext:
        return EventContext(
            device_id=self.settings.device_id,
            now=self.clocks.wall(),
            clock_synced=self._clock_synced(),
            offline=self.clocks.offline(),
        )

    # --- tasks --------------------------------------------------------------------------

    async def _poll_bus(self, meters: list[MeterSettings]) -> None:
        """Poll the meters of one bus in turn, each at its interval (monotonic schedule).

        Each reading goes to the store writer as soon as it is taken — except on a Modbus TCP
        bus, where the readings of meters due at the same moment (a round, milliseconds long)
        go together, so a site's round is one commit and one message rather than one per
        meter. An RS-485 read takes a large part of a second: there every reading goes alone.
        """
        loop = asyncio.get_running_loop()
        due = dict.fromkeys((m.id for m in meters), loop.time())
        rounds = isinstance(meters[0].link, TcpLink) and len(meters) > 1
        taken: list[MeterReading] = []
        try:
            while not self._stop.is_set():
                meter_id = min(due, key=lambda k: due[k])
                await asyncio.sleep(max(0.0, due[meter_id] - loop.time()))
                reading = await self.pollers[meter_id].poll()
                settings = self.settings.meter(meter_id)
                due[meter_id] = max(due[meter_id] + settings.poll_interval_s, loop.time())
                if reading is not None:
                    taken.append(reading)
                others_due = any(t <= loop.time() for m, t in due.items() if m != meter_id)
                if taken and not (rounds and others_due and len(taken) < len(meters)):
                    # Handed over before the fail-safe rules run: their relay actions may
                    # take bus time, and the readings are on their way to disk meanwhile.
                    self._store(*taken)
                    taken = []
                for controller in self._connectors_of(meter_id):
                    await controller.on_poll(reading)
        finally:
            if taken:  # a round cut short by the stop: what was taken is still stored
                self._store(*taken)

    def _store(self, *readings: MeterReading) -> None:
        self._store_writer().submit(*readings)

    def _open_sessions(self) -> list[Session]:
        """The open sessions, read by the writer thread at each commit (a Session is an
        immutable value: the thread sees either the old one or the new one)."""
        controllers = list(self.controllers.values())
        return [c.session for c in controllers if c.session is not None and c.session.is_open]

    def _durable(self, result: Durable) -> None:
        """A group of readings is committed (event loop): the uplink may publish it now."""
        if self.sync is not None and result.readings:
            self.sync.notify()
        if result.thinned_readings or result.thinned_batches:
            log.warning("store over its cap: thinned %d readings, %d telemetry batches",
                        result.thinned_readings, result.thinned_batches)  # fmt: skip

    def _make_writer(self) -> StoreWriter:
        return StoreWriter(
            self.settings.store.path, device_id=self.settings.device_id, now=self.clocks.wall,
            open_sessions=self._open_sessions, max_bytes=self.settings.store.max_bytes,
            on_durable=self._durable,
        )  # fmt: skip

    async def _progress_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(self.settings.sessions.progress_interval_s)
            for controller in self.controllers.values():
                await controller.emit_progress()

    async def _watchdog_loop(self, interval_s: float) -> None:
        while not self._stop.is_set():
            notify("WATCHDOG=1")
            await asyncio.sleep(interval_s)

    # --- the one decision path -----------------------------------------------------------

    async def present(self, credential: Credential, connector: int) -> StartAnswer | Refused:
        """A credential presented at ``connector`` (any input): decide, then start."""
        controller = self.controllers.get(connector)
        if controller is None or self.authorizer is None:
            return Refused(error=f"no connector {connector}")
        at = Moment(self.clocks.wall(), self.clocks.mono(), self._clock_synced())
        decision = self.authorizer.authorize(
            credential, connector=connector, at=at, connector_busy=controller.busy
        )
        answer = StartAnswer(
            ok=decision.accepted, status=decision.status.value, reason=decision.reason
        )
        if decision.accepted:
            result = await controller.start(decision)
            answer.ok, answer.session_id = result.session_id is not None, result.session_id
            answer.detail = result.detail
        log.info("connector %s: %s %s -> %s", connector, decision.kind.value, decision.ref[:12],
                 answer.detail if decision.accepted else decision.status.value)  # fmt: skip
        return answer

    # --- the whole run ------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then shut down safely."""
        async with AsyncExitStack() as stack:
            self._conn = connect(self.settings.store.path)
            stack.callback(self._conn.close)
            overridden = load_overrides(self.settings, self._conn)
            if overridden is not self.settings:
                log.warning("applying the configuration update received from the cloud")
                self.settings = overridden
            self._build(stack)
            # Before sync: the uplink deletes acknowledged rows through the writer too.
            self.writer = await stack.enter_async_context(self._make_writer())
            self._build_sync()
            await self._open_all_relays()
            await self._recover()
            await stack.enter_async_context(
                ControlServer(
                    self.settings.control.socket_path, build_table(self._control_ports()).answer
                )
            )
            notify("READY=1")
            self.ready.set()
            release_startup_memory()
            log.info("agent %s ready: %d meter(s), %d connector(s)", self.settings.device_id,
                     len(self.pollers), len(self.controllers))  # fmt: skip
            try:
                await self._supervise(stop)
            finally:
                notify("STOPPING=1")
                await self._shutdown()

    async def _supervise(self, stop: asyncio.Event) -> None:
        """Run the named tasks until ``stop`` is set, then cancel them.

        Each loop also ends when ``stop`` is set: Python 3.11's ``asyncio.wait_for`` (inside
        pymodbus) can drop a cancellation that lands as an answer arrives (CPython gh-86296).
        A task that crashes cancels the others and its error propagates (systemd restarts us).
        """
        self._stop = stop
        async with asyncio.TaskGroup() as group:
            tasks = []
            by_bus: dict[str, list[MeterSettings]] = {}
            for meter in self.settings.meters:
                by_bus.setdefault(meter.link.bus_key, []).append(meter)
            for key, meters in by_bus.items():
                tasks.append(group.create_task(self._poll_bus(meters), name=f"poll:{key}"))
            assert self.writer is not None
            tasks.append(group.create_task(self.writer.failed(), name="store-writer"))
            tasks.append(group.create_task(
                safety_loop(self.controllers.values(), self.safety_ticks, stop), name="safety"
            ))  # fmt: skip
            tasks.append(group.create_task(self._progress_loop(), name="session-progress"))
            if self.sync is not None:
                tasks.append(group.create_task(self.sync.run(), name="sync"))
            inputs = self.settings.inputs
            for rdm in inputs.rdm6300:
                tasks.append(group.create_task(
                    run_rdm6300(rdm.port, rdm.connector, self.present, baud=rdm.baud,
                                debounce_s=rdm.debounce_s),
                    name=f"rfid:{rdm.port}",
                ))  # fmt: skip
            for hid in inputs.hid:
                tasks.append(group.create_task(
                    run_hid(hid.device, hid.kind, hid.connector, self.present,
                            debounce_s=hid.debounce_s),
                    name=f"hid:{hid.device}",
                ))  # fmt: skip
            if inputs.http.enabled:
                http = inputs.http
                limits = HttpLimits(http.max_connections, http.header_timeout_s,
                                    http.body_timeout_s)  # fmt: skip
                endpoint = UnlockEndpoint(http.host, http.port, self.present, limits=limits)
                tasks.append(group.create_task(endpoint.serve(), name="http-unlock"))
            # A file doctor reads to tell a responsive agent from a hung one (docs/cli.md).
            tasks.append(group.create_task(
                beat(heartbeat_path(self.settings.control.socket_path), version=__version__,
                     stop=stop),
                name="heartbeat",
            ))  # fmt: skip
            interval = watchdog_interval_s()
            if interval is not None:
                tasks.append(group.create_task(self._watchdog_loop(interval), name="watchdog"))
            await stop.wait()
            for task in tasks:
                task.cancel()

    async def _shutdown(self) -> None:
        for controller in self.controllers.values():
            session = controller.session
            if (
                session is not None
                and session.is_open
                and self.settings.recovery.on_shutdown == "end"
            ):
                await controller.stop(StopReason.REBOOT)
            await controller.force_open()
        # The readings handed over are committed when the writer's context closes (run()).
        log.info("agent stopped; relays open")


async def run_agent(settings: AgentSettings) -> None:
    """Run the agent in this process until SIGTERM or SIGINT."""
    # pymodbus logs every unanswered request at ERROR; our poller logs a meter's failure once
    # and its recovery once (STYLE.md §6), so pymodbus's own lines would only be a storm.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await Agent(settings).run(stop)
