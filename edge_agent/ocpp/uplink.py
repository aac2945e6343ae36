"""The OCPP 1.6-J uplink: this agent as a charge point of an operator's CSMS.

One supervisor, :meth:`OcppUplink.run`: connect (:mod:`edge_agent.ocpp.link`), and while
connected run the reader and, once BootNotification is Accepted, the heartbeat, the status
watch and the transaction queue (:mod:`edge_agent.ocpp.transactions`) in one TaskGroup;
when the link breaks, wait by the agent's backoff (:mod:`edge_agent.backoff`) and connect
again. Sessions, meter values and authorization stay the agent's: the uplink reads the
store's session events, and the CSMS's commands go through the control layer
(:mod:`edge_agent.ocpp.calls`).

Nothing here polls: the connectors tell the uplink when a status changes and when a session
event is recorded (:meth:`~edge_agent.sessions.controller.ConnectorController.subscribe`,
wired in :mod:`edge_agent.ocpp.wiring`), and each task sleeps until it is told or until its
next due time (the heartbeat, the WebSocket ping, a CALLERROR's retry). An idle uplink wakes
the agent only for those.

OCPP-J §4.1.1 allows one call in flight in each direction: :meth:`OcppUplink.call` holds a
lock from sending a CALL to its answer; the CSMS's calls are answered as they come.
Until the CSMS accepts the BootNotification, nothing else is sent (OCPP 1.6 §4.2); while it
is Rejected, its calls are not answered either.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from edge_agent import __version__
from edge_agent.backoff import Backoff, Retries
from edge_agent.config import OcppSettings
from edge_agent.control import handlers
from edge_agent.control import messages as control
from edge_agent.errors import AgentError, OcppCallFailed, OcppFrameError, OcppLinkError
from edge_agent.memory import return_freed_heap
from edge_agent.ocpp import frames
from edge_agent.ocpp import messages as build
from edge_agent.ocpp import requests as r
from edge_agent.ocpp.calls import CsmsCalls, UplinkActions
from edge_agent.ocpp.keys import KeyStore, core_keys
from edge_agent.ocpp.link import Endpoint, Link, open_link
from edge_agent.ocpp.transactions import TransactionQueue
from edge_agent.sessions.controller import ConnectorController
from edge_agent.store import ocpp as queue
from edge_agent.store.db import translated
from protocols.enums import AuthorizationStatus, ConnectorStatus, StopReason
from protocols.meters import Quantity

log = logging.getLogger(__name__)

#: BootNotification again after this long when the CSMS said Pending/Rejected with interval 0.
BOOT_RETRY_S = 60.0


@dataclass(slots=True)
class OcppStats:
    """What ``sync status`` and ``doctor`` show of the CSMS link."""

    connected: bool = False
    #: Accepted, Pending or Rejected (the last BootNotification.conf), or None before one.
    registration: str | None = None
    connects: int = 0
    last_error: str | None = None
    last_answer_at: datetime | None = None
    calls: int = 0
    call_errors: int = 0


class _Reconnect(Exception):
    """Leave the connection and connect again (a new AuthorizationKey)."""


class OcppUplink:
    def __init__(
        self,
        settings: OcppSettings,
        *,
        device_id: str,
        conn: sqlite3.Connection,
        connectors: Mapping[int, ConnectorController],
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        restart: Callable[[], None],
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.charge_point_id = settings.charge_point_id or device_id
        self._conn = conn
        self._connectors = connectors
        self._now = now
        self._restart = restart
        self._mono = mono
        initial_key = None
        if settings.authorization_key_file is not None:
            initial_key = settings.authorization_key_file.read_text("utf-8").strip()
        self.keys = KeyStore(
            conn, core_keys(settings, connectors=len(connectors)), initial_key=initial_key
        )
        self.stats = OcppStats()
        self.queue = TransactionQueue(
            conn,
            self.keys,
            foreign_id_tag=settings.foreign_id_tag,
            deauthorize=self._deauthorize,
            mono=mono,
        )
        self._link: Link | None = None
        self._in_flight = asyncio.Lock()
        self._pending: tuple[str, asyncio.Future[frames.Frame]] | None = None
        #: New session events may be in the store (set by :meth:`wake`).
        self._events = asyncio.Event()
        #: A connector's status or fault may have changed (set by :meth:`status_changed`).
        self._changed = asyncio.Event()
        #: New rows may be in the queue.
        self._wake = asyncio.Event()
        self._reconnect = asyncio.Event()
        self._told: dict[int, tuple[str, StopReason | None]] = {}
        self._calls: CsmsCalls | None = None
        #: The CSMS accepted this run's BootNotification (reconnects do not boot again).
        self._registered = False

    # --- wiring -------------------------------------------------------------------------

    def bind(self, calls: CsmsCalls) -> None:
        """The CSMS's calls' handler (built by the composition root with the decision path)."""
        self._calls = calls

    def actions(self) -> UplinkActions:
        return UplinkActions(
            trigger=self._trigger,
            reconnect=self._reconnect.set,
            reset=self._reset,
            wake=self.wake,
        )

    @property
    def online(self) -> bool:
        """Connected and accepted by the CSMS: calls may be made."""
        return self._link is not None and self.stats.registration == "Accepted"

    def wake(self) -> None:
        """New session events may be in the store: read them now."""
        self._events.set()

    def status_changed(self) -> None:
        """A connector's status or fault changed: tell the CSMS (if connected)."""
        self._changed.set()

    def status_answer(self) -> control.OcppStatusAnswer:
        """The control socket's ``ocpp_status`` (``sync status``, ``doctor``)."""
        st = self.stats
        return control.OcppStatusAnswer(
            configured=True,
            connected=st.connected,
            registration=st.registration,
            url=self.settings.url,
            charge_point_id=self.charge_point_id,
            last_error=st.last_error,
            connects=st.connects,
            calls=st.calls,
            call_errors=st.call_errors,
            last_answer_at=None if st.last_answer_at is None else st.last_answer_at.isoformat(),
            queued=self.queue.depth(),
            given_up=self.queue.given_up,
        )

    # --- calls to the CSMS ------------------------------------------------------------------

    async def call(self, action: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Send one CALL and wait for its answer (one in flight at a time).

        Raises :class:`OcppCallFailed` (a CALLERROR, or no answer in time) or
        :class:`OcppLinkError` (no link, or it broke meanwhile).
        """
        async with self._in_flight:
            link = self._link
            if link is None:
                raise OcppLinkError(f"{action}: not connected")
            uid = uuid.uuid4().hex
            future: asyncio.Future[frames.Frame] = asyncio.get_running_loop().create_future()
            self._pending = (uid, future)
            try:
                await link.send(frames.encode(frames.Call(uid, action, payload)))
                self.stats.calls += 1
                try:
                    async with asyncio.timeout(self.settings.call_timeout_s):
                        answer = await future
                except TimeoutError:
                    raise OcppCallFailed(action, None) from None
            finally:
                self._pending = None
        if isinstance(answer, frames.CallError):
            self.stats.call_errors += 1
            raise OcppCallFailed(action, answer.code, answer.description)
        assert isinstance(answer, frames.CallResult)
        self.stats.last_answer_at = self._now()
        return answer.payload

    async def authorize(self, tag: str) -> AuthorizationStatus | None:
        """Authorize.req for ``tag``; None when the CSMS cannot be asked or did not answer."""
        if not self.online:
            return None
        try:
            answer = await self.call("Authorize", {"idTag": tag})
        except OcppLinkError as exc:
            log.warning("OCPP Authorize not answered: %s", exc)
            return None
        info = answer.get("idTagInfo")
        status = info.get("status") if isinstance(info, dict) else None
        try:
            return AuthorizationStatus(str(status))
        except ValueError:
            return None

    # --- the supervisor -------------------------------------------------------------------

    def endpoint(self) -> Endpoint:
        s = self.settings
        return Endpoint(
            url=s.url,
            charge_point_id=self.charge_point_id,
            security_profile=s.security_profile,
            authorization_key=self.keys.authorization_key,
            ca_file=s.ca_file,
            open_timeout_s=s.call_timeout_s,
            ping_interval_s=self.keys.int_value("WebSocketPingInterval"),
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Queue transaction messages (online or not), and connect, serve, reconnect —
        until ``stop`` is set or the task is cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._fill(stop), name="ocpp-queue-fill")
            await self._connect(stop)

    async def _fill(self, stop: asyncio.Event) -> None:
        """Turn new session events into queue rows as they are recorded, connected or not:
        offline, the queue in the store is what ``sync status`` shows waiting."""
        # First, a refusal stored before a kill -9 and not acted on: stop that session now.
        await self.queue.stop_refused()
        while not stop.is_set():
            self._events.clear()
            if await self.queue.fill_all():
                self._wake.set()
            # Every session event is recorded by a connector, which wakes this (wiring.py).
            await _first(self._events, stop)

    async def _connect(self, stop: asyncio.Event) -> None:
        s = self.settings
        retries = Retries(Backoff(initial_s=s.reconnect_min_s, max_s=s.reconnect_max_s))
        await self._apply_availability()
        while not stop.is_set():
            try:
                async with open_link(self.endpoint()) as link:
                    self._link = link
                    self.stats.connected = True
                    self.stats.connects += 1
                    if retries.failures:
                        log.info("OCPP: connected to %s again", s.url)
                    retries.succeeded()
                    await self._serve(link, stop)
            except* (OcppLinkError, _Reconnect) as group:
                exc = group.exceptions[0]
                if retries.failures == 0 and not self._reconnect.is_set() and not stop.is_set():
                    log.error("OCPP link to %s: %s", s.url, exc)
                self.stats.last_error = str(exc)
            finally:
                self._link = None
                self.stats.connected = False
                self.stats.registration = None
                pending = self._pending
                if pending is not None and not pending[1].done():
                    pending[1].set_exception(OcppLinkError("the link closed"))
            if stop.is_set():
                return
            if self._reconnect.is_set():
                self._reconnect.clear()
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(retries.failed()):
                    await stop.wait()

    async def _serve(self, link: Link, stop: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:

            def task(coro: Coroutine[object, object, None], name: str) -> None:
                group.create_task(coro, name=f"ocpp-{name}")

            task(self._read(link, group), "reader")
            task(link.keepalive(), "keepalive")
            task(self._watch_reconnect(), "reconnect")
            if self._registered:
                # OCPP 1.6 §4.2: a BootNotification after a (re)boot, not after a reconnect;
                # the statuses below tell the CSMS what changed meanwhile.
                self.stats.registration = "Accepted"
            else:
                await self._boot()
                self._registered = True
            await self._send_statuses(only_changed=False)
            task(self._heartbeat(), "heartbeat")
            task(self._status_watch(), "status")
            task(self._drain(), "queue")
            await stop.wait()
            raise _Reconnect("stopping")  # leaves the TaskGroup, cancelling its tasks

    async def _watch_reconnect(self) -> None:
        await self._reconnect.wait()
        raise _Reconnect("reconnecting with the new AuthorizationKey")

    # --- the reader -------------------------------------------------------------------------

    async def _read(self, link: Link, group: asyncio.TaskGroup) -> None:
        while True:
            text = await link.recv()
            try:
                frame = frames.decode(text)
            except OcppFrameError as exc:
                log.warning("OCPP: unreadable message from the CSMS: %s", exc)
                if exc.unique_id is not None:
                    await link.send(
                        frames.encode(
                            frames.CallError(
                                exc.unique_id, frames.ErrorCode.FORMATION_VIOLATION, str(exc)[:200]
                            )
                        )
                    )
                continue
            if isinstance(frame, frames.Call):
                if self.stats.registration == "Rejected":
                    continue  # OCPP 1.6 §4.2.1: not answered while Rejected
                group.create_task(self._answer(link, frame), name=f"ocpp-{frame.action}")
                continue
            pending = self._pending
            if pending is not None and pending[0] == frame.unique_id and not pending[1].done():
                pending[1].set_result(frame)
            else:
                log.warning("OCPP: an answer to no pending call (%s)", frame.unique_id)

    async def _answer(self, link: Link, call: frames.Call) -> None:
        after = None
        try:
            reply, after = await self._reply(call)
        except OcppLinkError:
            raise
        except AgentError as exc:
            # The store refused (or another part failed): the CSMS hears InternalError.
            log.error("OCPP: %s failed: %s", call.action, exc)
            reply = frames.CallError(
                call.unique_id, frames.ErrorCode.INTERNAL_ERROR, str(exc)[:200]
            )
        await link.send(frames.encode(reply))
        if after is None:
            return
        try:
            await after()
        except OcppCallFailed as exc:
            if exc.code is None:
                raise
            log.warning("OCPP: after answering %s: %s", call.action, exc)

    async def _reply(self, call: frames.Call) -> tuple[frames.Frame, Any]:
        uid = call.unique_id
        if call.action in r.UNSUPPORTED:
            return frames.CallError(
                uid, frames.ErrorCode.NOT_SUPPORTED, f"{call.action} is not supported"
            ), None
        if call.action not in r.REQUESTS or self._calls is None:
            return frames.CallError(
                uid, frames.ErrorCode.NOT_IMPLEMENTED, f"unknown action {call.action}"
            ), None
        try:
            request = r.decode(call.action, call.payload)
        except msgspec.ValidationError as exc:
            code = (
                frames.ErrorCode.OCCURENCE_CONSTRAINT_VIOLATION
                if "missing required field" in str(exc)
                else frames.ErrorCode.TYPE_CONSTRAINT_VIOLATION
            )
            return frames.CallError(uid, code, str(exc)[:200]), None
        payload, after = await self._calls.answer(request)
        return frames.CallResult(uid, payload), after

    # --- boot, heartbeat, status ---------------------------------------------------------------

    async def _boot(self) -> None:
        payload = build.boot_notification(
            self.settings.vendor, self.settings.model, __version__, self.charge_point_id
        )
        while True:
            answer = await self.call("BootNotification", payload)
            status = str(answer.get("status"))
            interval = answer.get("interval")
            self.stats.registration = status
            if status == "Accepted":
                if isinstance(interval, int) and interval > 0:
                    self.keys.change("HeartbeatInterval", str(interval))
                if self.stats.connects == 1:
                    return_freed_heap()  # the first connection's setup garbage (RSS budget)
                log.info("OCPP: registered at %s as %s", self.settings.url, self.charge_point_id)
                return
            log.warning("OCPP: BootNotification %s", status)
            wait_s = interval if isinstance(interval, int) and interval > 0 else BOOT_RETRY_S
            await asyncio.sleep(wait_s)

    async def _heartbeat(self) -> None:
        while True:
            interval_s = self.keys.int_value("HeartbeatInterval")
            await asyncio.sleep(interval_s if interval_s > 0 else 3600)
            if interval_s > 0:
                await self.call("Heartbeat", {})

    def _observed(self) -> dict[int, tuple[str, StopReason | None]]:
        return {cid: (c.state.status.value, c.state.fault) for cid, c in self._connectors.items()}

    async def _send_statuses(self, *, only_changed: bool, connector: int | None = None) -> None:
        now = self._observed()
        if not only_changed and connector in (None, 0):
            await self._status(0, ConnectorStatus.AVAILABLE.value, None)
        for cid, (status, fault) in now.items():
            if connector not in (None, 0) and cid != connector:
                continue
            if only_changed and self._told.get(cid) == (status, fault):
                continue
            await self._status(cid, status, fault)
            self._told[cid] = (status, fault)

    async def _status(self, connector: int, status: str, fault: StopReason | None) -> None:
        payload = build.status_notification(connector, status, fault, self._now())
        try:
            await self.call("StatusNotification", payload)
        except OcppCallFailed as exc:
            if exc.code is None:
                raise
            log.warning("OCPP: StatusNotification refused: %s", exc)

    async def _status_watch(self) -> None:
        """Tell the CSMS what changed since it was last told, whenever a connector says its
        status changed. Changes while a StatusNotification is in flight are sent together
        after it (the latest status of each connector, as the CSMS needs)."""
        while True:
            self._changed.clear()
            # A connector freed while a ChangeAvailability was Scheduled is held now.
            await self._apply_availability()
            await self._send_statuses(only_changed=True)
            await self._changed.wait()

    async def _apply_availability(self) -> None:
        """Connectors the CSMS made Inoperative are held once free (a ChangeAvailability
        Scheduled during a session, or stored before a restart)."""
        with translated("availability not read"):
            held = queue.unavailable(self._conn)
        for cid in held:
            port = self._connectors.get(cid)
            if port is not None and port.state.status is ConnectorStatus.AVAILABLE:
                await port.set_available(False)

    # --- transactions --------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Send the queue's messages in order; then sleep until a new one is queued
        (:meth:`_fill` wakes this) or the head's retry time comes."""
        while True:
            self._wake.clear()
            if await self.queue.send_head(self.call):
                continue
            wait_s = self.queue.wait_s()
            if wait_s is None:
                await self._wake.wait()
                continue
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait_s):
                    await self._wake.wait()

    async def _deauthorize(self, session_id: str) -> None:
        for cid, port in self._connectors.items():
            session = port.session
            if session is not None and session.is_open and session.session_id == session_id:
                await handlers.stop(
                    self._connectors,
                    control.Stop(connector=cid, reason=StopReason.DE_AUTHORIZED),
                )
                self.wake()

    # --- what the CSMS asks for ------------------------------------------------------------------

    async def _trigger(self, message: str, connector: int | None) -> None:
        if message == "BootNotification":
            payload = build.boot_notification(
                self.settings.vendor, self.settings.model, __version__, self.charge_point_id
            )
            await self.call("BootNotification", payload)
        elif message == "Heartbeat":
            await self.call("Heartbeat", {})
        elif message == "StatusNotification":
            await self._send_statuses(only_changed=False, connector=connector)
        elif message == "MeterValues":
            await self._meter_values(connector)

    async def _meter_values(self, connector: int | None) -> None:
        """A triggered, non-transaction MeterValues: each connector's latest good reading."""
        measurands = [m for m in (self.keys.value("MeterValuesSampledData") or "").split(",") if m]
        for cid, port in self._connectors.items():
            if connector not in (None, 0) and cid != connector:
                continue
            values = port.last_values
            if not values:
                continue
            energy = values.get(Quantity.ENERGY_IMPORT_WH)
            power = values.get(Quantity.POWER_W)
            if energy is None:
                continue
            sampled = build.sampled_values(round(energy), power, measurands, "Trigger")
            if sampled:
                await self.call(
                    "MeterValues",
                    {
                        "connectorId": cid,
                        "meterValue": [
                            {"timestamp": build.timestamp(self._now()), "sampledValue": sampled}
                        ],
                    },
                )

    async def _reset(self, kind: str) -> None:
        """End the sessions (Reboot) and restart the agent: a dumb contactor has no "hard"
        reset of its own, so both kinds restart the agent cleanly (docs/decisions.md)."""
        log.warning("OCPP: %s Reset asked by the CSMS: ending sessions, restarting", kind)
        for cid, port in self._connectors.items():
            if port.session is not None and port.session.is_open:
                await handlers.stop(
                    self._connectors, control.Stop(connector=cid, reason=StopReason.REBOOT)
                )
        self.wake()
        self._restart()


async def _first(*events: asyncio.Event) -> None:
    """Return when any of ``events`` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
