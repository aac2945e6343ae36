"""The composition root: builds every part of the agent from its settings, wires them, nests
their lifetimes, and runs the named tasks in one TaskGroup. Nothing here decides anything:
what each part does lives in its own module.

Start-up order matters (fail-safe first):

1. the store is opened (migrated) and every part built (:func:`runtime`);
2. every relay is commanded open, before anything else can fail
   (:func:`edge_agent.sessions.startup.open_all`);
3. each meter is read once and sessions found open (the agent crashed or lost power) are
   closed with PowerLoss or resumed (:func:`edge_agent.sessions.startup.recover`);
4. the control socket opens, the tasks start and systemd hears READY=1.

On SIGTERM/SIGINT the tasks stop, open sessions end with Reboot (or are kept for the next
start, per ``recovery.on_shutdown``), every relay opens
(:func:`edge_agent.sessions.startup.shut_down`), and the readings handed over are committed
as the store writer's context closes.

Where each behaviour lives: docs/edge.md ("Layout").
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING

from edge_agent import __version__
from edge_agent.auth.authorizer import Authorizer
from edge_agent.auth.keys import load_pin_secret, load_verifier
from edge_agent.auth.lockout import Lockout
from edge_agent.clock import KernelClockState, always_synced, wall_clock
from edge_agent.cloud_commands import AgentCommands, load_overrides
from edge_agent.config import AgentSettings, MeterSettings, ModbusCoilRelay
from edge_agent.control.ports import Ports, Present
from edge_agent.control.socket import ControlServer
from edge_agent.control.status import StatusView
from edge_agent.control.table import build_table
from edge_agent.decide import DecisionPath
from edge_agent.errors import AgentError
from edge_agent.heartbeat import beat, heartbeat_path
from edge_agent.inputs.http import HttpLimits, UnlockEndpoint
from edge_agent.inputs.readers import run_hid, run_rdm6300
from edge_agent.memory import release_startup_memory
from edge_agent.meters.bus import ModbusBus
from edge_agent.meters.poller import MeterPoller
from edge_agent.polling import poll_bus
from edge_agent.relay.drivers import make_driver
from edge_agent.relay.manual_close import safety_limits
from edge_agent.safety import TickLateness, safety_loop
from edge_agent.sdnotify import notify, watchdog_interval_s
from edge_agent.sessions.controller import Clocks, ConnectorController
from edge_agent.sessions.machine import Session, Thresholds
from edge_agent.sessions.progress import progress_loop
from edge_agent.sessions.startup import open_all, recover, shut_down
from edge_agent.status import gather
from edge_agent.store import readings as reading_store
from edge_agent.store.db import connect
from edge_agent.store.writer import Durable, StoreWriter
from edge_agent.sync.downlink import WallClock
from edge_agent.sync.from_config import sync_settings
from edge_agent.sync.service import SyncService
from edge_agent.watchdog import AgentHealth, watchdog_loop
from protocols.meters import Quantity

if TYPE_CHECKING:
    from edge_agent.ocpp.uplink import OcppUplink

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Runtime:
    """Every part of a running agent, built and wired; alive inside :func:`runtime`."""

    settings: AgentSettings
    clocks: Clocks
    conn: sqlite3.Connection
    buses: dict[str, ModbusBus]
    pollers: dict[str, MeterPoller]
    controllers: dict[int, ConnectorController]
    #: The connectors each meter feeds (configuration order).
    fed_by: dict[str, list[ConnectorController]]
    writer: StoreWriter
    authorizer: Authorizer
    #: The one decision path (with the CSMS asked about unknown id tags when [ocpp] is on).
    present: Present
    #: None by configuration (no ``[mqtt]``: standalone), never by phase.
    sync: SyncService | None
    ticks: TickLateness
    #: The control socket's ``status`` (and the cloud's diagnostics snapshot).
    status: StatusView
    #: None by configuration (no ``[ocpp]``).
    ocpp: OcppUplink | None = None
    #: Set when the agent should stop and be started again (OCPP Reset).
    restart: asyncio.Event | None = None

    def control_ports(self) -> Ports:
        return Ports(
            connectors=self.controllers,
            meters=self.pollers,
            buses=self.buses,
            sync=self.sync,
            present=self.present,
            status=self.status,
            ocpp=None if self.ocpp is None else self.ocpp.status_answer,
        )


@asynccontextmanager
async def runtime(settings: AgentSettings) -> AsyncIterator[Runtime]:
    """Build every part from ``settings`` (with the stored cloud update applied); each
    resource's lifetime nests in this context, closed in reverse on exit."""
    async with AsyncExitStack() as stack:
        conn = connect(settings.store.path)
        stack.callback(conn.close)
        overridden = load_overrides(settings, conn)
        if overridden is not settings:
            log.warning("applying the configuration update received from the cloud")
            settings = overridden
        synced: Callable[[], bool] = (
            always_synced if settings.clock.trust == "always" else KernelClockState()
        )
        # Set once the sync service is built (below): the parts built before it read it late.
        sync: SyncService | None = None
        clocks = Clocks(
            wall=wall_clock(settings.clock.offset_file),
            synced=synced,
            offline=lambda: sync is None or sync.offline,
        )

        buses: dict[str, ModbusBus] = {}
        links = [m.link for m in settings.meters] + [
            c.relay.link for c in settings.connectors if isinstance(c.relay, ModbusCoilRelay)
        ]
        for link in links:
            if link.bus_key not in buses:
                buses[link.bus_key] = await stack.enter_async_context(ModbusBus(link, settings.bus))
        pollers = {
            m.id: MeterPoller(m, buses[m.link.bus_key], clock_synced=synced, clock=clocks.wall)
            for m in settings.meters
        }
        limits = settings.limits
        controllers = {
            c.id: ConnectorController(
                c.id,
                relay=make_driver(c.relay, connector=c.id, buses=buses),
                conn=conn,
                device_id=settings.device_id,
                limits=safety_limits(settings, c.id),
                thresholds=Thresholds(limits.charging_power_w, limits.suspended_after_s),
                clocks=clocks,
                read_meter=_reader(pollers[c.meter]),
                session_max_wh=limits.max_session_wh,
                session_max_s=limits.max_session_s,
            )
            for c in settings.connectors
        }
        fed_by: dict[str, list[ConnectorController]] = {m.id: [] for m in settings.meters}
        for c in settings.connectors:
            fed_by[c.meter].append(controllers[c.id])
        auth = settings.auth
        authorizer = Authorizer(
            conn,
            charger_id=settings.device_id,
            verifier=load_verifier(auth),
            pin_secret=load_pin_secret(auth.pin_secret_file),
            lockout=Lockout(auth.pin_max_failures, auth.pin_lockout_s),
            token_leeway=timedelta(seconds=auth.token_leeway_s),
            cache_max_entries=auth.cache_max_entries,
            cache_ttl=timedelta(seconds=auth.cache_ttl_s),
        )
        present: Present = DecisionPath(authorizer, controllers, clocks=clocks, clock_synced=synced)
        restart = asyncio.Event()
        ocpp: OcppUplink | None = None
        if settings.ocpp is not None:
            # Imported only when enabled: the WebSocket client costs RSS (docs/edge.md).
            from edge_agent.ocpp.wiring import build_uplink  # noqa: PLC0415

            ocpp, present = build_uplink(
                settings.ocpp,
                device_id=settings.device_id,
                conn=conn,
                controllers=controllers,
                authorizer=authorizer,
                clocks=clocks,
                present=present,
                restart=restart.set,
            )

        def durable(result: Durable) -> None:
            """A group of readings is committed (event loop): the uplink may publish it now."""
            if sync is not None and result.readings:
                sync.notify()
            if result.thinned_readings or result.thinned_batches:
                log.warning(
                    "store over its cap: thinned %d readings, %d telemetry batches",
                    result.thinned_readings,
                    result.thinned_batches,
                )

        def open_now() -> list[Session]:
            """The open sessions, read by the writer thread at each commit (a Session is an
            immutable value: the thread sees either the old one or the new one)."""
            sessions = [c.session for c in list(controllers.values())]
            return [s for s in sessions if s is not None and s.is_open]

        # Before sync: the uplink deletes acknowledged rows through the writer too.
        writer = await stack.enter_async_context(
            StoreWriter(
                settings.store.path,
                device_id=settings.device_id,
                now=clocks.wall,
                open_sessions=open_now,
                max_bytes=settings.store.max_bytes,
                on_durable=durable,
            )
        )
        ticks = TickLateness()
        status = StatusView(
            device_id=settings.device_id,
            clock_synced=synced,
            controllers=controllers.values(),
            pollers=pollers.values(),
            conn=conn,
            writer=writer,
            ticks=ticks,
        )
        configured = sync_settings(settings)
        if configured is None:
            log.warning("no [mqtt] table: running standalone, nothing leaves the outbox")
        else:
            sync = SyncService(
                conn,
                configured,
                handler=AgentCommands(
                    conn=conn,
                    settings=settings,
                    present=present,
                    connectors=controllers,
                    now=clocks.wall,
                    snapshot=status,
                ),
                clock=WallClock(now=clocks.wall, synced=synced),
                thinned=lambda: reading_store.thinned_total(conn).readings,
                status_parts=lambda: gather(pollers.values(), controllers.values()),
                writer=writer,
            )
        yield Runtime(
            settings=settings,
            clocks=clocks,
            conn=conn,
            buses=buses,
            pollers=pollers,
            controllers=controllers,
            fed_by=fed_by,
            writer=writer,
            authorizer=authorizer,
            present=present,
            sync=sync,
            ticks=ticks,
            status=status,
            ocpp=ocpp,
            restart=restart,
        )


