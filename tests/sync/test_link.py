"""The MQTT link, with paho driven from the event loop (no paho thread), over TLS: a burst
of commands is delivered whole and in order, also when a peer packs many MQTT packets into
one TLS record (bytes TLS has already decrypted never make the socket readable again);
every publish is PUBACKed exactly once; close() leaves without the Last Will."""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections.abc import Iterator
from datetime import UTC, datetime

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.sync.link import LinkSettings, MqttLink, Will
from edge_agent.testing import close_threaded
from protocols.enums import MessageKind
from protocols.messages import encode_message, last_will
from protocols.topics import topic
from tests.support.certs import Certs
from tests.support.mosquitto import Broker
from tests.sync.rig import DEVICE, INGEST_PASSWORD, sync_settings, wait_until

pytestmark = [pytest.mark.integration]


def make_link(
    broker: Broker,
    certs: Certs,
    *,
    received: list[tuple[str, bytes]] | None = None,
    pubacks: list[int] | None = None,
    unrouted: list[int] | None = None,
) -> MqttLink:
    """A link as the sync service makes it; what it receives and the PUBACKs' packet ids
    are appended to ``received`` and ``pubacks`` (those PUBACKed 0x10 "No matching
    subscribers" to ``unrouted`` instead, when given)."""
    assert broker.tls_port is not None
    messages = received if received is not None else []
    acked = pubacks if pubacks is not None else []
    will = last_will(DEVICE, ts=datetime.now(UTC), clock_synced=True)
    return MqttLink(
        sync_settings(broker.tls_port, certs.ca).link,
        will=Will(topic(DEVICE, MessageKind.STATUS), encode_message(will)),
        on_message=lambda name, payload: messages.append((name, payload)),
        on_puback=acked.extend,
        on_disconnect=lambda _reason: None,
        on_no_subscribers=None if unrouted is None else unrouted.extend,
    )


