"""The MQTT 5 link to the cloud broker: the only module that imports paho-mqtt.

paho runs its network loop in its own thread; every callback is handed to the asyncio loop
with ``call_soon_threadsafe``, so the rest of the agent sees plain callbacks on its own thread.

One paho client per connection attempt. paho keeps its session (unacknowledged publishes) in
memory only (DESIGN.md §8), so it cannot be the agent's memory of what is unsent: the outbox is.
A fresh client per connection means paho never resends behind the uplink's back. The *broker*
session is persistent — clean start off and a non-zero Session Expiry Interval (absent means
0: the session would end at disconnect) — so commands and acks queued while the agent was away
are delivered when it returns.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_agent.errors import LinkError
from edge_agent.hosts import is_loopback

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """Where and how to reach the broker."""

    device_id: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = True
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 60
    #: How long the broker keeps our session (subscriptions, queued commands) while we are
    #: away. A week covers a long 4G outage at a site.
    session_expiry_s: int = 7 * 24 * 3600
    connect_timeout_s: float = 10.0
    #: paho's own in-flight limit; the uplink window bounds what is handed to paho anyway.
    max_inflight: int = 200
    #: Never acknowledge what the broker delivers: a probe connecting under the agent's own
    #: client id leaves the session's queued commands unacknowledged, so the broker
    #: redelivers them to the agent when it resumes the session.
    manual_ack: bool = False

    def __post_init__(self) -> None:
        if not self.tls and not is_loopback(self.host):
            # Credentials and sessions cross the internet only inside TLS: no plaintext
            # fallback, and no plaintext at all except to a broker on this machine.
            raise LinkError(
                f"refusing plaintext MQTT to {self.host}: tls = false is only allowed to a "
                "broker on this machine (loopback)"
            )
        if self.cert_file is not None and self.key_file is None:
            raise LinkError("a client certificate needs its key file")


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes


class _HandshakeClosingSocket(ssl.SSLSocket):
    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


class MqttLink:
    """One connection to the broker. Callbacks run on the asyncio loop that called connect."""

    def __init__(
        self,
        settings: LinkSettings,
        *,
        will: Will,
        on_message: Callable[[str, bytes], None],
        on_puback: Callable[[int], None],
        on_disconnect: Callable[[str], None],
    ) -> None:
        self.settings = settings
        self._will = will
        self._on_message = on_message
        self._on_puback = on_puback
        self._on_disconnect = on_disconnect
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Future[bool] | None = None
        self.is_connected = False
        self._puback_lock = threading.Lock()
        self._pubacks: list[int] = []
        self._puback_wake_pending = False

    async def connect(self) -> bool:
        """Connect; return the broker's session-present flag. Raise LinkError on failure."""
        self._loop = asyncio.get_running_loop()
        self._connected = self._loop.create_future()
        client = self._make_client()
        self._client = client
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        try:
            await asyncio.wait_for(
                asyncio.to_thread(
                    client.connect,
                    self.settings.host,
                    self.settings.port,
                    self.settings.keepalive_s,
                    clean_start=False,
                    properties=props,
                ),
                self.settings.connect_timeout_s,
            )
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            self._client = None
            raise LinkError(f"cannot reach broker {self._where()}: {exc}") from exc
        client.loop_start()
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                session_present = await self._connected
        except BaseException:
            await self.close()
            raise
        self.is_connected = True
        return session_present

    def _make_client(self) -> paho.Client:
        s = self.settings
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=s.device_id,
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
            manual_ack=s.manual_ack,
        )
        if s.username is not None:
            client.username_pw_set(s.username, s.password)
        if s.tls:
            client.tls_set_context(self._tls_context())
        client.will_set(self._will.topic, self._will.payload, qos=1, retain=True)
        client.max_inflight_messages_set(s.max_inflight)
        client.max_queued_messages_set(0)
        client.on_connect = self._paho_connect
        client.on_disconnect = self._paho_disconnect
        client.on_publish = self._paho_publish
        client.on_message = self._paho_message
        return client

    def _tls_context(self) -> ssl.SSLContext:
        """Verify the broker's certificate and name (PROTOCOL_TLS_CLIENT's defaults)."""
        s = self.settings
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        if s.ca_file is not None:
            context.load_verify_locations(cafile=s.ca_file)
        else:
            context.load_default_certs()
        if s.cert_file is not None:
            context.load_cert_chain(s.cert_file, s.key_file)
        # paho wraps the socket and calls do_handshake() on a local variable: when the handshake
        # fails (a broker restarting, a proxy cutting in) the socket is never closed and leaks
        # until garbage collection. This socket class closes itself on a failed handshake.
        context.sslsocket_class = _HandshakeClosingSocket
        return context

    def _where(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    # paho thread → asyncio loop -------------------------------------------------------------

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _paho_connect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._call(self._connack, bool(flags.session_present), reason.is_failure, str(reason))

    def _connack(self, session_present: bool, failed: bool, reason: str) -> None:
        future = self._connected
        if future is None or future.done():
            return
        if failed:
            future.set_exception(LinkError(f"broker {self._where()} refused us: {reason}"))
        else:
            future.set_result(session_present)

    def _paho_disconnect(
        self, client: paho.Client, userdata: Any, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        self._call(self._disconnected, str(reason))

    def _disconnected(self, reason: str) -> None:
        was_connected = self.is_connected
        self.is_connected = False
        future = self._connected
        if future is not None and not future.done():
            future.set_exception(LinkError(f"broker {self._where()} closed the link: {reason}"))
        if was_connected:
            self._on_disconnect(reason)

    def _paho_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        # PUBACKs come in thousands per second during a drain: collect them and wake the
        # asyncio loop once per batch instead of once per PUBACK (each wake is a syscall and
        # a GIL hand-over).
        with self._puback_lock:
            self._pubacks.append(mid)
            if self._puback_wake_pending:
                return
            self._puback_wake_pending = True
        self._call(self._deliver_pubacks)

    def _deliver_pubacks(self) -> None:
        with self._puback_lock:
            mids, self._pubacks = self._pubacks, []
            self._puback_wake_pending = False
        for mid in mids:
            self._on_puback(mid)

    def _paho_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._call(self._on_message, message.topic, bytes(message.payload))

    # actions (asyncio thread) ---------------------------------------------------------------

    def publish(
        self, topic: str, payload: bytes, *, retain: bool = False, expiry_s: int | None = None
    ) -> int:
        """Publish at QoS 1; return the packet id the PUBACK callback will name."""
        client = self._client
        if client is None or not self.is_connected:
            raise LinkError("not connected")
        props = None
        if expiry_s is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.MessageExpiryInterval = expiry_s
        info = client.publish(topic, payload, qos=1, retain=retain, properties=props)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise LinkError(f"publish to {topic} failed: {paho.error_string(info.rc)}")
        return int(info.mid)

    async def subscribe(self, topics: list[str]) -> None:
        """Subscribe at QoS 1 (the broker remembers it in our persistent session)."""
        client = self._client
        if client is None:
            raise LinkError("not connected")
        rc, _mid = client.subscribe([(t, 1) for t in topics])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise LinkError(f"subscribe failed: {paho.error_string(rc)}")

    async def close(self) -> None:
        """Disconnect cleanly (no Last Will) and stop paho's thread."""
        client, self._client = self._client, None
        self.is_connected = False
        if client is None:
            return
        client.disconnect()
        await asyncio.to_thread(client.loop_stop)
