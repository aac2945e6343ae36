"""A minimal MQTT 5 client on an asyncio protocol, for the fleet simulator (firmware_sim/fleet.py).

Why not paho: paho's network loop is a thread per client (``loop_start``), and thousands of
simulated sites in one process would be thousands of threads; paho's external-loop hooks work
but paho then also keeps and re-sends its own in-flight queue on reconnect, beside the
outbox the simulator owns (as the edge agent does), so every backlog would go out twice.
This client does exactly what a site needs and nothing else: CONNECT (credentials, Last Will,
clean start), QoS 1 PUBLISH out with a bounded in-flight window, SUBSCRIBE, QoS 0/1 PUBLISH in
(PUBACKed), keep-alive PINGREQ and DISCONNECT with a reason code (0x04 sends the Will).
QoS 2, AUTH and topic aliases are not spoken; a packet it does not expect closes the link.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable
from dataclasses import dataclass

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14
#: DISCONNECT reason "Disconnect with Will Message": the broker publishes the Will.
DISCONNECT_WITH_WILL = 0x04
#: PUBACK reason "No matching subscribers": the broker accepted the message and dropped it,
#: as nobody was subscribed (MQTT 5, 3.4.2.1).
NO_MATCHING_SUBSCRIBERS = 0x10


class MqttError(Exception):
    """The broker refused us or spoke something this client does not."""


def _vbi(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    data = s.encode()
    return struct.pack("!H", len(data)) + data


def _bin(b: bytes) -> bytes:
    return struct.pack("!H", len(b)) + b


def _packet(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([kind << 4 | flags]) + _vbi(len(body)) + body


def _read_vbi(data: bytes, at: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    retain: bool = True


def _body(buffer: bytearray, at: int) -> tuple[int, int] | None:
    """Where the body of the packet starting at ``at`` lies (start, end); None while the
    buffer does not hold all of it."""
    length, shift, i, end = 0, 0, at + 1, len(buffer)
    while True:
        if i >= end:
            return None
        byte = buffer[i]
        i += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 21:
            raise MqttError("malformed packet: a remaining length of more than four bytes")
    return (i, i + length) if end - i >= length else None


class _Wire(asyncio.Protocol):
    """The socket side of a link: bytes in, whole packets handed to the link as they complete.

    A protocol, not asyncio streams: with streams every packet cost a wake-up of the link's
    read task and three ``readexactly`` awaits, for thousands of links in one process the
    larger part of the simulator's CPU, which is taken from the cloud it measures on the same
    box (bench.fleet). Here a segment's packets are parsed in one synchronous pass.
    """

    def __init__(self, link: MqttLink) -> None:
        self._link = link
        self._buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self._resumed: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        at = 0
        while True:
            try:
                body = _body(buffer, at)
            except MqttError:
                self._link._lost()
                return
            if body is None:  # not all here yet
                break
            first = buffer[at]
            start, at = body
            if not self._link._packet(first >> 4, first & 0x0F, bytes(buffer[start:at])):
                return  # the link closed on it
        if at:
            del buffer[:at]

    def connection_lost(self, exc: Exception | None) -> None:
        self.resume_writing()
        self._link._lost()

    def pause_writing(self) -> None:
        if self._resumed is None:
            self._resumed = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._resumed is not None:
            if not self._resumed.done():
                self._resumed.set_result(None)
            self._resumed = None

    async def drain(self) -> None:
        """Until the transport's buffer is below its high-water mark (or the link is gone)."""
        if self._resumed is not None:
            await asyncio.shield(self._resumed)


def _connect_packet(
    client_id: str, username: str, password: str, will: Will | None, keepalive_s: int
) -> bytes:
    flags = 0x80 | 0x40 | 0x02  # username, password, clean start
    will_part = b""
    if will is not None:
        flags |= 0x04 | 0x08 | (0x20 if will.retain else 0)  # will, will QoS 1, retain
        will_part = _vbi(0) + _str(will.topic) + _bin(will.payload)
    # Session expiry 0 (the default) with clean start: the simulator's outbox, not the
    # broker's session, carries what is unacked across a reconnect — as the agent does.
    body = (
        _str("MQTT")
        + bytes([5, flags])
        + struct.pack("!H", keepalive_s)
        + _vbi(0)
        + _str(client_id)
        + will_part
        + _str(username)
        + _bin(password.encode())
    )
    return _packet(CONNECT, 0, body)


