"""A stand-in for cloud ingest in sync tests: receives uplink messages and acks them.

It speaks the real protocol (``protocols.messages.Ack`` on ``cm/v1/d/{id}/ack``, after it has
"committed" — here, recorded in memory) and connects as the broker's ``cloud-ingest`` identity,
so the project's ACL applies to it. ``drop_acks`` makes it lose some acks on purpose.
"""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from protocols.enums import MessageKind
from protocols.ids import new_ulid
from protocols.messages import Ack, Envelope, ack_ranges, encode_message, parse_for_topic
from protocols.topics import UPLINK_KINDS, ingest_filter, parse_topic, topic


@dataclass
class Received:
    by_seq: dict[int, Envelope] = field(default_factory=dict)
    deliveries: int = 0
    order: list[int] = field(default_factory=list)
    first_at: dict[int, float] = field(default_factory=dict)


class Acker:
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
        self._client.reconnect_delay_set(1, 2)
        # A persistent session, like the real ingest: messages published while the acker is
        # reconnecting wait for it in the broker.
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self._client.connect("127.0.0.1", port, clean_start=False, properties=props)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._ack_loop, name="acker", daemon=True)
        self._thread.start()

    def _connected(self, client: paho.Client, *args: object) -> None:
        # Subscribe on every (re)connect: the broker may have been restarted without our session.
        for kind in sorted(UPLINK_KINDS):
            client.subscribe(ingest_filter(kind, shared=False), qos=1)

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
        self._client.disconnect()
        self._client.loop_stop()