def _reader(poller: MeterPoller) -> Callable[[], Awaitable[dict[Quantity, float] | None]]:
    """The connector's meter read now (its final reading at a stop; the relay test's power)."""

    async def read() -> dict[Quantity, float] | None:
        reading = await poller.poll()
        return None if reading is None else dict(reading.values)

    return read


class Agent:
    """One running agent. ``await Agent(settings).run(stop_event)``."""

    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self.ready = asyncio.Event()
        self._runtime: Runtime | None = None
        #: The run ended because a restart was asked for (OCPP Reset), not by a signal.
        self.restart_requested = False

    @property
    def runtime(self) -> Runtime:
        """The parts of the running agent (once :attr:`ready` is set)."""
        if self._runtime is None:
            raise AgentError("the agent is not running")
        return self._runtime

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then shut down safely."""
        async with runtime(self.settings) as rt:
            self._runtime = rt
            await open_all(rt.controllers.values())
            await recover(
                rt.settings,
                conn=rt.conn,
                pollers=rt.pollers,
                controllers=rt.controllers,
                fed_by=rt.fed_by,
                store=rt.writer.submit,
                clocks=rt.clocks,
            )
            table = build_table(rt.control_ports())
            async with ControlServer(rt.settings.control.socket_path, table.answer):
                notify("READY=1")
                self.ready.set()
                release_startup_memory()
                log.info(
                    "agent %s ready: %d meter(s), %d connector(s)",
                    rt.settings.device_id,
                    len(rt.pollers),
                    len(rt.controllers),
                )
                try:
                    await _supervise(rt, stop)
                finally:
                    notify("STOPPING=1")
                    end = rt.settings.recovery.on_shutdown == "end"
                    await shut_down(rt.controllers.values(), end_sessions=end)
                    self.restart_requested = rt.restart is not None and rt.restart.is_set()


async def _supervise(rt: Runtime, stop: asyncio.Event) -> None:
    """Run the named tasks until ``stop`` is set, then cancel them.

    Each loop also ends when ``stop`` is set: Python 3.11's ``asyncio.wait_for`` (inside
    pymodbus) can drop a cancellation that lands as an answer arrives (CPython gh-86296).
    A task that crashes cancels the others and its error propagates (systemd restarts us).
    """
    s = rt.settings
    async with asyncio.TaskGroup() as group:
        tasks: list[asyncio.Task[None]] = []

        def task(coro: Coroutine[object, object, None], name: str) -> None:
            tasks.append(group.create_task(coro, name=name))

        by_bus: dict[str, list[MeterSettings]] = {}
        for meter in s.meters:
            by_bus.setdefault(meter.link.bus_key, []).append(meter)
        for key, meters in by_bus.items():
            task(poll_bus(meters, rt.pollers, rt.fed_by, rt.writer.submit, stop), f"poll:{key}")
        task(rt.writer.failed(), "store-writer")
        task(safety_loop(rt.controllers.values(), rt.ticks, stop), "safety")
        interval_s = s.sessions.progress_interval_s
        task(progress_loop(rt.controllers.values(), interval_s, stop), "session-progress")
        if rt.sync is not None:
            task(rt.sync.run(), "sync")
        if rt.ocpp is not None:
            task(rt.ocpp.run(stop), "ocpp")
        if rt.restart is not None:
            task(_stop_on(rt.restart, stop), "restart")
        for rdm in s.inputs.rdm6300:
            task(
                run_rdm6300(
                    rdm.port, rdm.connector, rt.present, baud=rdm.baud, debounce_s=rdm.debounce_s
                ),
                f"rfid:{rdm.port}",
            )
        for hid in s.inputs.hid:
            task(
                run_hid(hid.device, hid.kind, hid.connector, rt.present, debounce_s=hid.debounce_s),
                f"hid:{hid.device}",
            )
        http = s.inputs.http
        if http.enabled:
            limits = HttpLimits(http.max_connections, http.header_timeout_s, http.body_timeout_s)
            task(
                UnlockEndpoint(http.host, http.port, rt.present, limits=limits).serve(),
                "http-unlock",
            )
        # A file doctor reads to tell a responsive agent from a hung one (docs/cli.md).
        path = heartbeat_path(s.control.socket_path)
        task(beat(path, version=__version__, stop=stop), "heartbeat")
        watchdog_s = watchdog_interval_s()
        if watchdog_s is not None:
            # Fed by the loops' progress, never by a bare timer (edge_agent/watchdog.py).
            health = AgentHealth(
                list(rt.pollers.values()),
                rt.writer,
                timeout_s=2 * watchdog_s,
                ticks=rt.ticks,
                locked_max_s=s.store.locked_max_s,
            )
            task(watchdog_loop(health, watchdog_s, stop), "watchdog")
        await stop.wait()
        for running in tasks:
            running.cancel()


async def _stop_on(restart: asyncio.Event, stop: asyncio.Event) -> None:
    """Stop the agent when a restart is asked for (OCPP Reset): it shuts down as on SIGTERM."""
    restart_wait = asyncio.ensure_future(restart.wait())
    stop_wait = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait((restart_wait, stop_wait), return_when=asyncio.FIRST_COMPLETED)
    finally:
        restart_wait.cancel()
        stop_wait.cancel()
    stop.set()


async def run_agent(settings: AgentSettings) -> bool:
    """Run the agent in this process until SIGTERM or SIGINT (False), or until a restart is
    asked for (True: OCPP Reset)."""
    # pymodbus logs every unanswered request at ERROR; our poller logs a meter's failure once
    # and its recovery once (STYLE.md §6), so pymodbus's own lines would only be a storm.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agent = Agent(settings)
    await agent.run(stop)
    return agent.restart_requested