class MqttLink:
    """One connection. ``on_message(topic, payload)`` is called for every PUBLISH received;
    ``on_puback(packet_id, reason)`` when a QoS 1 publish of ours is acknowledged by the
    broker (``reason`` 0 or :data:`NO_MATCHING_SUBSCRIBERS`, the PUBACK's reason code)."""

    def __init__(
        self,
        on_message: Callable[[str, bytes], None],
        on_puback: Callable[[int, int], None],
        on_close: Callable[[], None],
    ) -> None:
        self._on_message = on_message
        self._on_puback = on_puback
        self._on_close = on_close
        self._wire: _Wire | None = None
        #: The CONNACK's (kind, data) while connecting.
        self._connack: asyncio.Future[tuple[int, bytes]] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._next_id = 0
        self.closed = True

    def next_packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    async def connect(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str,
        password: str,
        will: Will | None,
        keepalive_s: int = 30,
        timeout_s: float = 10.0,
    ) -> None:
        loop = asyncio.get_running_loop()
        connack: asyncio.Future[tuple[int, bytes]] = loop.create_future()
        self._connack = connack
        try:
            transport, wire = await asyncio.wait_for(
                loop.create_connection(lambda: _Wire(self), host, port), timeout_s
            )
            try:
                transport.write(_connect_packet(client_id, username, password, will, keepalive_s))
                kind, data = await asyncio.wait_for(connack, timeout_s)
            except BaseException:
                transport.close()
                raise
        finally:
            self._connack = None
        if kind != CONNACK or len(data) < 2 or data[1] != 0:
            transport.close()
            code = data[1] if kind == CONNACK and len(data) > 1 else None
            raise MqttError(f"connection refused (CONNACK reason {code!r})")
        if transport.is_closing():  # lost between the CONNACK and here: no link to hand out
            raise MqttError("connection closed right after its CONNACK")
        self._wire, self.closed = wire, False
        self._tasks = [
            asyncio.create_task(self._ping_loop(keepalive_s), name=f"mqtt-ping-{client_id}"),
        ]

    def _packet(self, kind: int, flags: int, data: bytes) -> bool:
        """One whole packet from the wire; False when the link closed on it."""
        if self._connack is not None:  # connecting: the first packet must be the CONNACK
            connack, self._connack = self._connack, None
            if not connack.done():
                connack.set_result((kind, data))
            return True
        if kind == PUBLISH:
            self._incoming(flags, data)
        elif kind == PUBACK:
            # No reason code (remaining length 2) means success.
            reason = data[2] if len(data) > 2 else 0
            self._on_puback(struct.unpack_from("!H", data)[0], reason)
        elif kind not in (SUBACK, PINGRESP):  # DISCONNECT, or a packet we do not speak
            self._lost()
            return False
        return True

    def _incoming(self, flags: int, data: bytes) -> None:
        qos = (flags >> 1) & 0x03
        (topic_len,) = struct.unpack_from("!H", data)
        at = 2 + topic_len
        topic = data[2:at].decode()
        packet_id = None
        if qos:
            (packet_id,) = struct.unpack_from("!H", data, at)
            at += 2
        props_len, at = _read_vbi(data, at)
        payload = data[at + props_len :]
        if packet_id is not None:
            self._send(_packet(PUBACK, 0, struct.pack("!H", packet_id)))
        self._on_message(topic, payload)

    async def _ping_loop(self, keepalive_s: int) -> None:
        while not self.closed:
            await asyncio.sleep(keepalive_s / 2)
            self._send(_packet(PINGREQ, 0, b""))

    def _send(self, data: bytes) -> None:
        wire = self._wire
        if wire is not None and wire.transport is not None and not self.closed:
            wire.transport.write(data)

    def _lost(self) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(MqttError("connection closed before its CONNACK"))
        if self.closed:
            return
        self.closed = True
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        if self._wire is not None and self._wire.transport is not None:
            self._wire.transport.close()
        self._on_close()

    def subscribe(self, topics: list[str]) -> None:
        body = struct.pack("!H", self.next_packet_id()) + _vbi(0)
        body += b"".join(_str(t) + b"\x01" for t in topics)
        self._send(_packet(SUBSCRIBE, 0x02, body))

    def publish(self, topic: str, payload: bytes, packet_id: int) -> None:
        """QoS 1 publish; the broker's PUBACK comes back through ``on_puback``."""
        body = _str(topic) + struct.pack("!H", packet_id) + _vbi(0) + payload
        self._send(_packet(PUBLISH, 0x02, body))

    async def drain(self) -> None:
        if self._wire is not None and not self.closed:
            await self._wire.drain()

    def disconnect(self, reason: int = 0) -> None:
        """DISCONNECT with ``reason`` (0: normal, the Will is dropped; 0x04: it is sent)."""
        self._send(_packet(DISCONNECT, 0, bytes([reason]) + _vbi(0)))
        self._lost()
