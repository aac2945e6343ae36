"""The cloud's MQTT connection (cloud/broker.py, ``_Connection``) byte by byte, against a
transport that records what it writes: the broker's Receive Maximum is obeyed, a full queue
stops reading without losing what was read, refusals and a lost connection reach each waiter
as the right error, and a broker that breaks the protocol or falls silent is dropped.
The same client against the real Mosquitto: tests/cloud/test_broker_link.py."""

from __future__ import annotations

import asyncio
import struct

import pytest

from cloud.broker import BrokerLink, BrokerLogin, _Connection, request
from cloud.errors import BrokerError, BrokerUnacknowledged
from protocols import mqtt5

LOGIN = BrokerLogin("127.0.0.1", 1, "cloud-ingest", "secret")


class _Transport(asyncio.Transport):
    """Records writes; reading can be paused, as a socket transport's can."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.writes = 0
        self.reading = True
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closing
        self.written += data
        self.writes += 1

    def is_closing(self) -> bool:
        return self.closing

    def is_reading(self) -> bool:
        return self.reading

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def packets(self) -> list[tuple[int, bytes]]:
        """What was written, as (packet type, body), and forget it."""
        out, at = [], 0
        while at < len(self.written):
            found = mqtt5.frame(self.written, at)
            assert found is not None, "a packet was written in part"
            start, end = found
            out.append((self.written[at] >> 4, bytes(self.written[start:end])))
            at = end
        self.written.clear()
        return out


def _connack(reason: int = 0, **values: int) -> bytes:
    props = mqtt5.properties({getattr(mqtt5, k.upper()): v for k, v in values.items()})
    return mqtt5.packet(mqtt5.CONNACK, 0, bytes([0, reason]) + props)


def _suback(packet_id: int, *reasons: int) -> bytes:
    return mqtt5.packet(mqtt5.SUBACK, 0, struct.pack("!H", packet_id) + b"\0" + bytes(reasons))


async def _connected(**link_options: object) -> tuple[BrokerLink, _Connection, _Transport]:
    link = BrokerLink(LOGIN, "test-link", **link_options)  # type: ignore[arg-type]
    connection = _Connection(link, 1)
    link._live[1] = connection
    transport = _Transport()
    connection.connection_made(transport)
    ((kind, _),) = transport.packets()
    assert kind == mqtt5.CONNECT
    return link, connection, transport


def _published_ids(transport: _Transport) -> list[int]:
    return [
        mqtt5.read_publish(0x02, body)[2]
        for kind, body in transport.packets()
        if kind == mqtt5.PUBLISH
    ]


async def test_publishes_past_the_brokers_receive_maximum_wait_their_turn() -> None:
    _, connection, transport = await _connected()
    connection.data_received(_connack(receive_maximum=2))
    assert connection.ready.done()
    waiters = [connection.publish("t", b"%d" % i, expiry_s=None, wait=True) for i in range(5)]
    sent = _published_ids(transport)
    assert len(sent) == 2  # never more than the broker receives
    for _ in range(3):
        connection.data_received(mqtt5.puback(sent.pop(0)))
        sent += _published_ids(transport)
        assert len(sent) == 2
    while sent:
        connection.data_received(mqtt5.puback(sent.pop(0)))
        assert _published_ids(transport) == []
    await asyncio.gather(*(w for w in waiters if w is not None))


async def test_a_full_queue_stops_reading_and_keeps_everything_already_read() -> None:
    link, connection, transport = await _connected(queue_max=3, manual_ack=True)
    connection.data_received(_connack())
    segment = b"".join(
        mqtt5.publish("cm/v1/d/x/tele", b"%d" % i, qos=1, packet_id=i + 1) for i in range(5)
    )
    # One segment split anywhere: cut mid-packet once.
    connection.data_received(segment[:7])
    connection.data_received(segment[7:])
    assert link.messages.qsize() == 5  # nothing read is dropped
    assert not transport.is_reading()
    assert transport.packets() == []  # manual ack: no PUBACK until the consumer says so
    taken = [link.messages.get_nowait() for _ in range(2)]
    assert not transport.is_reading()  # 3 left: still full
    taken.append(link.messages.get_nowait())
    assert transport.is_reading()
    taken += [link.messages.get_nowait() for _ in range(2)]
    assert [d.payload for d in taken] == [b"%d" % i for i in range(5)]
    for delivery in taken:
        link.ack(delivery)
    assert [mqtt5.read_ack(body) for _, body in transport.packets()] == [
        (i + 1, 0) for i in range(5)
    ]


async def test_a_link_without_manual_ack_pubacks_as_messages_arrive() -> None:
    link, connection, transport = await _connected(subscriptions=["cm/v1/d/+/status"])
    connection.data_received(_connack())
    ((kind, body),) = transport.packets()
    assert kind == mqtt5.SUBSCRIBE
    assert not connection.ready.done()  # not before the SUBACK
    (packet_id,) = struct.unpack_from("!H", body)
    connection.data_received(_suback(packet_id, 1))
    assert connection.ready.done()
    connection.data_received(mqtt5.publish("cm/v1/d/x/status", b"{}", qos=1, packet_id=9))
    assert [(k, mqtt5.read_ack(b)) for k, b in transport.packets()] == [(mqtt5.PUBACK, (9, 0))]
    delivery = link.messages.get_nowait()
    assert delivery.payload == b"{}"
    # Acked already: a second PUBACK could acknowledge a later message under the same id.
    link.ack(delivery)
    assert transport.packets() == []


async def test_a_refused_subscription_fails_the_connection() -> None:
    _, connection, transport = await _connected(subscriptions=["$share/ingest/cm/v1/d/+/tele"])
    connection.data_received(_connack())
    ((_, body),) = transport.packets()
    connection.data_received(_suback(struct.unpack_from("!H", body)[0], 0x87))
    with pytest.raises(BrokerError, match="refused a subscription: Not authorized"):
        await connection.ready
    assert transport.closing


async def test_refusals_and_a_lost_connection_reach_each_waiter_as_what_they_are() -> None:
    _, connection, transport = await _connected()
    connection.data_received(_connack(receive_maximum=2))
    refused, unacked, third = (
        connection.publish("t", b"", expiry_s=60, wait=True) for _ in range(3)
    )
    first, _second = _published_ids(transport)
    connection.data_received(mqtt5.puback(first, 0x87))
    with pytest.raises(BrokerError, match=r"refused the message: Not authorized \(0x87\)"):
        await refused  # type: ignore[misc]
    assert len(_published_ids(transport)) == 1  # the room it freed went to the third
    connection.connection_lost(ConnectionResetError("reset by peer"))
    with pytest.raises(BrokerUnacknowledged, match="reset by peer"):
        await unacked  # type: ignore[misc]
    with pytest.raises(BrokerUnacknowledged):
        await third  # type: ignore[misc]  # written once the refusal freed room: the broker may have it
    with pytest.raises(BrokerError, match="not connected"):
        connection.publish("t", b"", expiry_s=None, wait=False)


async def test_a_publish_still_queued_when_the_connection_ends_was_never_sent() -> None:
    _, connection, transport = await _connected()
    connection.data_received(_connack(receive_maximum=1))
    sent = connection.publish("t", b"a", expiry_s=None, wait=True)
    queued = connection.publish("t", b"b", expiry_s=None, wait=True)
    assert len(_published_ids(transport)) == 1
    connection.connection_lost(None)
    with pytest.raises(BrokerUnacknowledged):
        await sent  # type: ignore[misc]
    with pytest.raises(BrokerError, match="before it was sent") as caught:
        await queued  # type: ignore[misc]
    assert not isinstance(caught.value, BrokerUnacknowledged)


async def test_a_refused_connection_says_why() -> None:
    _, connection, transport = await _connected()
    connection.data_received(_connack(0x86))
    with pytest.raises(BrokerError, match=r"refused the connection: Bad User Name or Password"):
        await connection.ready
    assert transport.closing


@pytest.mark.parametrize(
    ("packet", "reason"),
    [
        (mqtt5.disconnect(0x8E), "Session taken over"),
        (b"\x30\xff\xff\xff\xff\x01", "remaining length"),  # five length bytes
        (mqtt5.packet(mqtt5.PUBLISH, 0x04, b"\0\x01t\0\x01\0"), "QoS 2"),
        (mqtt5.packet(mqtt5.PUBLISH, 0, b"\0\0\0"), "topic aliases"),
        (mqtt5.packet(5, 0, b"\0\x01"), "unexpected packet type 5"),  # PUBREC
    ],
)
async def test_a_broker_that_disconnects_or_breaks_the_protocol_is_dropped(
    packet: bytes, reason: str
) -> None:
    link, connection, transport = await _connected()
    connection.data_received(_connack())
    connection.data_received(packet)
    assert transport.closing
    assert reason in await connection.ended
    assert link.messages.qsize() == 0
    assert 1 not in link._live


async def test_a_silent_broker_is_dropped_after_a_keep_alive_without_an_answer() -> None:
    _, connection, transport = await _connected(keepalive_s=60)
    # The broker's Server Keep Alive wins over the link's 60 s.
    connection.data_received(_connack(server_keep_alive=1))
    assert connection.keepalive_s == 1
    reason = await asyncio.wait_for(connection.ended, 10)
    assert "keep-alive" in reason
    sent = [kind for kind, _ in transport.packets()]
    assert sent == [mqtt5.PINGREQ] * len(sent)
    assert len(sent) >= 2  # pinged every half interval before giving up


async def test_a_publish_larger_than_the_brokers_maximum_packet_size_is_refused_here() -> None:
    _, connection, transport = await _connected()
    connection.data_received(_connack(maximum_packet_size=64))
    connection.publish("t", b"x" * 32, expiry_s=None, wait=False)
    with pytest.raises(BrokerError, match="Maximum Packet Size is 64"):
        connection.publish("t", b"x" * 64, expiry_s=None, wait=False)
    assert len(_published_ids(transport)) == 1


@pytest.mark.parametrize("topic", ["", "cm/v1/d/+/cmd", "cm/#", "a\0b"])
async def test_a_topic_no_broker_accepts_is_refused_before_it_can_end_the_connection(
    topic: str,
) -> None:
    _, connection, transport = await _connected()
    connection.data_received(_connack())
    with pytest.raises(BrokerError, match="not a topic name"):
        connection.publish(topic, b"", expiry_s=None, wait=False)
    with pytest.raises(BrokerError, match="32 bits"):
        connection.publish("t", b"", expiry_s=2**32, wait=False)
    assert transport.packets() == []
    assert not connection.ended.done()


async def test_a_publish_that_never_got_room_is_withdrawn_and_reported_as_not_sent() -> None:
    link, connection, transport = await _connected()
    connection.data_received(_connack(receive_maximum=1))
    link._current = connection
    connection.publish("t", b"first", expiry_s=None, wait=False)
    (first,) = _published_ids(transport)
    with pytest.raises(BrokerError, match="not sent") as caught:
        await link.publish("t", b"second", timeout_s=0.05)
    assert not isinstance(caught.value, BrokerUnacknowledged)
    connection.data_received(mqtt5.puback(first))
    assert _published_ids(transport) == []  # withdrawn: it does not go out later


async def test_the_admins_round_trip_fails_at_once_when_the_broker_hangs_up() -> None:
    """A broker that PUBACKs the request and then closes: BrokerError saying so, not a wait
    for the whole timeout followed by "no answer"."""

    async def broker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(3):  # CONNECT, SUBSCRIBE, PUBLISH
            first = await reader.readexactly(2)
            length, shift, byte = first[1] & 0x7F, 7, first[1]
            while byte & 0x80:
                byte = (await reader.readexactly(1))[0]
                length |= (byte & 0x7F) << shift
                shift += 7
            body = await reader.readexactly(length)
            kind = first[0] >> 4
            if kind == mqtt5.CONNECT:
                writer.write(_connack())
            elif kind == mqtt5.SUBSCRIBE:
                writer.write(_suback(struct.unpack_from("!H", body)[0], 1))
            else:
                writer.write(mqtt5.puback(mqtt5.read_publish(first[0] & 0x0F, body)[2]))
        writer.close()

    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        login = BrokerLogin("127.0.0.1", port, "cloud-api", "secret")
        # Its 60 s would end in "no answer on ...": the match tells the two apart.
        with pytest.raises(BrokerError, match="connection lost"):
            await asyncio.to_thread(
                request,
                login,
                "admin-test",
                topic="$CONTROL/dynamic-security/v1",
                payload=b"{}",
                response_topic="$CONTROL/dynamic-security/v1/response",
                answer=lambda body: body,
                timeout_s=60,
            )


async def test_a_batchs_answers_and_a_segments_pubacks_leave_in_one_write() -> None:
    """Not a send per packet (on loopback each one runs the receiver's TCP stack too): the
    link writes what a batch or a segment answers at once, in order."""
    link, connection, transport = await _connected(manual_ack=True)
    connection.data_received(_connack())
    link._current = connection
    segment = b"".join(
        mqtt5.publish("cm/v1/d/x/tele", b"%d" % i, qos=1, packet_id=i + 1) for i in range(4)
    )
    connection.data_received(segment)
    deliveries = [link.messages.get_nowait() for _ in range(4)]
    transport.writes = 0
    with link.corked():
        for delivery in deliveries:
            link.publish_nowait(f"cm/v1/d/{delivery.mid}/ack", b"ack", qos=0)
            link.ack(delivery)
        assert transport.writes == 0
    assert transport.writes == 1
    sent = transport.packets()
    assert [kind for kind, _ in sent] == [mqtt5.PUBLISH, mqtt5.PUBACK] * 4
    assert [mqtt5.read_ack(body)[0] for kind, body in sent if kind == mqtt5.PUBACK] == [
        1,
        2,
        3,
        4,
    ]

    auto, auto_connection, auto_transport = await _connected()
    auto_connection.data_received(_connack())
    auto_transport.writes = 0
    auto_connection.data_received(segment)
    assert auto_transport.writes == 1
    assert [kind for kind, _ in auto_transport.packets()] == [mqtt5.PUBACK] * 4
    assert auto.messages.qsize() == 4
