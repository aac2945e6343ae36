"""The cloud's one MQTT client: paho-mqtt 2.x (MQTT 5) behind asyncio.

Every cloud user of the broker goes through this module — the API's commands, the ingest
workers, the dynamic-security admin (:mod:`cloud.devices.broker_auth`) — and no other module
of :mod:`cloud` imports paho. Its errors become :class:`~cloud.errors.BrokerError` here
(:data:`PAHO_ERRORS`; tests/cloud/test_error_boundaries.py holds both promises).

:func:`open_broker_link` keeps one session up for the life of its block
(:class:`BrokerLink`):

* **One paho client per connection.** Each attempt builds a fresh client with paho's own
  reconnect off; when the connection ends the client is dropped, and a task reconnects with
  the project's backoff (:data:`RECONNECT`, exponential with jitter, so a restarted broker is
  not met by every process at once). paho therefore never holds a publish across a
  disconnect to send it behind the caller's back: what was not acknowledged on a connection
  is reported as not sent, and the caller decides (the republish job retries a deferred
  command, :mod:`cloud.sessions.republish`).
* **"Sent" means the broker acknowledged it.** :meth:`BrokerLink.publish` returns once the
  broker's PUBACK (QoS 1) arrives and raises BrokerError when there is no connection, the
  connection ends first, the broker refuses (a failure reason code, e.g. 0x87 not
  authorized) or :data:`PUBLISH_TIMEOUT_S` passes. The two cases where the message was
  handed over but not acknowledged (the connection ended, the timeout) raise the subclass
  :class:`~cloud.errors.BrokerUnacknowledged`: the broker may have it, so a caller waiting
  for the device's answer keeps waiting (:func:`cloud.sessions.commands.send_and_wait`).
  :meth:`BrokerLink.publish_nowait` hands a message over without waiting (ingest's acks: a
  lost one is resent by its device).
* **Incoming messages cross to asyncio through one bounded queue**
  (:attr:`BrokerLink.messages`). A full queue blocks paho's network thread, which stops
  reading the socket: TCP back-pressure, and with ``receive_maximum`` the broker never has
  more unacknowledged messages in flight to us than the queue holds (DESIGN.md §8). The
  thread hands messages over in batches (:class:`_Handoff`): one wake-up of the event loop
  for whatever arrived since the last one, not a blocking round trip per message. With
  ``manual_ack`` a message is PUBACKed only by :meth:`BrokerLink.ack`, and only on the
  connection that delivered it (PUBACK ids mean nothing on another; the broker redelivers).

:func:`request` is the other shape: one blocking round trip on a short connection of its own
(publish a request, wait for the answer on a response topic) — the dynamic-security admin,
which keeps no session to lose.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MQTTException
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import MQTTException as SubscribeOptionsError
from paho.mqtt.subscribeoptions import SubscribeOptions

from cloud.errors import BrokerError, BrokerUnacknowledged, ConfigError
from cloud.settings import MqttSettings
from protocols.backoff import Backoff

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Everything paho raises: the socket's errors (its WebsocketConnectionError is one, and
#: ssl.SSLError), bad arguments (ValueError), and its own MQTTException — two classes of that
#: name, paho.mqtt.exception's and paho.mqtt.subscribeoptions'.
PAHO_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    ValueError,
    MQTTException,
    SubscribeOptionsError,
)
#: Waits between connection attempts (protocols.backoff: exponential, equal jitter).
RECONNECT = Backoff(initial_s=0.5, max_s=30.0)
#: How long :meth:`BrokerLink.publish` waits for the broker's PUBACK.
PUBLISH_TIMEOUT_S = 5.0
#: How long one connection attempt may take, from TCP to CONNACK.
CONNECT_TIMEOUT_S = 10.0
#: A connection that lasted this long resets the backoff; a shorter one counts as a failure.
STABLE_S = 10.0
#: The incoming queue's bound when the caller names none.
QUEUE_MAX = 1000
#: How often a network thread blocked on a full queue checks whether the link is closing.
_BLOCKED_CHECK_S = 0.5
#: A broker that states no Receive Maximum in its CONNACK receives this many (MQTT 5).
MQTT_RECEIVE_MAXIMUM = 65535
#: In flight per connection to start with: deploy/mosquitto/cloud/mosquitto.conf's
#: max_inflight_messages (tests/cloud/test_broker_link.py checks they agree).
IN_FLIGHT = 1000


@dataclass(frozen=True, slots=True)
class BrokerLogin:
    """Where the broker is and who we are to it."""

    host: str
    port: int
    username: str
    password: str
    tls: bool = False
    ca_file: Path | None = None

    @classmethod
    def from_settings(cls, mqtt: MqttSettings) -> BrokerLogin:
        return cls(
            host=mqtt.host,
            port=mqtt.port,
            username=mqtt.username,
            password=mqtt.password.get_secret_value(),
            tls=mqtt.tls,
            ca_file=mqtt.ca_file,
        )

    def where(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Delivery:
    """A message the broker delivered to a :class:`BrokerLink`."""

    topic: str
    payload: bytes
    qos: int
    mid: int
    #: The connection that delivered it (PUBACK ids are valid only on that one).
    connection: int
    #: What the link's ``parse`` made of it in the network thread, as it arrived (None
    #: without a ``parse``, or when it raised: the consumer then parses it again itself).
    parsed: object = None


@contextmanager
def _translated(what: str) -> Iterator[None]:
    """The boundary: a paho error inside the block leaves it as a BrokerError."""
    try:
        yield
    except PAHO_ERRORS as exc:
        raise BrokerError(f"{what}: {exc}") from exc


class _HandshakeClosingSocket(ssl.SSLSocket):
    """paho wraps the socket and calls do_handshake() on a local variable: when the handshake
    fails (a broker restarting) the socket is never closed and leaks until garbage collection,
    once per reconnect attempt. This one closes itself on a failed handshake."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _ssl_context(login: BrokerLogin) -> ssl.SSLContext | None:
    """The TLS context of ``login`` (None without TLS), built once per link: a CA file that
    cannot be read is a configuration error at startup, not a reconnect loop's crash."""
    if not login.tls:
        return None
    try:
        # Verifies the broker's certificate and name (PROTOCOL_TLS_CLIENT's defaults).
        context = ssl.create_default_context(
            cafile=str(login.ca_file) if login.ca_file is not None else None
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(
            f"cannot use the broker's CA file {login.ca_file}: {exc}",
            variable="CHARGEMITRA_MQTT_CA_FILE",
            value=login.ca_file,
        ) from exc
    context.sslsocket_class = _HandshakeClosingSocket
    return context


def _new_client(
    login: BrokerLogin,
    client_id: str,
    *,
    context: ssl.SSLContext | None,
    manual_ack: bool = False,
    in_flight: int = MQTT_RECEIVE_MAXIMUM,
) -> mqtt.Client:
    """A configured, not yet connected MQTT 5 client that never reconnects by itself, with
    up to ``in_flight`` QoS 1 messages unacknowledged (paho can only set it before
    connecting, and its default is 20 whatever the broker allows)."""
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv5,
        reconnect_on_failure=False,
        manual_ack=manual_ack,
    )
    client.max_inflight_messages_set(in_flight)
    client.username_pw_set(login.username, login.password)
    if context is not None:
        client.tls_set_context(context)
    return client


