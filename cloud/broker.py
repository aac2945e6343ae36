"""The cloud's MQTT client: paho-mqtt 2.x (MQTT 5) in its own network thread, as a context
manager that connects (and keeps reconnecting) for the lifetime of the block.

Only this module and :mod:`cloud.ingest.worker` import paho. paho-mqtt's own errors are
translated into :class:`~cloud.errors.BrokerError` here.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud.errors import BrokerError
from cloud.settings import MqttSettings

log = logging.getLogger(__name__)


def new_client(settings: MqttSettings, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    """A configured, not yet connected MQTT 5 client."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        manual_ack=manual_ack,
    )
    client.username_pw_set(settings.username, settings.password.get_secret_value())
    if settings.tls:
        client.tls_set(
            ca_certs=str(settings.ca_file) if settings.ca_file else None,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    # Reconnect with paho's exponential backoff (1 s doubling to 30 s).
    client.reconnect_delay_set(min_delay=1, max_delay=30)
    return client


def connect_properties(**values: int) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]  # paho is untyped here
    for name, value in values.items():
        setattr(props, name, value)
    return props


class BrokerLink:
    """A connected paho client plus a thread-safe view of whether it is connected."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self._connected = threading.Event()
        self.on_connected: Callable[[mqtt.Client], None] | None = None
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if reason.is_failure:
            log.error("broker refused the connection: %s", reason)
            return
        log.info("connected to the broker")
        self._connected.set()
        if self.on_connected is not None:
            self.on_connected(client)

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if self._connected.is_set():
            log.warning("disconnected from the broker: %s", reason)
        self._connected.clear()

    def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, expiry_s: int | None = None
    ) -> None:
        """Queue ``payload`` for ``topic``; ``expiry_s`` sets the MQTT 5 Message Expiry
        Interval (the broker drops it, undelivered, after that long)."""
        properties = None
        if expiry_s is not None:
            properties = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]  # paho is untyped here
            properties.MessageExpiryInterval = expiry_s
        info = self.client.publish(topic, payload, qos=qos, properties=properties)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            # NO_CONN: paho queues QoS>0 messages and sends them after reconnecting.
            raise BrokerError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")


@asynccontextmanager
async def open_broker_link(
    settings: MqttSettings,
    client_id: str,
    *,
    manual_ack: bool = False,
    properties: Properties | None = None,
    clean_start: bool = True,
    configure: Callable[[BrokerLink], None] | None = None,
) -> AsyncIterator[BrokerLink]:
    """Connect in the background (the broker may be down at start) and disconnect on exit."""
    link = BrokerLink(new_client(settings, client_id, manual_ack=manual_ack))
    if configure is not None:
        configure(link)
    try:
        link.client.connect_async(
            settings.host,
            settings.port,
            keepalive=settings.keepalive_s,
            clean_start=clean_start,
            properties=properties,
        )
    except (OSError, ValueError) as exc:
        raise BrokerError(f"cannot connect to {settings.host}:{settings.port}: {exc}") from exc
    link.client.loop_start()
    try:
        yield link
    finally:
        link.client.disconnect()
        link.client.loop_stop()
