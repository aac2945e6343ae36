"""A simulated device with an outbox, as the edge agent behaves on the wire.

It publishes its outbox over MQTT 5 QoS 1 with its own credentials, deletes a row only when
a cloud :class:`~protocols.messages.Ack` names its seq, and resends what is still unacked
when asked (the agent does so after reconnecting or when acks stall).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.testing import close_threaded
from protocols.enums import MessageKind
from protocols.messages import Ack, Envelope, encode_message, parse_message
from protocols.topics import topic


class SimDevice:
    def __init__(self, device_id: str, password: str, port: int) -> None:
        self.device_id = device_id
        self.outbox: dict[int, tuple[str, bytes]] = {}
        self.acks: list[Ack] = []
        #: The QoS each ack arrived at.
        self.ack_qos: set[int] = set()
        self.dead_lettered: set[int] = set()
        self.connect_result: ReasonCode | None = None
        self.denied_subscriptions = 0
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._answered = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            # The broker binds a device's client id to it (its device id); no other is let in.
            client_id=device_id,
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        self.client.username_pw_set(device_id, password)
        self.client.max_inflight_messages_set(200)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.port = port
        self.subscribe_codes: list[ReasonCode] = []
        self.on_extra: Callable[[mqtt.MQTTMessage], None] | None = None

    def _on_connect(
        self, client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        self.connect_result = reason
        self._answered.set()
        if not reason.is_failure:
            client.subscribe(topic(self.device_id, MessageKind.ACK), qos=1)
            self._connected.set()

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any
    ) -> None:
        self.subscribe_codes.extend(codes)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if msg.topic != topic(self.device_id, MessageKind.ACK):
            if self.on_extra is not None:
                self.on_extra(msg)
            return
        ack = parse_message(MessageKind.ACK, bytes(msg.payload))
        assert isinstance(ack, Ack)
        with self._lock:
            self.acks.append(ack)
            self.ack_qos.add(msg.qos)
            self.dead_lettered.update(ack.dead_lettered)
            for seq in [s for s in self.outbox if ack.covers(s)]:
                del self.outbox[seq]

    async def connect(self, *, wait: bool = True) -> ReasonCode | None:
        self.client.connect_async("127.0.0.1", self.port, keepalive=10)
        self.client.loop_start()
        await wait_for(self._answered.is_set, timeout_s=10)
        if wait:
            await wait_for(lambda: bool(self.subscribe_codes), timeout_s=10)
        return self.connect_result

    def disconnect(self) -> None:
        close_threaded(self.client)

    def queue(self, messages: Iterable[Envelope]) -> None:
        with self._lock:
            for m in messages:
                kind = _KINDS[type(m).__name__]
                self.outbox[m.seq] = (topic(self.device_id, kind), encode_message(m))

    def queue_raw(self, seq: int, kind: MessageKind, payload: bytes) -> None:
        with self._lock:
            self.outbox[seq] = (topic(self.device_id, kind), payload)

    def send_unacked(self) -> int:
        with self._lock:
            pending = sorted(self.outbox.items())
        for _, (name, payload) in pending:
            self.client.publish(name, payload, qos=1)
        return len(pending)

    def unacked(self) -> int:
        with self._lock:
            return len(self.outbox)

    async def drain(
        self, *, timeout_s: float, resend_every_s: float = 15.0, until: int = 0
    ) -> None:
        """Publish the outbox and wait until at most ``until`` rows are unacked, resending
        everything unacked whenever acks stall."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        self.send_unacked()
        last_progress, last_count = loop.time(), self.unacked()
        while self.unacked() > until:
            if loop.time() > deadline:
                raise TimeoutError(f"{self.unacked()} rows of {self.device_id} never acked")
            await asyncio.sleep(0.05)
            count = self.unacked()
            if count != last_count:
                last_progress, last_count = loop.time(), count
            elif loop.time() - last_progress > resend_every_s:
                self.send_unacked()
                last_progress = loop.time()


_KINDS = {
    "TelemetryBatch": MessageKind.TELEMETRY,
    "SessionEvent": MessageKind.SESSION,
    "Status": MessageKind.STATUS,
    "CommandResult": MessageKind.CMD_RESULT,
    "AuthDecision": MessageKind.AUTH,
}


async def wait_for(condition: Callable[[], bool], *, timeout_s: float) -> None:
    """Poll ``condition`` until true; a guard against hanging, not a timing assertion."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110 -- the condition is set by a paho thread
            await asyncio.sleep(0.02)
