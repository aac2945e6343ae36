"""A minimal MQTT 5 client on an asyncio protocol, for the fleet simulator (firmware_sim/fleet.py).

Why not paho: paho's network loop is a thread per client (``loop_start``), and thousands of
simulated sites in one process would be thousands of threads; paho's external-loop hooks work
but paho then also keeps and re-sends its own in-flight queue on reconnect, beside the
outbox the simulator owns (as the edge agent does), so every backlog would go out twice.
This client does exactly what a site needs and nothing else: CONNECT (credentials, Last Will,
clean start), QoS 1 PUBLISH out with a bounded in-flight window, SUBSCRIBE, QoS 0/1 PUBLISH in
(PUBACKed), keep-alive PINGREQ and DISCONNECT with a reason code (0x04 sends the Will).
QoS 2, AUTH and topic aliases are not spoken; a packet it does not expect closes the link.
The packets themselves are built and read by protocols/mqtt5.py, shared with the cloud's
broker link (cloud/broker.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

from protocols.errors import MqttPacketError
from protocols.mqtt5 import (
    CONNACK,
    DISCONNECT_WITH_WILL,
    NO_MATCHING_SUBSCRIBERS,
    PINGRESP,
    PUBACK,
    PUBLISH,
    SUBACK,
    Will,
    connect,
    disconnect,
    frame,
    pingreq,
    puback,
    read_ack,
    read_publish,
    subscribe,
)
from protocols.mqtt5 import publish as publish_packet

__all__ = [
    "DISCONNECT_WITH_WILL",
    "NO_MATCHING_SUBSCRIBERS",
    "MqttError",
    "MqttLink",
    "Will",
]


class MqttError(Exception):
    """The broker refused us or spoke something this client does not."""


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
        # A cast, not an isinstance check: uvloop's transports are not subclasses of
        # asyncio.Transport, and the link must not care which loop runs it.
        self.transport = cast("asyncio.Transport", transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        at = 0
        while True:
            try:
                body = frame(buffer, at)
            except MqttPacketError:
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
                # Session expiry 0 (the default) with clean start: the simulator's outbox, not
                # the broker's session, carries what is unacked across a reconnect — as the
                # agent does.
                transport.write(
                    connect(client_id, username, password, keepalive_s=keepalive_s, will=will)
                )
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
        try:
            if kind == PUBLISH:
                topic, qos, packet_id, payload = read_publish(flags, data)
                if qos:
                    self._send(puback(packet_id))
                self._on_message(topic, payload)
            elif kind == PUBACK:
                self._on_puback(*read_ack(data))
            elif kind not in (SUBACK, PINGRESP):  # DISCONNECT, or a packet we do not speak
                self._lost()
                return False
        except MqttPacketError:
            self._lost()
            return False
        return True

    async def _ping_loop(self, keepalive_s: int) -> None:
        while not self.closed:
            await asyncio.sleep(keepalive_s / 2)
            self._send(pingreq())

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
        self._send(subscribe(self.next_packet_id(), topics))

    def publish(self, topic: str, payload: bytes, packet_id: int) -> None:
        """QoS 1 publish; the broker's PUBACK comes back through ``on_puback``."""
        self._send(publish_packet(topic, payload, qos=1, packet_id=packet_id))

    async def drain(self) -> None:
        if self._wire is not None and not self.closed:
            await self._wire.drain()

    def disconnect(self, reason: int = 0) -> None:
        """DISCONNECT with ``reason`` (0: normal, the Will is dropped; 0x04: it is sent)."""
        self._send(disconnect(reason))
        self._lost()
