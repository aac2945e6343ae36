"""Fakes for testing code that uses the edge agent -- and the agent's own tests.

Production code never imports this module (``tests/test_testing_modules.py`` fails if a
module of ``protocols``, ``edge_agent``, ``cloud`` or ``firmware_sim`` other than a
``testing`` module does). It offers:

* :class:`FakeClock` -- monotonic seconds that move only when the test says so, and the wall
  time that moves with them (:meth:`FakeClock.clocks` for a connector controller);
* :class:`FakeRelay` -- a relay held in memory that records commands, can fail and can weld
  (the ``driver = "fake"`` relay of the agent's configuration, defined beside the real
  drivers in ``edge_agent/relay/drivers.py``);
* :class:`ModbusPeer` -- a real Modbus TCP peer on loopback (pymodbus's own server) serving
  the register images of :mod:`protocols.meters` maps, with relay coils; and
  :class:`ChargingMeter`, which advances a meter's import register while a relay coil is
  closed;
* :class:`Acker` -- a stand-in for cloud ingest on a real broker that acks the agent's uplink;
* :class:`RecordingHandler` -- a downlink command handler that records and accepts;
* :func:`close_threaded` and :func:`close_sockets` -- stop a paho client run by
  ``loop_start()`` without leaving its sockets to the garbage collector.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pymodbus import datastore
from pymodbus.datastore import ModbusDeviceContext
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer

from edge_agent.relay.drivers import FakeRelay
from edge_agent.sessions.controller import Clocks
from edge_agent.sync.downlink import CommandOutcome
from protocols.enums import CommandStatus, MessageKind
from protocols.ids import new_ulid
from protocols.messages import Ack, Command, Envelope, ack_ranges, encode_message, parse_for_topic
from protocols.meters import Quantity, encode_registers, load_map
from protocols.topics import UPLINK_KINDS, ingest_filter, parse_topic, topic

__all__ = [
    "Acker",
    "ChargingMeter",
    "FakeClock",
    "FakeRelay",
    "ModbusPeer",
    "Received",
    "RecordingHandler",
    "close_sockets",
    "close_threaded",
]

#: The wall time a :class:`FakeClock` reads at its start unless told otherwise.
WALL_AT_START = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


class FakeClock:
    """Monotonic seconds that move only when told to: call it for the reading (what
    ``MeterPoller(monotonic=)``, ``AgentHealth(monotonic=)`` and the OCPP queue's ``mono``
    take). ``now`` may be set or moved directly; :meth:`advance` refuses to go back.
    """

    def __init__(self, start_s: float = 1000.0, *, wall_at_start: datetime = WALL_AT_START) -> None:
        self.now = start_s
        self._start_s = start_s
        self._wall_at_start = wall_at_start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self.now += seconds

    def wall(self) -> datetime:
        """The wall time: ``wall_at_start`` plus the seconds this clock has moved."""
        return self._wall_at_start + timedelta(seconds=self.now - self._start_s)

    def clocks(self, *, synced: bool = True, offline: bool = False) -> Clocks:
        """A connector controller's time sources, all reading this clock."""
        return Clocks(wall=self.wall, mono=self, synced=lambda: synced, offline=lambda: offline)


class RecordingHandler:
    """A downlink command handler that records what it was asked to do and accepts it."""

    def __init__(self) -> None:
        self.executed: list[Command] = []

    async def execute(self, command: Command) -> CommandOutcome:
        self.executed.append(command)
        return CommandOutcome(CommandStatus.ACCEPTED, "done")


# pymodbus's datastore and server classes are not annotated; used through Any, as data.
_store: Any = datastore
ModbusSparseDataBlock: Any = _store.ModbusSparseDataBlock
ModbusServerContext: Any = _store.ModbusServerContext


def close_sockets(client: paho.Client) -> None:
    """Close a stopped paho client's sockets: its connection and its wake-up socket pair.

    paho 2.2 opens the pair (two loopback TCP sockets) in ``loop_start()`` and closes it only
    when the client object is finalised; there is no public call for it. Clients in tests sit
    in reference cycles (their callbacks are bound methods of their owners), so the cycle
    collector finalises them, in no set order: a socket finalised before its client warns
    "unclosed socket", and pytest fails whichever later test ran that collection (CI: an
    agent's startup ``gc.collect()``, ``edge_agent/memory.py``). Call after ``loop_stop()``.
    """
    client._reset_sockets()


