"""The MQTT 5 link to the cloud broker: the only module that imports paho-mqtt.

paho's network loop runs on the asyncio loop, through paho's external-loop hooks (as aiomqtt
does): the socket is registered with ``add_reader``/``add_writer``, ``loop_misc`` runs once a
second for keepalive, and every paho callback runs on the loop's own thread. No paho thread:
a PUBACK is handled, and the window it frees refilled, without a hand-over between threads,
a lock shared with the publishing thread or a socket-pair wake per publish — what the outbox
drain lost against raw paho (docs/decisions.md). Only the blocking TCP connect and TLS
handshake run in a worker thread.

One paho client per connection attempt. paho keeps its session (unacknowledged publishes) in
memory only (DESIGN.md §8), so it cannot be the agent's memory of what is unsent: the outbox is.
A fresh client per connection means paho never resends behind the uplink's back. The *broker*
session is persistent — clean start off and a non-zero Session Expiry Interval (absent means
0: the session would end at disconnect) — so commands and acks queued while the agent was away
are delivered when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
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

#: PUBACK reason "No matching subscribers" (MQTT 5, 3.4.2.1): the broker took the message and
#: dropped it, as nobody was subscribed to its topic.
NO_MATCHING_SUBSCRIBERS = 0x10


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
    max_inflight: int = 0
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
        on_puback: Callable[[list[int]], None],
        on_disconnect: Callable[[str], None],
        on_no_subscribers: Callable[[list[int]], None] | None = None,
    ) -> None:
        """``on_puback`` gets the packet ids the broker PUBACKed; with ``on_no_subscribers``,
        those PUBACKed 0x10 "No matching subscribers" (dropped) go to it instead."""
        self.settings = settings
        self._will = will
        self._on_message = on_message
        self._on_puback = on_puback
        self._on_disconnect = on_disconnect
        self._on_no_subscribers = on_no_subscribers
        self._client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connected: asyncio.Future[bool] | None = None
        self.is_connected = False
        #: The socket registered with the loop (reader, and writer while paho has bytes to
        #: send), and the keepalive timer.
        self._sock: Any = None
        self._writing = False
        self._keepalive: asyncio.TimerHandle | None = None
        self._sock_closed = asyncio.Event()
        #: PUBACKs of one read, handed over together once paho has parsed them all (those
        #: with reason 0x10 apart, when someone listens for them).
        self._pubacks: list[int] = []
        self._unrouted: list[int] = []
        #: SUBSCRIBE packet ids waiting for the broker's SUBACK.
        self._subacks: dict[int, asyncio.Future[list[ReasonCode]]] = {}

    async def connect(self) -> bool:
        """Connect; return the broker's session-present flag. Raise LinkError on failure."""
        self._loop = asyncio.get_running_loop()
        self._connected = self._loop.create_future()
        client = self._make_client()
        self._client = client
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.settings.session_expiry_s
        try:
            # The TCP connect and the TLS handshake block: a worker thread. paho writes the
            # CONNECT packet there too (no write hook is set yet); all else is on the loop.
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
        try:
            self._attach(client)
            async with asyncio.timeout(self.settings.connect_timeout_s):
                session_present = await self._connected
        except BaseException:
            await self.close()
            raise
        self.is_connected = True
        return session_present

    def _attach(self, client: paho.Client) -> None:
        """Drive paho from the loop: read when the socket is readable, write while paho has
        bytes queued, run its keepalive once a second."""
        loop = self._loop
        sock = client.socket()
        if loop is None or sock is None:
            raise LinkError(f"broker {self._where()} closed the link while connecting")
        self._sock = sock
        self._sock_closed = asyncio.Event()
        client.on_socket_close = self._paho_socket_close
        client.on_socket_register_write = self._paho_register_write
        client.on_socket_unregister_write = self._paho_unregister_write
        loop.add_reader(sock, self._readable)
        if client.want_write():  # the CONNECT did not all fit in the socket's buffer
            self._start_writing()
        self._keepalive = loop.call_later(1.0, self._tick)

    def _detach(self) -> None:
        """Unregister the socket from the loop (paho closes it, or :meth:`close` does)."""
        sock, self._sock = self._sock, None
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None
        if sock is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(sock)
            if self._writing:
                self._loop.remove_writer(sock)
        self._writing = False
        self._sock_closed.set()

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
        client.on_subscribe = self._paho_subscribe
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

    # paho, driven from the loop ---------------------------------------------------------------

    def _readable(self) -> None:
        client = self._client
        if client is None or self._sock is None:
            return
        try:
            client.loop_read()
        except Exception as exc:  # a callback of ours or paho failed: drop the link
            log.exception("MQTT read failed")
            self._pubacks, self._unrouted = [], []
            self._drop(f"read failed: {exc}")
            return
        self._deliver_pubacks()
        sock = self._sock
        # TLS: paho reads a bounded number of packets per call, and bytes the TLS layer has
        # already decrypted never make the socket readable again.
        if isinstance(sock, ssl.SSLSocket) and sock.pending() and self._loop is not None:
            self._loop.call_soon(self._readable)

    def _writable(self) -> None:
        client = self._client
        if client is None or self._sock is None:
            return
        try:
            client.loop_write()
        except Exception as exc:  # paho failed to write: drop the link
            log.exception("MQTT write failed")
            self._drop(f"write failed: {exc}")
            return
        if self._client is not None and not client.want_write():
            self._stop_writing()

    def _tick(self) -> None:
        """paho's keepalive: PINGREQ when due, and a link without PINGRESP is dropped."""
        client = self._client
        if client is None or self._loop is None:
            return
        if client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS and self._sock is not None:
            self._keepalive = self._loop.call_later(1.0, self._tick)

    def _start_writing(self) -> None:
        if not self._writing and self._sock is not None and self._loop is not None:
            self._writing = True
            self._loop.add_writer(self._sock, self._writable)

    def _stop_writing(self) -> None:
        if self._writing and self._sock is not None and self._loop is not None:
            self._writing = False
            self._loop.remove_writer(self._sock)

    def _drop(self, reason: str) -> None:
        """The link failed outside paho's own handling: close the socket, report it once."""
        sock = self._sock
        self._detach()
        if sock is not None:
            sock.close()
        self._disconnected(reason)

    def _paho_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._start_writing()

    def _paho_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._stop_writing()

    def _paho_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        if sock is self._sock:
            self._detach()

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        # Connect and disconnect are rare; through the loop's queue, so they never run in
        # the middle of paho's own packet handling (and are safe from the connect thread).
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
        for suback in self._subacks.values():
            if not suback.done():
                suback.set_exception(LinkError(f"broker {self._where()} closed the link: {reason}"))
        if was_connected:
            self._on_disconnect(reason)

    def _paho_publish(
        self, client: paho.Client, userdata: Any, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        # Inside paho's read: collected, and handed over once the read is done.
        if reason.value == NO_MATCHING_SUBSCRIBERS and self._on_no_subscribers is not None:
            self._unrouted.append(mid)
        else:
            self._pubacks.append(mid)

    def _deliver_pubacks(self) -> None:
        if self._unrouted and self._on_no_subscribers is not None:
            unrouted, self._unrouted = self._unrouted, []
            self._on_no_subscribers(unrouted)
        if self._pubacks:
            mids, self._pubacks = self._pubacks, []
            self._on_puback(mids)

    def _paho_subscribe(
        self, client: paho.Client, userdata: Any, mid: int, codes: list[ReasonCode], props: Any
    ) -> None:
        suback = self._subacks.get(mid)
        if suback is not None and not suback.done():
            suback.set_result(codes)

    def _paho_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        self._on_message(message.topic, bytes(message.payload))

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
        """Subscribe at QoS 1 (the broker remembers it in our persistent session) and wait
        for the broker's SUBACK: a command sent once this returns is delivered."""
        client = self._client
        loop = self._loop
        if client is None or loop is None:
            raise LinkError("not connected")
        rc, mid = client.subscribe([(t, 1) for t in topics])
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise LinkError(f"subscribe failed: {paho.error_string(rc)}")
        # No SUBACK can be handled before this: paho's callbacks run on this loop.
        suback: asyncio.Future[list[ReasonCode]] = loop.create_future()
        self._subacks[mid] = suback
        try:
            async with asyncio.timeout(self.settings.connect_timeout_s):
                codes = await suback
        except TimeoutError as exc:
            raise LinkError(f"broker {self._where()} did not answer our SUBSCRIBE") from exc
        finally:
            self._subacks.pop(mid, None)
        for name, code in zip(topics, codes, strict=False):
            if code.is_failure:
                # The ACL refuses it: the link still carries the uplink; say so loudly.
                log.error("broker %s refused our subscription to %s: %s", self._where(), name, code)

    async def close(self) -> None:
        """Disconnect cleanly (no Last Will) and close the socket."""
        client = self._client
        self.is_connected = False
        if client is None:
            return
        try:
            if self._sock is not None:
                client.disconnect()
                # paho closes the socket once the DISCONNECT is written; a link that cannot
                # take it in a second (a dead peer, a full buffer) is closed without it, and
                # the broker publishes the Last Will, which is then true.
                client.loop_write()
                if self._sock is not None:
                    self._start_writing()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._sock_closed.wait()
        finally:
            self._client = None
            sock = self._sock
            self._detach()
            if sock is not None:
                sock.close()
