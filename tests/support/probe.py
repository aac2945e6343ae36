"""A bare MQTT 5 client for broker tests: connect, subscribe, publish, record answers."""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.testing import close_threaded
from tests.support.sim_device import wait_for


class Probe:
    def __init__(self, username: str, password: str, port: int, client_id: str) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.username_pw_set(username, password)
        self.port = port
        self.connack: ReasonCode | None = None
        self.session_present = False
        self.disconnected = threading.Event()
        self.messages: list[tuple[str, bytes]] = []
        self.suback: list[ReasonCode] = []
        self.puback: dict[int, ReasonCode] = {}
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.client.on_publish = self._on_publish

    def _on_connect(self, _c: mqtt.Client, _u: Any, flags: Any, rc: ReasonCode, _p: Any) -> None:
        self.session_present = bool(flags.session_present)
        self.connack = rc

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, _rc: ReasonCode, _p: Any) -> None:
        self.disconnected.set()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.append((msg.topic, bytes(msg.payload)))

    def _on_subscribe(
        self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any
    ) -> None:
        self.suback.extend(codes)

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, rc: ReasonCode, _p: Any) -> None:
        self.puback[mid] = rc

    async def connect(self, *, session_expiry_s: int = 0) -> ReasonCode:
        """Connect; with ``session_expiry_s`` the session (and its queue) outlives us."""
        # No quick automatic reconnect: a refused connection must stay refused in the test.
        self.client.reconnect_delay_set(60, 120)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = session_expiry_s
        self.client.connect(
            "127.0.0.1",
            self.port,
            keepalive=10,
            clean_start=session_expiry_s == 0,
            properties=props,
        )
        self.client.loop_start()
        await wait_for(lambda: self.connack is not None or self.disconnected.is_set(), timeout_s=10)
        assert self.connack is not None
        return self.connack

    async def subscribe(self, filter_: str) -> ReasonCode:
        before = len(self.suback)
        self.client.subscribe(filter_, qos=1)
        await wait_for(lambda: len(self.suback) > before, timeout_s=10)
        return self.suback[-1]

    async def publish(self, topic: str, payload: bytes) -> ReasonCode:
        info = self.client.publish(topic, payload, qos=1)
        await wait_for(lambda: info.mid in self.puback, timeout_s=10)
        return self.puback[info.mid]

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        """Publish QoS 1 messages back to back, then wait for every PUBACK."""
        infos = [self.client.publish(t, payload, qos=1) for t, payload in messages]
        await wait_for(lambda: all(i.mid in self.puback for i in infos), timeout_s=60)

    def close(self) -> None:
        close_threaded(self.client)