class Ingest:
    """The cloud-ingest identity subscribed to the device's status and telemetry."""

    def __init__(self, broker: Broker) -> None:
        self.received: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.username_pw_set("cloud-ingest", INGEST_PASSWORD)
        self.client.on_message = self._message
        self.client.on_subscribe = lambda *_: subscribed.set()
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        self.client.subscribe(
            [(topic(DEVICE, MessageKind.STATUS), 1), (topic(DEVICE, MessageKind.TELEMETRY), 1)]
        )
        assert subscribed.wait(10)

    def _message(self, _client: paho.Client, _userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            self.received.append((msg.topic, bytes(msg.payload)))

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [payload for _name, payload in self.received]

    def close(self) -> None:
        close_threaded(self.client)


@pytest.fixture
def ingest(broker: Broker) -> Iterator[Ingest]:
    subscriber = Ingest(broker)
    try:
        yield subscriber
    finally:
        subscriber.close()


async def test_a_burst_of_commands_sent_right_after_subscribe_arrives_whole_and_in_order(
    broker: Broker, certs: Certs, api: paho.Client
) -> None:
    received: list[tuple[str, bytes]] = []
    link = make_link(broker, certs, received=received)
    await link.connect()
    try:
        # subscribe() returns once the broker has the subscription (SUBACK): nothing sent
        # after it may be lost.
        await link.subscribe([topic(DEVICE, MessageKind.CMD)])
        sent = [f"command {i}".encode() for i in range(300)]
        for payload in sent:
            api.publish(topic(DEVICE, MessageKind.CMD), payload, qos=1)
        await wait_until(lambda: len(received) >= len(sent), 20, "every command")
        assert [payload for _name, payload in received] == sent
    finally:
        await link.close()


async def test_every_publish_is_pubacked_exactly_once(broker: Broker, certs: Certs) -> None:
    pubacks: list[int] = []
    link = make_link(broker, certs, pubacks=pubacks)
    await link.connect()
    try:
        mids: list[int] = []
        for burst in range(10):
            mids += [
                link.publish(topic(DEVICE, MessageKind.TELEMETRY), f"{burst}/{i}".encode())
                for i in range(100)
            ]
            await asyncio.sleep(0)
        await wait_until(lambda: len(pubacks) >= len(mids), 20, "every PUBACK")
        await asyncio.sleep(0.05)  # a duplicate PUBACK would be in by now
        assert sorted(pubacks) == sorted(mids)
    finally:
        await link.close()


async def test_a_puback_saying_no_subscriber_got_the_message_is_told_apart(
    broker: Broker, certs: Certs
) -> None:
    """Mosquitto PUBACKs a message nobody is subscribed to with 0x10 and drops it (MQTT 5,
    3.4.2.1): the link hands those packet ids to ``on_no_subscribers``, the rest to
    ``on_puback``."""
    pubacks: list[int] = []
    unrouted: list[int] = []
    link = make_link(broker, certs, pubacks=pubacks, unrouted=unrouted)
    await link.connect()
    try:
        telemetry = topic(DEVICE, MessageKind.TELEMETRY)
        dropped = [link.publish(telemetry, f"nobody {i}".encode()) for i in range(5)]
        await wait_until(lambda: len(unrouted) >= len(dropped), 20, "the 0x10 PUBACKs")
        subscriber = Ingest(broker)
        try:
            routed = [link.publish(telemetry, f"ingest {i}".encode()) for i in range(5)]
            await wait_until(lambda: len(pubacks) >= len(routed), 20, "the routed PUBACKs")
            await wait_until(lambda: len(subscriber.payloads()) >= 5, 20, "the deliveries")
        finally:
            subscriber.close()
        assert (sorted(unrouted), sorted(pubacks)) == (sorted(dropped), sorted(routed))
    finally:
        await link.close()


async def test_close_disconnects_cleanly_so_the_broker_sends_no_last_will(
    broker: Broker, certs: Certs, ingest: Ingest
) -> None:
    first = make_link(broker, certs)
    await first.connect()
    await first.close()
    # A second connection publishes a marker. Had the first left without DISCONNECT, its
    # Last Will (the retained offline status) would have reached the subscriber before it.
    second = make_link(broker, certs)
    await second.connect()
    try:
        second.publish(topic(DEVICE, MessageKind.TELEMETRY), b"marker")
        await wait_until(lambda: b"marker" in ingest.payloads(), 20, "the marker")
    finally:
        await second.close()
    assert ingest.payloads() == [b"marker"]


def mqtt_packet(first_byte: int, body: bytes) -> bytes:
    """An MQTT packet: fixed header (variable-length remaining length) and body."""
    length, encoded = len(body), bytearray()
    while True:
        digit, length = length % 128, length // 128
        encoded.append(digit | (0x80 if length else 0))
        if not length:
            return bytes([first_byte]) + bytes(encoded) + body


@pytest.fixture
def coalescing_peer(certs: Certs) -> Iterator[tuple[int, list[bytes]]]:
    """A TLS peer that answers CONNECT with CONNACK and 50 PUBLISH packets in ONE TLS record,
    as a broker or TLS terminator that coalesces writes may (Mosquitto writes a record per
    packet)."""
    payloads = [f"packed {i}".encode() for i in range(50)]
    name = topic(DEVICE, MessageKind.CMD).encode()
    record = mqtt_packet(0x20, b"\x00\x00\x00")  # CONNACK: no session, success, no properties
    for payload in payloads:  # PUBLISH QoS 0: topic, no properties, payload
        record += mqtt_packet(0x30, len(name).to_bytes(2, "big") + name + b"\x00" + payload)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certs.cert, certs.key)
    server = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        raw, _ = server.accept()
        with context.wrap_socket(raw, server_side=True) as conn:
            conn.recv(4096)  # the CONNECT
            conn.sendall(record)  # < 16 KiB: one TLS record
            done.wait(30)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1], payloads
    finally:
        done.set()
        thread.join()
        server.close()


async def test_packets_packed_into_one_tls_record_are_all_delivered(
    coalescing_peer: tuple[int, list[bytes]], certs: Certs
) -> None:
    port, payloads = coalescing_peer
    received: list[tuple[str, bytes]] = []
    link = MqttLink(
        LinkSettings(device_id=DEVICE, host="127.0.0.1", port=port, ca_file=certs.ca),
        will=Will(topic(DEVICE, MessageKind.STATUS), b"{}"),
        on_message=lambda name, payload: received.append((name, payload)),
        on_puback=lambda _mids: None,
        on_disconnect=lambda _reason: None,
    )
    await link.connect()
    try:
        await wait_until(lambda: len(received) >= len(payloads), 10, "every packed PUBLISH")
        assert [payload for _name, payload in received] == payloads
    finally:
        await link.close()