def _properties(packet: int, **values: int) -> Properties:
    props = Properties(packet)  # type: ignore[no-untyped-call]  # paho is untyped here
    for name, value in values.items():
        setattr(props, name, value)
    return props


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the waiter gave up (its timeout) or was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


class _Connection:
    """One paho client's connection: when it is ready (CONNACK, then the SUBACK of its
    subscriptions), when it ends, and its publishes not yet acknowledged."""

    def __init__(self, link: BrokerLink, client: mqtt.Client, number: int) -> None:
        self.link = link
        self.client = client
        self.number = number
        loop = link.loop
        #: Resolved when the broker accepted the connection and granted its subscriptions.
        self.ready: asyncio.Future[None] = loop.create_future()
        self._suback_mid: int | None = None
        self.ended: asyncio.Future[str] = loop.create_future()
        # mid -> its waiter (None: nobody waits), shared with the network thread.
        self._lock = threading.Lock()
        self._waiting: dict[int, asyncio.Future[None] | None] = {}
        # PUBACKs that arrived before their publish() call had registered the mid.
        self._early: dict[int, BrokerError | None] = {}
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message

    # --- paho's network thread --------------------------------------------------------------

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self.link.loop
        if not loop.is_closed():
            loop.call_soon_threadsafe(fn, *args)

    def _on_connect(
        self, client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            refused = BrokerError(f"the broker refused the connection: {reason}")
            self._call(_settle, self.ready, refused)
            return
        # paho ignores the broker's Receive Maximum (MQTT 5, 3.2.2.3.3): its in-flight limit
        # is set before connecting (BrokerLink._in_flight). A broker that receives fewer
        # than that would disconnect us for exceeding it mid-burst: learn its limit and
        # connect again with it.
        receive_maximum = int(getattr(props, "ReceiveMaximum", MQTT_RECEIVE_MAXIMUM))
        if receive_maximum < client.max_inflight_messages:
            self.link._in_flight = receive_maximum
            error = BrokerError(
                f"the broker receives at most {receive_maximum} messages in flight; "
                "connecting again with that limit"
            )
            self._call(_settle, self.ready, error)
            return
        patterns = self.link.subscriptions
        if not patterns:
            self._call(_settle, self.ready, None)
            return
        # Subscribed here, in paho's thread, the moment the broker accepts us (not after a
        # hop to the event loop); the connection is ready at the SUBACK (_on_subscribe).
        try:
            rc, mid = client.subscribe([(p, SubscribeOptions(qos=1)) for p in patterns])
        except PAHO_ERRORS as exc:
            error = BrokerError(f"subscribe to {', '.join(patterns)} failed: {exc}")
            self._call(_settle, self.ready, error)
            return
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            error = BrokerError(f"subscribe failed: {mqtt.error_string(rc)}")
            self._call(_settle, self.ready, error)
            return
        # Before any SUBACK can be read: this thread reads it, after this callback returns.
        self._suback_mid = mid

    def _on_subscribe(
        self,
        _client: mqtt.Client,
        _userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        _props: Any,
    ) -> None:
        if mid != self._suback_mid:
            return
        refused = [str(r) for r in reasons if r.is_failure]
        error = BrokerError(f"the broker refused a subscription: {refused}") if refused else None
        self._call(_settle, self.ready, error)

    def _on_disconnect(
        self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        self._call(self._end, str(reason))

    def _on_publish(
        self, _client: mqtt.Client, _userdata: Any, mid: int, reason: ReasonCode, _props: Any
    ) -> None:
        error = (
            BrokerError(f"the broker refused the message: {reason}") if reason.is_failure else None
        )
        with self._lock:
            if mid not in self._waiting:
                self._early[mid] = error
                return
            waiter = self._waiting.pop(mid)
        if waiter is not None:
            self._call(_settle, waiter, error)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        payload = bytes(msg.payload)
        parsed = self.link.parse_delivery(msg.topic, payload)
        self.link.deliver(Delivery(msg.topic, payload, msg.qos, msg.mid, self.number, parsed))

    # --- asyncio side -----------------------------------------------------------------------

    def _end(self, reason: str) -> None:
        self.link._live.pop(self.number, None)
        if not self.ended.done():
            self.ended.set_result(reason)
        if not self.ready.done():
            self.ready.set_exception(
                BrokerError(f"connection closed before it was ready: {reason}")
            )
        with self._lock:
            waiters = [w for w in self._waiting.values() if w is not None]
            self._waiting.clear()
            self._early.clear()
        for waiter in waiters:
            _settle(
                waiter,
                BrokerUnacknowledged(f"connection lost before the broker acknowledged: {reason}"),
            )

    def publish(
        self, topic: str, payload: bytes, *, expiry_s: int | None, wait: bool, qos: int = 1
    ) -> asyncio.Future[None] | None:
        properties = None
        if expiry_s is not None:
            properties = _properties(PacketTypes.PUBLISH, MessageExpiryInterval=expiry_s)
        with _translated(f"publish to {topic} failed"):
            info = self.client.publish(topic, payload, qos=qos, properties=properties)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise BrokerError(f"publish to {topic} failed: {mqtt.error_string(info.rc)}")
        waiter = self.link.loop.create_future() if wait else None
        with self._lock:
            early = info.mid in self._early
            error = self._early.pop(info.mid, None)
            if not early:
                self._waiting[info.mid] = waiter
        if early and waiter is not None:
            _settle(waiter, error)
        return waiter

    def forget(self, waiter: asyncio.Future[None]) -> None:
        with self._lock:
            for mid, w in list(self._waiting.items()):
                if w is waiter:
                    self._waiting[mid] = None

    async def close(self) -> None:
        """Disconnect (if still connected) and stop the network thread."""
        with _translated("disconnect failed"):
            self.client.disconnect()
        # In a thread: the network thread may be waiting on this loop (a full queue).
        await asyncio.to_thread(self.client.loop_stop)
        self._end("closed")


class BrokerLink:
    """One MQTT 5 session kept up for the life of :func:`open_broker_link`'s block."""

    def __init__(
        self,
        login: BrokerLogin,
        client_id: str,
        *,
        keepalive_s: int = 30,
        subscriptions: Sequence[str] = (),
        manual_ack: bool = False,
        clean_start: bool = True,
        session_expiry_s: int | None = None,
        receive_maximum: int | None = None,
        queue_max: int = QUEUE_MAX,
        backoff: Backoff = RECONNECT,
        parse: Callable[[str, bytes], object] | None = None,
    ) -> None:
        self.login = login
        #: Run on each message in the network thread before it is queued (Delivery.parsed).
        self._parse = parse
        self.client_id = client_id
        #: Built once (ConfigError here, at startup, if the CA file cannot be read).
        self._ssl = _ssl_context(login)
        self.loop = asyncio.get_running_loop()
        self._handoff = _Handoff(self.loop, queue_max)
        #: What the broker delivered, bounded: a full queue pauses the network thread.
        self.messages: asyncio.Queue[Delivery] = self._handoff.queue
        self._keepalive_s = keepalive_s
        #: Topic filters subscribed (QoS 1) on every connection, as soon as it is accepted.
        self.subscriptions = tuple(subscriptions)
        self._manual_ack = manual_ack
        self._clean_start = clean_start
        self._connect_values = {
            name: value
            for name, value in (
                ("SessionExpiryInterval", session_expiry_s),
                ("ReceiveMaximum", receive_maximum),
            )
            if value is not None
        }
        self._backoff = backoff
        #: QoS 1 messages a connection keeps unacknowledged: the shipped cloud broker's
        #: max_inflight_messages, lowered to what a broker's CONNACK says it receives. With
        #: paho's default of 20, ingest's acks (one per device per batch) queued behind 20
        #: round trips in bench.fleet's reconnect storm until paho's packet ids wrapped onto
        #: unacknowledged ones and it refused publishes ("Message queue full"): tens of
        #: thousands of acks dropped, their devices resending after their ack timeout.
        self._in_flight = IN_FLIGHT
        self._closing = threading.Event()
        self._current: _Connection | None = None
        #: Connections not yet ended, by number (what :meth:`ack` answers through).
        self._live: dict[int, _Connection] = {}
        self._up = asyncio.Event()
        #: Failed connection attempts in a row (the backoff's exponent).
        self._attempts = 0
        #: The broker's unavailability was logged (at WARNING, once per outage).
        self._unavailable = False
        #: Connections made so far; each delivery carries its connection's number.
        self._number = 0

    @property
    def connected(self) -> bool:
        """Connected, and the subscriptions granted."""
        return self._current is not None

    async def wait_connected(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for :attr:`connected`; whether it is."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._up.wait()
        except TimeoutError:
            return False
        return True

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        expiry_s: int | None = None,
        timeout_s: float = PUBLISH_TIMEOUT_S,
    ) -> None:
        """Publish QoS 1 and return once the broker acknowledged it (PUBACK); raise
        BrokerError if it did not: :class:`~cloud.errors.BrokerUnacknowledged` when the
        message was handed to the connection but no PUBACK came (timeout, connection lost;
        the broker may have it), a plain BrokerError when nothing was handed over (not
        connected, paho refused it) or the broker refused it. ``expiry_s`` sets the MQTT 5
        Message Expiry Interval (the broker drops it, undelivered, after that long)."""
        connection = self._connection(topic)
        waiter = connection.publish(topic, payload, expiry_s=expiry_s, wait=True)
        assert waiter is not None
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
        except TimeoutError:
            connection.forget(waiter)
            raise BrokerUnacknowledged(f"no PUBACK for {topic} within {timeout_s} s") from None

    def publish_nowait(
        self, topic: str, payload: bytes, *, expiry_s: int | None = None, qos: int = 1
    ) -> None:
        """Hand a message (QoS 1, or ``qos``) to the connection without waiting for the
        broker; raise BrokerError only when there is no connection to hand it to. (paho
        reports a QoS 0 message "published" once written: its entry is settled then.)"""
        self._connection(topic).publish(topic, payload, expiry_s=expiry_s, wait=False, qos=qos)

    def ack(self, delivery: Delivery) -> None:
        """PUBACK ``delivery`` (``manual_ack`` links); nothing if the connection that
        delivered it has ended (the broker redelivers it, or drops it with the session)."""
        # Through the delivering connection, not ``_current``: a connection delivers before
        # the run loop makes it current (a persistent session's queue arrives right after the
        # CONNACK) and until its end is seen, when ``_current`` may already be None.
        connection = self._live.get(delivery.connection)
        if delivery.qos == 0 or connection is None or connection.ended.done():
            return
        with _translated("PUBACK failed"):
            connection.client.ack(delivery.mid, delivery.qos)

    def _connection(self, topic: str) -> _Connection:
        current = self._current
        if current is None:
            raise BrokerError(f"not connected to the broker: {topic} not published")
        return current

    # --- paho's network thread --------------------------------------------------------------

    def parse_delivery(self, topic: str, payload: bytes) -> object:
        """``parse`` of one message, in the network thread; None without one or if it raised
        (never lost: the consumer parses the payload again and meets the error there)."""
        if self._parse is None:
            return None
        try:
            return self._parse(topic, payload)
        except Exception:  # noqa: BLE001 -- left to the consumer, as the docstring says
            return None

    def deliver(self, delivery: Delivery) -> None:
        """Queue ``delivery``, blocking the network thread while the queue is full."""
        self._handoff.put(delivery, self._closing)

    # --- the connection task ----------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect whenever the connection ends, until cancelled."""
        where = self.login.where()
        while True:
            try:
                connection = await self._connect()
            except BrokerError as exc:
                # Once at WARNING, then quietly: a broker down for an hour is no log storm.
                level = logging.DEBUG if self._unavailable else logging.WARNING
                log.log(level, "broker at %s unavailable, retrying: %s", where, exc)
                self._unavailable = True
                await asyncio.sleep(self._backoff.delay_s(self._attempts))
                self._attempts += 1
                continue
            log.info("connected to the broker at %s", where)
            self._unavailable = False
            up_since = self.loop.time()
            self._current = connection
            self._up.set()
            try:
                reason = await connection.ended
            finally:
                self._current = None
                self._up.clear()
                await connection.close()
            log.warning("disconnected from the broker at %s: %s", where, reason)
            # A connection that ends at once (another process took over our client id, the
            # broker kicks us) counts as a failed attempt, so it cannot become a tight loop.
            stable = self.loop.time() - up_since >= STABLE_S
            self._attempts = 0 if stable else self._attempts + 1
            await asyncio.sleep(self._backoff.delay_s(self._attempts))

    async def _connect(self) -> _Connection:
        self._number += 1
        with _translated("cannot create the MQTT client"):
            client = _new_client(
                self.login,
                self.client_id,
                context=self._ssl,
                manual_ack=self._manual_ack,
                in_flight=self._in_flight,
            )
            connection = _Connection(self, client, self._number)
            properties = None
            if self._connect_values:
                properties = _properties(PacketTypes.CONNECT, **self._connect_values)
        # Registered before the network thread starts: it may deliver at once.
        self._live[connection.number] = connection
        try:
            await self._open(connection, properties)
        except BaseException:
            self._live.pop(connection.number, None)
            raise
        return connection

    async def _open(self, connection: _Connection, properties: Properties | None) -> None:
        client = connection.client
        # In a worker thread: paho's connect() blocks (TCP, TLS; bounded by its
        # connect_timeout, 5 s), and the network thread is started there too, so the CONNACK
        # and the subscriptions never wait for this event loop's turn.
        connecting = asyncio.ensure_future(
            asyncio.to_thread(
                self._connect_socket, client, properties, self._clean_start, self._keepalive_s
            )
        )
        try:
            await asyncio.shield(connecting)
        except asyncio.CancelledError:
            connecting.add_done_callback(lambda done: _abandon(client, done))
            raise
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                await connection.ready
        except TimeoutError:
            await connection.close()
            raise BrokerError(f"no CONNACK or SUBACK within {CONNECT_TIMEOUT_S} s") from None
        except BaseException:
            await connection.close()
            raise

    def _connect_socket(
        self, client: mqtt.Client, properties: Properties | None, clean_start: bool, keepalive: int
    ) -> None:
        with _translated(f"cannot connect to {self.login.where()}"):
            client.connect(
                self.login.host,
                self.login.port,
                keepalive=keepalive,
                clean_start=clean_start,
                properties=properties,
            )
        client.loop_start()

    def stop_receiving(self) -> None:
        """Let a network thread blocked on a full queue go (the link is closing)."""
        self._closing.set()


class _Handoff:
    """Deliveries from paho's network thread to the event loop, in batches.

    The thread appends to a pending list and wakes the loop only when no wake-up is already
    on its way; the loop moves the whole list into :attr:`queue` at once. Per message that
    is a lock and an append, where ``run_coroutine_threadsafe(queue.put(...))`` and waiting
    for its result cost a task, a self-pipe write and two thread switches each (measured in
    bench.fleet: about a fifth of an ingest worker's CPU at 2,500 sites).

    The bound is kept here, not by ``queue``'s maxsize (the loop's move must never block):
    the thread waits while pending plus queued reach ``queue_max``, and every ``get`` from
    the queue lets it go on (:class:`_TakenQueue`).
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, queue_max: int) -> None:
        self._loop = loop
        self._max = queue_max
        self._room = threading.Condition()
        self._pending: list[Delivery] = []
        self._scheduled = False
        self._waiting = False
        self.queue: asyncio.Queue[Delivery] = _TakenQueue(self._taken)

    def put(self, delivery: Delivery, closing: threading.Event) -> None:
        """In the network thread: hand ``delivery`` over, waiting while the queue is full;
        dropped if ``closing`` is set meanwhile (the broker redelivers it: it was never
        acknowledged, or its session ends with the link)."""
        with self._room:
            # qsize() from this thread: a length read under the GIL; at worst one stale read
            # makes the thread wait one more round.
            while len(self._pending) + self.queue.qsize() >= self._max:
                if closing.is_set():
                    return
                self._waiting = True
                self._room.wait(_BLOCKED_CHECK_S)
            self._pending.append(delivery)
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._move)
        except RuntimeError:  # the event loop is closing: the broker will redeliver
            return

    def _move(self) -> None:
        """On the loop: everything pending into the queue, in arrival order."""
        with self._room:
            batch, self._pending = self._pending, []
            self._scheduled = False
        for delivery in batch:
            self.queue.put_nowait(delivery)

    def _taken(self) -> None:
        """On the loop, after every get: let a thread waiting for room go on. (The flag is
        read without the lock: a wait that begins just after this read is missed and ends at
        its ``_BLOCKED_CHECK_S`` timeout instead.)"""
        if self._waiting:
            with self._room:
                self._waiting = False
                self._room.notify()


class _TakenQueue(asyncio.Queue[Delivery]):
    """An unbounded queue that reports each item taken (its bound is :class:`_Handoff`'s)."""

    def __init__(self, taken: Callable[[], None]) -> None:
        super().__init__()
        self._taken_callback = taken

    def _get(self) -> Delivery:
        # asyncio.Queue's documented hook for subclasses (LifoQueue, PriorityQueue): every
        # get() and get_nowait() goes through it.
        item: Delivery = super()._get()
        self._taken_callback()
        return item


def _abandon(client: mqtt.Client, connecting: asyncio.Future[None]) -> None:
    """A connection whose caller was cancelled while it was being made: end it (the network
    thread sends DISCONNECT and, paho's reconnect being off, stops)."""
    if connecting.cancelled() or connecting.exception() is not None:
        return
    with _translated("disconnect failed"):
        client.disconnect()


@asynccontextmanager
async def open_broker_link(
    settings: MqttSettings,
    client_id: str,
    *,
    subscriptions: Sequence[str] = (),
    manual_ack: bool = False,
    clean_start: bool = True,
    session_expiry_s: int | None = None,
    receive_maximum: int | None = None,
    queue_max: int = QUEUE_MAX,
    parse: Callable[[str, bytes], object] | None = None,
) -> AsyncIterator[BrokerLink]:
    """A :class:`BrokerLink` for the block: it connects in the background (the broker may be
    down at start: ``connected`` says when it is up), and disconnects on exit. ``parse``:
    run on each incoming message (topic, payload) in the network thread as it arrives, its
    result in :attr:`Delivery.parsed`."""
    link = BrokerLink(
        BrokerLogin.from_settings(settings),
        client_id,
        keepalive_s=settings.keepalive_s,
        subscriptions=subscriptions,
        manual_ack=manual_ack,
        clean_start=clean_start,
        session_expiry_s=session_expiry_s,
        receive_maximum=receive_maximum,
        queue_max=queue_max,
        parse=parse,
    )
    # A TaskGroup, so a crash of the link's task cancels the block rather than leaving it to
    # run without a broker. But a TaskGroup wraps whatever leaves the block in an
    # ExceptionGroup, and the callers (the API's lifespan, the ingest worker, their CLIs)
    # catch CloudError and friends: a single exception is unwrapped at this boundary and
    # re-raised as itself (a startup failure after the link is entered, e.g. Redis down,
    # keeps its type and traceback).
    single: BaseException | None = None
    try:
        async with asyncio.TaskGroup() as tasks:
            task = tasks.create_task(link.run(), name=f"broker-link-{client_id}")
            try:
                yield link
            finally:
                # First, so a network thread blocked on a full queue lets go before it is
                # joined.
                link.stop_receiving()
                task.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) != 1:
            raise
        single = group.exceptions[0]
    if single is not None:
        # Outside the except clause: its cause and context stay its own, not the group.
        raise single


def request(
    login: BrokerLogin,
    client_id: str,
    *,
    topic: str,
    payload: bytes,
    response_topic: str,
    answer: Callable[[bytes], T | None],
    timeout_s: float,
) -> T:
    """One blocking round trip on a connection of its own: subscribe to ``response_topic``,
    publish ``payload`` to ``topic`` (QoS 1), and return the first ``answer(payload)`` of a
    response that is not None. BrokerError if the broker refuses, the connection ends or
    ``timeout_s`` passes at either step. paho runs in the caller's thread (no network
    thread): call it from a worker thread in async code."""
    with _translated("cannot create the MQTT client"):
        client = _new_client(login, client_id, context=_ssl_context(login))
    refused: list[str] = []
    subscribed: list[bool] = []
    answered: list[T] = []

    def on_connect(c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        else:
            c.subscribe(response_topic, qos=1)

    def on_subscribe(
        _c: mqtt.Client, _u: Any, _mid: int, reasons: list[ReasonCode], _p: Any
    ) -> None:
        if any(r.is_failure for r in reasons):
            refused.append(f"subscription to {response_topic}: {reasons[0]}")
        else:
            subscribed.append(True)

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        if answered:
            return
        value = answer(bytes(msg.payload))
        if value is not None:
            answered.append(value)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    with _translated(f"cannot reach the broker at {login.where()}"):
        client.connect(login.host, login.port, keepalive=30)
    try:
        deadline = time.monotonic() + timeout_s
        _loop_until(client, lambda: bool(subscribed or refused), deadline)
        if refused:
            raise BrokerError(f"the broker refused {login.username}: {refused[0]}")
        if not subscribed:
            raise BrokerError(f"the broker did not accept {login.username} within {timeout_s} s")
        with _translated(f"publish to {topic} failed"):
            client.publish(topic, payload, qos=1)
        _loop_until(client, lambda: bool(answered), time.monotonic() + timeout_s)
        if not answered:
            raise BrokerError(f"no answer on {response_topic} within {timeout_s} s")
        return answered[0]
    finally:
        with _translated("disconnect failed"):
            client.disconnect()


def _loop_until(client: mqtt.Client, done: Callable[[], bool], deadline: float) -> None:
    """Run paho's network loop in this thread until ``done()`` or ``deadline``."""
    while not done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        with _translated("broker connection failed"):
            rc = client.loop(timeout=min(remaining, 0.1))
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            if done():  # a refusal ends the connection in the same step
                return
            raise BrokerError(f"broker connection lost: {mqtt.error_string(rc)}")
