"""Fleet simulator: N virtual sites against the cloud broker, in a few processes (issue 21).

Each site is one MQTT 5 connection of its own (firmware_sim/mqtt_wire.py: asyncio, no thread per
client) logging in with its own broker credentials, provisioned the way the cloud provisions
a device: :meth:`cloud.devices.broker_auth.DynsecAdmin.set_devices` sends the very commands
of :func:`~cloud.devices.broker_auth.create_device_commands` (client bound to its client id,
role limited to its own topics) to the dynamic-security plugin as the ``cloud-api`` identity.

A site speaks the wire contract of protocols/ as the edge agent does:

- an outbox: every uplink message (telemetry batch, session event, status, command answer)
  gets the next ``seq``, is published QoS 1 and is deleted only when the cloud's application
  ``Ack`` names it; on every (re)connect everything unacked goes out again, in seq order, and
  anything PUBACKed but not acked for ``resend_after_s`` is sent again, and a message the
  broker PUBACKs with 0x10 "no matching subscribers" (dropped) after a short backoff
  (``no_subscribers_resend_s``, as the agent's ``mqtt.no_subscribers_resend_s``); resends
  and what was queued while offline are paced by how fast the cloud acks, with the agent's
  :class:`~protocols.pacing.AckPacer` (``backlog_target_rtt_s``, as its
  ``mqtt.backlog_target_rtt_s``);
- a Last Will (``Status`` online=false, seq 0, retained) registered at CONNECT, and a
  ``Status`` online=true after each connect;
- one telemetry batch every ``1 / rate_hz`` seconds (``readings`` one-second readings);
- charging sessions that start and stop (started, an update every ``update_every_s``,
  stopped), started locally at random or by a ``StartSession`` command;
- an answer (``CommandResult``) to every command on its ``cmd`` topic;
- a fraction of sites going offline once (DISCONNECT with reason 0x04, so the broker sends
  the Will), queueing telemetry meanwhile, and coming back to drain that backlog.

Bounded: at most :data:`MAX_SITES` sites and :data:`MAX_DURATION_S` seconds, loopback only
(the host must be a loopback address). Ingest lag is measured per live telemetry batch from its
first publish to the ``Ack`` that names it; backlog batches are counted but not in the lag.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import ipaddress
import json
import multiprocessing
import os
import queue
import random
import resource
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from firmware_sim.errors import FleetError
from firmware_sim.mqtt_wire import (
    DISCONNECT_WITH_WILL,
    NO_MATCHING_SUBSCRIBERS,
    MqttError,
    MqttLink,
    Will,
)
from protocols.backoff import Backoff
from protocols.enums import (
    CommandStatus,
    ConnectorStatus,
    CredentialKind,
    MessageKind,
    SessionEventType,
    StopReason,
)
from protocols.errors import ProtocolError
from protocols.ids import new_ulid
from protocols.messages import (
    Ack,
    Backlog,
    Command,
    CommandResult,
    ConnectorState,
    CredentialRef,
    Envelope,
    MeterReading,
    SessionEvent,
    StartSession,
    Status,
    StopSession,
    TelemetryBatch,
    encode_message,
    last_will,
    parse_message,
)
from protocols.meters.quantities import Quantity
from protocols.pacing import AckPacer
from protocols.tokens import TokenVerifier, load_public_key
from protocols.topics import URGENT_KINDS, topic

MAX_SITES = 20_000
#: Rows a site lets await the cloud's ack at most (the agent's ``UplinkSettings.max_unacked``).
UNACKED_MAX = 10_000
MAX_DURATION_S = 3_600.0
#: The reconnect backoff of a site (the agent's shape: equal jitter, so a fleet does not
#: retry in lock step after a broker restart).
RECONNECT = Backoff(initial_s=0.5, max_s=10.0)
_KIND = {
    TelemetryBatch: MessageKind.TELEMETRY,
    SessionEvent: MessageKind.SESSION,
    Status: MessageKind.STATUS,
    CommandResult: MessageKind.CMD_RESULT,
}


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """What every site of a run does (picklable: it crosses into the worker processes)."""

    host: str = "127.0.0.1"
    port: int = 1883
    duration_s: float = 30.0
    #: Telemetry batches per second per site.
    rate_hz: float = 1.0
    #: One-second readings per batch (meter m1: power, energy, voltage, current).
    readings: int = 1
    #: Mean seconds between local session starts on an idle site (0: none).
    session_every_s: float = 120.0
    session_s: float = 60.0
    update_every_s: float = 15.0
    #: A ``Status`` every this many seconds while connected, as the agent sends one every
    #: ``mqtt.status_interval_s`` (60 s by default): the cloud counts a device it has not
    #: heard a status from for ``device_offline_after_s`` (180 s) as offline, and refuses
    #: to unlock it.
    status_every_s: float = 60.0
    #: Fraction of sites that go offline once, and for how long.
    offline_fraction: float = 0.1
    offline_s: float = 10.0
    #: Batches of backlog each site queues the moment it loses the broker (reconnect storm:
    #: ``backlog_s * rate_hz``); they carry timestamps in the past, as an agent's outbox does.
    backlog_batches_on_loss: int = 0
    #: After ``duration_s``, how long to wait for the outbox to empty before counting the rest
    #: as lost.
    drain_timeout_s: float = 60.0
    resend_after_s: float = 30.0
    #: A message the broker PUBACKs with "no matching subscribers" (0x10: ingest was not
    #: subscribed, e.g. just after a broker restart, and the broker dropped it) is resent
    #: after 0.5-1 times this, doubling per consecutive 0x10 of that message, at most
    #: ``resend_after_s`` — the agent's behaviour (``mqtt.no_subscribers_resend_s``, 1 s;
    #: edge_agent/sync/window.py). 0: it waits ``resend_after_s`` like any unacked message.
    no_subscribers_resend_s: float = 1.0
    #: Resends and rows queued while offline are paced to keep the cloud's ack within about
    #: this long (at most half of ``resend_after_s``), as the agent paces them
    #: (``mqtt.backlog_target_rtt_s``, 5 s; protocols/pacing.py). 0: not paced — every
    #: backlog goes out as fast as the broker PUBACKs it.
    backlog_target_rtt_s: float = 5.0
    #: Our own QoS 1 in-flight window per connection.
    inflight: int = 100
    keepalive_s: int = 30
    seed: int = 0
    #: The cloud's unlock-token public key (PEM, as a claim hands it to the agent). With it a
    #: site checks a ``StartSession``'s token as the agent does (signature, this device and
    #: connector, validity) and reports the token's ``jti`` as the session's credential,
    #: which is how the cloud ties the session to its driver; without it any token is
    #: accepted and a hash of it reported.
    token_public_key_pem: str | None = None

    def __post_init__(self) -> None:
        if not ipaddress.ip_address(self.host).is_loopback:
            raise ValueError(f"the fleet simulator runs on loopback only, not {self.host}")
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise ValueError(f"duration_s must be in (0, {MAX_DURATION_S}]")
        if not 0 < self.rate_hz <= 10:
            raise ValueError("rate_hz must be in (0, 10]")
        if not 0 <= self.offline_fraction <= 1:
            raise ValueError("offline_fraction must be in [0, 1]")
        if self.status_every_s <= 0:
            raise ValueError("status_every_s must be positive")
        if self.no_subscribers_resend_s < 0:
            raise ValueError("no_subscribers_resend_s must not be negative")
        if self.backlog_target_rtt_s < 0:
            raise ValueError("backlog_target_rtt_s must not be negative")


@dataclass
class SiteReport:
    """What one site did; :func:`merge` sums them for the fleet."""

    sites: int = 0
    telemetry_sent: int = 0
    telemetry_acked: int = 0
    messages_sent: int = 0
    messages_acked: int = 0
    #: Outbox rows never acked by the end of the drain: lost.
    unacked: int = 0
    sessions_started: int = 0
    sessions_stopped: int = 0
    commands_answered: int = 0
    connects: int = 0
    connect_failures: int = 0
    went_offline: int = 0
    publishes: int = 0
    #: PUBACKs with reason 0x10, "no matching subscribers": messages the broker dropped.
    no_subscribers: int = 0
    #: Live telemetry batches' first publish → application ack, ms.
    lags_ms: list[float] = field(default_factory=list)
    #: Wall-clock time (time.time()) at which each site had its whole broker-loss backlog
    #: acked (reconnect storm), one entry per loss.
    drained_at: list[float] = field(default_factory=list)
    #: Telemetry batch seqs sent, per device (the test compares them with the database).
    telemetry_seqs: dict[str, list[int]] = field(default_factory=dict)


def merge(reports: list[SiteReport]) -> SiteReport:
    total = SiteReport()
    for r in reports:
        for name in (
            "sites",
            "telemetry_sent",
            "telemetry_acked",
            "messages_sent",
            "messages_acked",
            "unacked",
            "sessions_started",
            "sessions_stopped",
            "commands_answered",
            "connects",
            "connect_failures",
            "went_offline",
            "publishes",
            "no_subscribers",
        ):
            setattr(total, name, getattr(total, name) + getattr(r, name))
        total.lags_ms.extend(r.lags_ms)
        total.drained_at.extend(r.drained_at)
        total.telemetry_seqs.update(r.telemetry_seqs)
    return total


@dataclass(slots=True)
class _Row:
    topic: str
    payload: bytes
    telemetry: bool
    #: Sent while connected and not from a backlog: counts in the lag.
    live: bool
    #: Queued when the broker went away (the reconnect storm's backlog).
    backlog: bool = False
    #: A session event or command result: resent unpaced, as the agent's urgent lane.
    urgent: bool = False
    #: The connection on which it counts against the pacer (a resent or backlog row).
    paced_gen: int = -1
    #: The connection on which its ack timed out: its ack may then be the first copy's, so
    #: its round trip says nothing (Karn's rule, as the agent's window).
    late_gen: int = -1
    first_sent: float | None = None
    #: The connection generation it was last published on, and when.
    sent_gen: int = -1
    sent_at: float = 0.0


@dataclass(slots=True)
class _Session:
    session_id: str
    credential: CredentialRef
    started_at: datetime
    meter_start_wh: int
    event_seq: int = 1
    ends_at: float = 0.0
    next_update: float = 0.0


class Site:
    """One virtual site: its connection, outbox, meter and (one) connector."""

    def __init__(self, device_id: str, password: str, config: FleetConfig, rng: random.Random):
        self.device_id = device_id
        self.password = password
        self.config = config
        self.rng = rng
        self.seq = 0
        self.outbox: dict[int, _Row] = {}
        self.inflight: dict[int, int] = {}  # packet id -> seq
        #: Consecutive 0x10 PUBACKs per seq (the resend backoff's attempt), as the agent's
        #: UplinkWindow keeps them: ended by a routed PUBACK, an ack or a new connection.
        self.drops: dict[int, int] = {}
        self._drop_backoff = (
            Backoff(initial_s=config.no_subscribers_resend_s, max_s=config.resend_after_s)
            if config.no_subscribers_resend_s > 0
            else None
        )
        self.gen = 0
        #: Paced rows published on this connection and not acked yet (the pacer's count: live
        #: and urgent rows are not paced, so they do not take its room).
        self.awaiting = 0
        self.pacer = AckPacer.for_timeout(
            config.backlog_target_rtt_s, config.resend_after_s, maximum=UNACKED_MAX
        )
        self.link: MqttLink | None = None
        self.online = asyncio.Event()
        self.wanted_online = True
        self.energy_wh = 10_000
        self.session: _Session | None = None
        self.report = SiteReport(sites=1)
        self.lost_broker_at: float | None = None
        self.backlog_left = 0
        self._wake = asyncio.Event()
        #: The pump's last pass left rows behind for want of room (the in-flight window or
        #: the pacer's): only then does a PUBACK or an ack give it something to do. Waking
        #: it for every one of them was two task steps per message, for nothing.
        self._held = False
        #: Set when the connection closes or the site wants to be online again: what
        #: :meth:`connect_loop` waits for instead of looking five times a second, which for
        #: thousands of sites was CPU taken from the cloud on the same box (docs/fleet.md).
        self._attention = asyncio.Event()
        self._acks = topic(device_id, MessageKind.ACK)
        self._cmds = topic(device_id, MessageKind.CMD)
        pem = config.token_public_key_pem
        self._verifier = None if pem is None else TokenVerifier([load_public_key(pem.encode())])

    # --- outbox ------------------------------------------------------------------------------

    def _queue(self, make: Any, *, live: bool = True, outage: bool = False, **fields: Any) -> None:
        self.seq += 1
        message: Envelope = make(
            msg_id=new_ulid(),
            device_id=self.device_id,
            seq=self.seq,
            clock_synced=True,
            **fields,
        )
        kind = _KIND[make]
        is_telemetry = kind is MessageKind.TELEMETRY
        self.outbox[self.seq] = _Row(
            topic(self.device_id, kind),
            encode_message(message),
            is_telemetry,
            live,
            outage,
            urgent=kind in URGENT_KINDS,
        )
        self.report.messages_sent += 1
        if is_telemetry:
            self.report.telemetry_sent += 1
            self.report.telemetry_seqs.setdefault(self.device_id, []).append(self.seq)
        self._wake.set()

    def _on_ack(self, payload: bytes) -> None:
        try:
            ack = parse_message(MessageKind.ACK, payload)
        except ProtocolError:
            return
        assert isinstance(ack, Ack)
        now = time.monotonic()
        for first, last in ack.ranges:
            if last - first < len(self.outbox):
                covered = [s for s in range(first, last + 1) if s in self.outbox]
            else:
                covered = [s for s in self.outbox if first <= s <= last]
            for seq in covered:
                row = self.outbox.pop(seq)
                self.drops.pop(seq, None)
                if row.paced_gen == self.gen:
                    self.awaiting -= 1
                sampled = row.sent_gen == self.gen and row.late_gen != self.gen
                if self.pacer is not None and sampled:
                    self.pacer.acked(now - row.sent_at, now)
                self.report.messages_acked += 1
                if row.backlog:
                    self.backlog_left -= 1
                    if not self.backlog_left:
                        self.report.drained_at.append(time.time())
                if row.telemetry:
                    self.report.telemetry_acked += 1
                    if row.live and row.first_sent is not None:
                        self.report.lags_ms.append((now - row.first_sent) * 1000)
        if self._held:
            self._wake.set()

    def _on_puback(self, packet_id: int, reason: int) -> None:
        seq = self.inflight.pop(packet_id, None)
        if reason == NO_MATCHING_SUBSCRIBERS:
            self.report.no_subscribers += 1
            row = None if seq is None else self.outbox.get(seq)
            if row is not None and seq is not None and self._drop_backoff is not None:
                attempt = self.drops.get(seq, 0)
                self.drops[seq] = attempt + 1
                delay_s = self._drop_backoff.delay_s(attempt, self.rng.random)
                # Due for a resend once delay_s has passed (pump resends what is stale),
                # and the pump woken just after (a timer may fire a clock tick early, and
                # a pump woken before the row is stale would leave it for the next tick).
                row.sent_at = time.monotonic() - self.config.resend_after_s + delay_s
                asyncio.get_running_loop().call_later(delay_s + 0.01, self._wake.set)
        elif seq is not None and self.drops:
            self.drops.pop(seq, None)  # routed: a later drop starts the backoff over
        if self._held:
            self._wake.set()

    async def pump(self) -> None:
        """Publish what the outbox holds that this connection has not carried yet (and what
        stayed unacked too long), within the in-flight window."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            link = self.link
            if link is None or link.closed:
                continue
            now = time.monotonic()
            pacer = self.pacer
            self._held = False
            for seq, row in list(self.outbox.items()):
                if len(self.inflight) >= self.config.inflight:
                    self._held = True
                    break
                stale = now - row.sent_at > self.config.resend_after_s
                if row.sent_gen == self.gen and not stale:
                    continue
                # As the agent's lanes: resends, what an earlier connection carried and what
                # was queued offline wait for the pacer's room; live rows and session events
                # or command results never do. (A row never sent has sent_at 0: "stale".)
                resend = row.sent_gen == self.gen
                earlier = row.sent_gen >= 0 or not row.live
                if pacer is not None:
                    if resend and seq not in self.drops:  # a timeout (a drop is not one)
                        pacer.timed_out(now, self.config.resend_after_s)
                        row.late_gen = self.gen
                    if resend and row.paced_gen == self.gen:
                        # Due again: it leaves the pacer's count, as a timed-out row leaves
                        # the agent's window, and waits for room like any paced row.
                        row.paced_gen = -1
                        self.awaiting -= 1
                    if not row.urgent and (resend or earlier):
                        if pacer.room(self.awaiting) <= 0:
                            self._held = True
                            continue
                        row.paced_gen = self.gen
                        self.awaiting += 1
                packet_id = link.next_packet_id()
                self.inflight[packet_id] = seq
                link.publish(row.topic, row.payload, packet_id)
                self.report.publishes += 1
                row.sent_gen, row.sent_at = self.gen, now
                if row.first_sent is None:
                    row.first_sent = now
            await link.drain()

    # --- connection --------------------------------------------------------------------------

    def _on_message(self, name: str, payload: bytes) -> None:
        if name == self._acks:
            self._on_ack(payload)
        elif name == self._cmds:
            self._on_command(payload)

    def _on_close(self) -> None:
        self.online.clear()
        self.inflight.clear()
        self._attention.set()
        if self.wanted_online and self.lost_broker_at is None:
            # The broker went away under us: an agent keeps metering into its outbox.
            self.lost_broker_at = time.monotonic()
            self._fill_backlog()

    def _fill_backlog(self) -> None:
        count = self.config.backlog_batches_on_loss
        if not count:
            return
        now = datetime.now(UTC)
        for i in range(count):
            ts = now - timedelta(seconds=(count - i) / self.config.rate_hz)
            self._telemetry(ts, live=False, backlog=True)
        self.backlog_left += count

    async def connect_loop(self, stop_at: float) -> None:
        """Keep the site connected while it wants to be (reconnecting with backoff)."""
        attempt = 0
        while (left_s := stop_at - time.monotonic()) > 0:
            # Cleared before the state is looked at: a close after this line sets it again.
            self._attention.clear()
            if self.wanted_online and (self.link is None or self.link.closed):
                try:
                    await self._connect()
                    attempt = 0
                except (OSError, MqttError, TimeoutError):
                    self.report.connect_failures += 1
                    await asyncio.sleep(RECONNECT.delay_s(attempt, self.rng.random))
                    attempt += 1
                continue
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for drops a cancel that arrives
                # as the wait completes (close() sets the event, then run_sites cancels).
                async with asyncio.timeout(left_s):
                    await self._attention.wait()
            except TimeoutError:
                return

    async def _connect(self) -> None:
        will = last_will(self.device_id, ts=datetime.now(UTC), clock_synced=True)
        link = MqttLink(self._on_message, self._on_puback, self._on_close)
        await link.connect(
            self.config.host,
            self.config.port,
            client_id=self.device_id,
            username=self.device_id,
            password=self.password,
            will=Will(topic(self.device_id, MessageKind.STATUS), encode_message(will)),
            keepalive_s=self.config.keepalive_s,
        )
        link.subscribe([self._acks, self._cmds])
        self.gen += 1
        self.awaiting = 0
        if self.pacer is not None:
            self.pacer.restart()
        self.drops.clear()
        self.link = link
        self.lost_broker_at = None
        self.report.connects += 1
        self.online.set()
        self._status()

    def _status(self) -> None:
        self._queue(
            Status,
            ts=datetime.now(UTC),
            online=True,
            agent_version="fleet-sim",
            connectors=[self._connector_state()],
            backlog=Backlog(rows=len(self.outbox)),
        )

    def _connector_state(self) -> ConnectorState:
        if self.session is None:
            return ConnectorState(connector=1, status=ConnectorStatus.AVAILABLE)
        return ConnectorState(
            connector=1, status=ConnectorStatus.CHARGING, session_id=self.session.session_id
        )

    async def go_offline(self, seconds: float) -> None:
        """Drop off the broker as a site losing its uplink does (the Will goes out), keep
        metering into the outbox, come back after ``seconds``."""
        await self.online.wait()
        self.wanted_online = False
        self.report.went_offline += 1
        if self.link is not None:
            self.link.disconnect(DISCONNECT_WITH_WILL)
        await asyncio.sleep(seconds)
        self.wanted_online = True
        self._attention.set()

    async def close(self) -> None:
        self.wanted_online = False
        if self.link is not None and not self.link.closed:
            self.link.disconnect()

    # --- the site's own behaviour --------------------------------------------------------------

    def _telemetry(self, ts: datetime, *, live: bool, backlog: bool = False) -> None:
        power = 7200.0 if self.session is not None else 0.0
        readings = []
        n = self.config.readings
        for i in range(n):
            self.energy_wh += int(power / 3600)
            readings.append(
                MeterReading(
                    meter_id="m1",
                    ts=ts - timedelta(seconds=n - 1 - i),
                    clock_synced=True,
                    values={
                        Quantity.POWER_W: power,
                        Quantity.ENERGY_IMPORT_WH: float(self.energy_wh),
                        Quantity.VOLTAGE_L1_V: 230.0 + self.rng.uniform(-3, 3),
                        Quantity.CURRENT_L1_A: power / 230.0,
                    },
                )
            )
        self._queue(TelemetryBatch, ts=ts, readings=readings, live=live, outage=backlog)

    def _session_event(self, event: SessionEventType, *, reason: StopReason | None = None) -> None:
        s = self.session
        assert s is not None
        stopping = event is SessionEventType.STOPPED
        now = datetime.now(UTC)
        self._queue(
            SessionEvent,
            ts=now,
            session_id=s.session_id,
            event=event,
            event_seq=s.event_seq,
            connector=1,
            offline=not self.online.is_set(),
            credential=s.credential,
            started_at=s.started_at,
            meter_start_wh=s.meter_start_wh,
            meter_wh=self.energy_wh,
            energy_wh=self.energy_wh - s.meter_start_wh,
            power_w=None if stopping else 7200.0,
            stopped_at=now if stopping else None,
            stop_reason=reason,
        )
        s.event_seq += 1

    def _start_session(self, credential: CredentialRef) -> str:
        now = time.monotonic()
        self.session = _Session(
            session_id=new_ulid(),
            credential=credential,
            started_at=datetime.now(UTC),
            meter_start_wh=self.energy_wh,
            ends_at=now + self.config.session_s,
            next_update=now + self.config.update_every_s,
        )
        self.report.sessions_started += 1
        self._session_event(SessionEventType.STARTED)
        return self.session.session_id

    def _stop_session(self, reason: StopReason) -> None:
        self._session_event(SessionEventType.STOPPED, reason=reason)
        self.session = None
        self.report.sessions_stopped += 1

    def _on_command(self, payload: bytes) -> None:
        try:
            command = parse_message(MessageKind.CMD, payload)
        except ProtocolError:
            return
        assert isinstance(command, Command)
        action = command.action
        status, session_id, detail = CommandStatus.ACCEPTED, None, ""
        if command.expires_at < datetime.now(UTC):
            status = CommandStatus.EXPIRED
        elif isinstance(action, StartSession):
            if self.session is not None:
                status, detail = CommandStatus.REJECTED, "connector busy"
            elif self._verifier is None:
                ref = hashlib.sha256(action.token.encode()).hexdigest()
                session_id = self._start_session(CredentialRef(kind=CredentialKind.TOKEN, ref=ref))
            else:
                check = self._verifier.verify(
                    action.token,
                    charger_id=self.device_id,
                    connector=action.connector,
                    now=datetime.now(UTC),
                )
                if check.accepted and check.claims is not None:
                    credential = CredentialRef(kind=CredentialKind.TOKEN, ref=check.claims.jti)
                    session_id = self._start_session(credential)
                else:
                    status, detail = CommandStatus.REJECTED, check.reason
        elif isinstance(action, StopSession):
            if self.session is None or self.session.session_id != action.session_id:
                status, detail = CommandStatus.REJECTED, "no such session"
            else:
                self._stop_session(action.reason)
        # Every other command: accepted with nothing to do (the simulator has no auth list,
        # config or relay), as an answer must still come back.
        self._queue(
            CommandResult,
            ts=datetime.now(UTC),
            cmd_id=command.cmd_id,
            status=status,
            session_id=session_id,
            detail=detail,
        )
        self.report.commands_answered += 1

    async def behave(self, stop_at: float, stop: asyncio.Event | None = None) -> None:
        """Meter, batch and charge until ``stop_at`` (monotonic) or ``stop`` is set."""
        period = 1 / self.config.rate_hz
        next_tick = time.monotonic() + self.rng.uniform(0, period)
        next_status = time.monotonic() + self.config.status_every_s
        while True:
            await asyncio.sleep(max(0.0, next_tick - time.monotonic()))
            now = time.monotonic()
            if now >= stop_at or (stop is not None and stop.is_set()):
                return
            next_tick += period
            self._telemetry(datetime.now(UTC), live=self.online.is_set())
            if now >= next_status:
                next_status = now + self.config.status_every_s
                if self.online.is_set():
                    self._status()
            s = self.session
            if s is not None and now >= s.ends_at:
                self._stop_session(StopReason.EV_DISCONNECTED)
            elif s is not None and now >= s.next_update:
                s.next_update = now + self.config.update_every_s
                self._session_event(SessionEventType.UPDATED)
            elif (
                s is None
                and self.config.session_every_s > 0
                and self.rng.random() < period / self.config.session_every_s
            ):
                tag = hashlib.sha256(f"{self.device_id}-{self.seq}".encode()).hexdigest()
                self._start_session(CredentialRef(kind=CredentialKind.ID_TAG, ref=tag))

    async def drain(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.outbox and time.monotonic() < deadline:
            self._wake.set()
            await asyncio.sleep(0.1)
        self.report.unacked = len(self.outbox)


async def run_sites(
    sites: list[tuple[str, str]],
    config: FleetConfig,
    *,
    start_at: float,
    stop: asyncio.Event | None = None,
    on_online: Callable[[], None] | None = None,
) -> SiteReport:
    """Run ``sites`` (id, password) in this event loop from wall-clock ``start_at`` for
    ``config.duration_s`` (or until ``stop`` is set, if sooner), then drain and disconnect.
    ``on_online``: called once every site is connected, as they begin metering."""
    # Reproducible behaviour per slice, not secrets.
    rng = random.Random(f"{config.seed}-{sites[0][0] if sites else ''}")  # noqa: S311
    await asyncio.sleep(max(0.0, start_at - time.time()))
    stop_at = time.monotonic() + config.duration_s
    fleet = [Site(d, p, config, random.Random(rng.random())) for d, p in sites]  # noqa: S311
    tasks: list[asyncio.Task[None]] = []
    for site in fleet:
        tasks.append(asyncio.create_task(site.pump()))
        tasks.append(asyncio.create_task(site.connect_loop(stop_at + config.drain_timeout_s)))
    await asyncio.gather(*(s.online.wait() for s in fleet))
    if on_online is not None:
        on_online()
    behaviour = [asyncio.create_task(s.behave(stop_at, stop)) for s in fleet]
    offline = [
        asyncio.create_task(_offline_later(s, config, rng.uniform(0.1, 0.5) * config.duration_s))
        for s in fleet
        if rng.random() < config.offline_fraction
    ]
    await asyncio.gather(*behaviour, *offline)
    await asyncio.gather(*(s.drain(config.drain_timeout_s) for s in fleet))
    for site in fleet:
        await site.close()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return merge([s.report for s in fleet])


async def _offline_later(site: Site, config: FleetConfig, after_s: float) -> None:
    await asyncio.sleep(after_s)
    await site.go_offline(config.offline_s)


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _process_main(
    sites: list[tuple[str, str]], config: FleetConfig, start_at: float, out: Any, online: Any
) -> None:
    _raise_fd_limit()
    _exit_with_parent()
    report = asyncio.run(run_sites(sites, config, start_at=start_at, on_online=online.set))
    out.put(asdict(report))


def _exit_with_parent() -> None:
    """End this worker process when the process that started it is gone (killed, say): an
    orphaned simulator would otherwise keep its sites reconnecting for the rest of its run
    (up to an hour), taking CPU from whatever is measured next on the box."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def site_ids(count: int, prefix: str = "fleet") -> list[str]:
    if not 0 < count <= MAX_SITES:
        raise ValueError(f"sites must be in 1..{MAX_SITES}")
    return [f"{prefix}-{i:05d}" for i in range(count)]


def provision(admin: Any, device_ids: list[str], *, chunk: int = 250) -> dict[str, str]:
    """Give every site fresh broker credentials through the cloud's own dynamic-security
    path (:class:`~cloud.devices.broker_auth.DynsecAdmin`); return id -> password."""
    from cloud.devices.broker_auth import new_password  # noqa: PLC0415

    passwords = {d: new_password() for d in device_ids}
    items = list(passwords.items())
    for i in range(0, len(items), chunk):
        admin.set_devices(dict(items[i : i + chunk]))
    return passwords


def run_fleet(
    passwords: dict[str, str],
    config: FleetConfig,
    *,
    processes: int = 2,
    start_in_s: float = 1.0,
    online: threading.Event | None = None,
) -> SiteReport:
    """Run the provisioned sites in ``processes`` worker processes; return the merged report.
    ``online`` is set (within a second) once every site is connected and metering: what a
    caller measuring the running fleet waits for, past the ramp of thousands connecting."""
    ctx = multiprocessing.get_context("spawn")
    out = ctx.Queue()
    items = sorted(passwords.items())
    processes = max(1, min(processes, len(items)))
    start_at = time.time() + start_in_s + 0.5 * processes  # spawn takes a moment each
    ready = [ctx.Event() for _ in range(processes)]
    workers = [
        ctx.Process(
            target=_process_main, args=(items[i::processes], config, start_at, out, ready[i])
        )
        for i in range(processes)
    ]
    for w in workers:
        w.start()
    limit = start_in_s + processes + config.duration_s + 2 * config.drain_timeout_s + 60
    deadline = time.monotonic() + limit
    reports: list[SiteReport] = []
    try:
        while len(reports) < len(workers):
            if online is not None and all(r.is_set() for r in ready):
                online.set()
            # Polled, not one long get: a worker that dies without its report (killed, or
            # the Ctrl-C that reached the whole process group) ends the run within a second
            # or two instead of holding this thread — and the caller's executor — for the
            # whole limit (over an hour for the full bench's storm).
            try:
                reports.append(SiteReport(**out.get(timeout=1.0)))
                continue
            except queue.Empty:
                pass
            if not any(w.is_alive() for w in workers):
                try:  # a report put just before its process ended is in the pipe already
                    reports.append(SiteReport(**out.get(timeout=1.0)))
                    continue
                except queue.Empty:
                    codes = [w.exitcode for w in workers]
                    raise FleetError(
                        f"{len(workers) - len(reports)} simulator process(es) ended without "
                        f"a report (exit codes {codes})"
                    ) from None
            if time.monotonic() > deadline:
                raise FleetError(f"no report from the simulator processes within {limit:.0f} s")
    finally:
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.terminate()
    return merge(reports)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--port", type=int, required=True, help="the cloud broker's port")
    parser.add_argument("--sites", type=int, default=10)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--duration-s", type=float, default=30.0)
    parser.add_argument("--rate-hz", type=float, default=1.0)
    parser.add_argument("--offline-fraction", type=float, default=0.1)
    parser.add_argument(
        "--admin-password", required=True, help="the broker's cloud-api password (provisioning)"
    )
    args = parser.parse_args()
    from cloud.broker import BrokerLogin  # noqa: PLC0415
    from cloud.devices.broker_auth import DynsecAdmin  # noqa: PLC0415

    admin = DynsecAdmin(BrokerLogin("127.0.0.1", args.port, "cloud-api", args.admin_password))
    passwords = provision(admin, site_ids(args.sites, f"fleet-{secrets.token_hex(2)}"))
    config = FleetConfig(
        port=args.port,
        duration_s=args.duration_s,
        rate_hz=args.rate_hz,
        offline_fraction=args.offline_fraction,
    )
    report = run_fleet(passwords, config, processes=args.processes)
    summary = asdict(report)
    summary.pop("telemetry_seqs")
    lags = sorted(summary.pop("lags_ms"))
    summary.pop("drained_at")
    summary["lag_p99_ms"] = lags[int(0.99 * (len(lags) - 1))] if lags else None
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