def close_threaded(client: paho.Client) -> None:
    """DISCONNECT, stop the network thread, close the sockets (:func:`close_sockets`)."""
    client.disconnect()
    client.loop_stop()
    close_sockets(client)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ModbusPeer:
    """``async with ModbusPeer({1: ("sdm630", values)}) as peer:`` then poll 127.0.0.1:peer.port.

    Units listed in ``coil_units`` also hold coil 0 (a Modbus relay module).
    """

    def __init__(
        self,
        meters: Mapping[int, tuple[str, Mapping[Quantity, float | None]]],
        *,
        coil_units: tuple[int, ...] = (),
    ) -> None:
        self.port = _free_port()
        self.requests = 0
        self._models = {unit: model for unit, (model, _) in meters.items()}
        self._devices: dict[int, ModbusDeviceContext] = {}
        for unit, (model, values) in meters.items():
            self._devices[unit] = self._device(model, values)
        for unit in coil_units:
            # A relay module has no registers: reading them answers exception 2.
            device = self._devices.get(unit) or ModbusDeviceContext(
                ir=ModbusSparseDataBlock({60000: 0}), hr=ModbusSparseDataBlock({60000: 0})
            )
            # pymodbus device contexts add 1 to every address (datastore/context.py).
            device.store["c"] = ModbusSparseDataBlock({1: [False]})
            self._devices[unit] = device
        self._silenced: dict[int, ModbusDeviceContext] = {}
        self.context: Any = ModbusServerContext(devices=dict(self._devices), single=False)
        self._server: Any = ModbusTcpServer(
            self.context,
            address=("127.0.0.1", self.port),
            ignore_missing_devices=True,
            trace_pdu=self._count,
        )

    def _count(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if not sending:
            self.requests += 1
        return pdu

    @staticmethod
    def _device(model: str, values: Mapping[Quantity, float | None]) -> ModbusDeviceContext:
        register_map = load_map(model)
        image = encode_registers(register_map, values)
        block = ModbusSparseDataBlock({addr + 1: word for addr, word in image.items()})
        if register_map.function.code == 4:
            return ModbusDeviceContext(ir=block)
        return ModbusDeviceContext(hr=block)

    def set_values(self, unit: int, values: Mapping[Quantity, float | None]) -> None:
        register_map = load_map(self._models[unit])
        table = "i" if register_map.function.code == 4 else "h"
        store: Any = self._devices[unit].store[table]
        for addr, word in encode_registers(register_map, values).items():
            store.values[addr + 1] = word

    def coil(self, unit: int) -> bool:
        store: Any = self._devices[unit].store["c"]
        return bool(store.values[1])

    def set_coil(self, unit: int, closed: bool) -> None:
        store: Any = self._devices[unit].store["c"]
        store.values[1] = closed

    def silence(self, unit: int) -> None:
        self._silenced[unit] = self._devices[unit]
        del self.context[unit]

    def revive(self, unit: int) -> None:
        self.context[unit] = self._silenced.pop(unit)

    async def __aenter__(self) -> Self:
        await self._server.serve_forever(background=True)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._server.shutdown()


class ChargingMeter:
    """Physics for a peer: a meter whose import register advances while a relay coil is
    closed, in whole Wh (so float32 kWh decodes back to the same integer)."""

    def __init__(
        self,
        peer: ModbusPeer,
        *,
        meter_unit: int,
        relay_unit: int,
        energy_wh: int = 50_000,
        wh_per_tick: int = 1,
        tick_s: float = 0.5,
        power_w: float = 7200.0,
    ) -> None:
        self.peer = peer
        self.meter_unit = meter_unit
        self.relay_unit = relay_unit
        self.energy_wh = energy_wh
        self.wh_per_tick = wh_per_tick
        self.tick_s = tick_s
        self.power_w = power_w
        self.current_a = power_w / 230.0
        self.publish()

    def publish(self) -> None:
        flowing = self.peer.coil(self.relay_unit)
        self.peer.set_values(
            self.meter_unit,
            {
                Quantity.ENERGY_IMPORT_WH: float(self.energy_wh),
                Quantity.POWER_W: self.power_w if flowing else 0.0,
                Quantity.CURRENT_L1_A: self.current_a if flowing else 0.0,
                Quantity.VOLTAGE_L1_V: 230.0,
            },
        )

    async def run(self) -> None:
        """Advance the register while the coil is closed; run it in the test's TaskGroup."""
        while True:
            await asyncio.sleep(self.tick_s)
            if self.peer.coil(self.relay_unit):
                self.energy_wh += self.wh_per_tick
            self.publish()


@dataclass
class Received:
    by_seq: dict[int, Envelope] = field(default_factory=dict)
    deliveries: int = 0
    order: list[int] = field(default_factory=list)
    first_at: dict[int, float] = field(default_factory=dict)


class Acker:
    """A stand-in for cloud ingest: receives the uplink and acks it.

    It speaks the real protocol (:class:`~protocols.messages.Ack` on ``cm/v1/d/{id}/ack``,
    after it has "committed" -- here, recorded in memory) and connects to the broker on
    127.0.0.1:``port`` as the given identity (``cloud-ingest``), so the broker's ACL applies
    to it. ``drop_acks`` makes it lose acks on purpose; ``validate=False`` reads only the
    envelope (benchmarks).
    """

    def __init__(
        self,
        port: int,
        *,
        username: str,
        password: str,
        ack_every_s: float = 0.02,
        validate: bool = True,
    ) -> None:
        #: Parse every message with protocols (tests); benchmarks read only the envelope.
        self.validate = validate
        self.received: dict[str, Received] = defaultdict(Received)
        self.statuses: list[Envelope] = []
        self.drop_acks = False
        self._pending: dict[str, set[int]] = defaultdict(set)
        self._lock = threading.Lock()
        self._ack_seq = 0
        #: The ack loop has taken pending seqs and not yet handed all their acks to paho.
        self._acking = False
        #: Acks published and not yet PUBACKed by the broker (for :meth:`settle`).
        self._ack_infos: list[paho.MQTTMessageInfo] = []
        self._stop = threading.Event()
        self._ack_every_s = ack_every_s
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=f"acker-{new_ulid()}", protocol=paho.MQTTv5
        )
        self._client.username_pw_set(username, password)
        self._client.on_message = self._message
        self._client.on_connect = self._connected
        self._client.on_subscribe = self._subscribed_to
        self._subscribed = threading.Event()
        self._client.reconnect_delay_set(1, 2)
        # A persistent session, like the real ingest: messages published while the acker is
        # reconnecting wait for it in the broker.
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self._client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self._client.loop_start()
        # Ready means subscribed: a benchmark that starts publishing the moment the stand-in
        # is up lost its first messages to the SUBSCRIBE still in flight (and then waited
        # forever for them in settle()).
        if not self._subscribed.wait(10):
            close_threaded(self._client)
            raise RuntimeError("acker: the broker did not acknowledge our subscriptions")
        self._thread = threading.Thread(target=self._ack_loop, name="acker", daemon=True)
        self._thread.start()

    def _connected(self, client: paho.Client, *args: object) -> None:
        # Subscribe on every (re)connect: the broker may have been restarted without our session.
        client.subscribe([(ingest_filter(kind, shared=False), 1) for kind in sorted(UPLINK_KINDS)])

    def _subscribed_to(self, *_: object) -> None:
        self._subscribed.set()

    def _message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        at = time.monotonic()
        if self.validate:
            parsed_topic, message = parse_for_topic(msg.topic, bytes(msg.payload))
            kind, device_id, seq = parsed_topic.kind, message.device_id, message.seq
        else:
            parsed_topic = parse_topic(msg.topic)
            envelope = json.loads(msg.payload)
            kind, device_id, seq = parsed_topic.kind, envelope["device_id"], envelope["seq"]
        with self._lock:
            if kind is MessageKind.STATUS and self.validate:
                self.statuses.append(message)
            got = self.received[device_id]
            got.deliveries += 1
            got.order.append(seq)
            if self.validate:
                got.by_seq.setdefault(seq, message)
            got.first_at.setdefault(seq, at)
            # seq 0 is the Last Will: published by the broker, in no outbox, never acked.
            if not self.drop_acks and seq > 0:
                self._pending[device_id].add(seq)

    def _ack_loop(self) -> None:
        while not self._stop.wait(self._ack_every_s):
            with self._lock:
                pending, self._pending = self._pending, defaultdict(set)
                self._acking = True
            for device_id, seqs in pending.items():
                if not seqs:
                    continue
                ranges = ack_ranges(seqs)
                for first in range(0, len(ranges), 1000):  # an Ack holds at most 1000 ranges
                    self._ack_seq += 1
                    ack = Ack(
                        msg_id=new_ulid(),
                        device_id=device_id,
                        seq=self._ack_seq,
                        ts=datetime.now(UTC),
                        clock_synced=True,
                        ranges=ranges[first : first + 1000],
                    )
                    # QoS 1, where the cloud sends ACK_QOS (0): settle() must know the
                    # broker holds every ack before a bench's next phase republishes.
                    info = self._client.publish(
                        topic(device_id, MessageKind.ACK), encode_message(ack), qos=1
                    )
                    with self._lock:
                        self._ack_infos.append(info)
            self._acking = False

    def settle(self, device_id: str, deliveries: int, timeout_s: float = 120.0) -> None:
        """Wait until ``deliveries`` messages from ``device_id`` have arrived and every ack
        for them has reached the broker (PUBACKed): a benchmark phase that republishes the
        same seqs must not be answered by acks meant for the phase before it."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                arrived = self.received[device_id].deliveries >= deliveries
                pending = bool(self._pending.get(device_id))
                self._ack_infos = [i for i in self._ack_infos if not i.is_published()]
                unacked = bool(self._ack_infos)
            if arrived and not pending and not unacked and not self._acking:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"acker: {deliveries} messages from {device_id} not settled")
            time.sleep(0.005)

    def forget(self, device_id: str) -> None:
        """Start counting ``device_id`` afresh (a benchmark phase with a new store)."""
        with self._lock:
            self.received.pop(device_id, None)

    def seqs(self, device_id: str) -> set[int]:
        with self._lock:
            return set(self.received[device_id].first_at)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        close_threaded(self._client)
