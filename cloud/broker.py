"""The cloud's one MQTT client: MQTT 5 on an asyncio protocol of our own.

Every cloud user of the broker goes through this module — the API's commands, the ingest
workers, the dynamic-security admin (:mod:`cloud.devices.broker_auth`). The packets are
:mod:`protocols.mqtt5`'s (shared with the fleet simulator); socket, TLS and protocol errors
become :class:`~cloud.errors.BrokerError` here (tests/cloud/test_error_boundaries.py).

Why not paho-mqtt (which the edge agent uses): paho runs a network thread per client, and in
an ingest worker at 3,000 sites that thread — parsing each packet in Python, and for every
PUBACK and ack a lock, a wake-up of the thread through its socket pair and a ``send`` of its
own — cost about as much CPU as everything else the worker does (docs/scale.md). On the
event loop a segment's packets are read in one pass, answers leave in the same write as
whatever else this turn of the loop sends, and nothing crosses threads.

:func:`open_broker_link` keeps one session up for the life of its block
(:class:`BrokerLink`):

* **One connection at a time, reconnected by the link.** When a connection ends, a task
  reconnects with the project's backoff (:data:`RECONNECT`, exponential with jitter, so a
  restarted broker is not met by every process at once). Nothing is resent behind the
  caller's back: what was not acknowledged on a connection is reported as not sent, and the
  caller decides (the republish job retries a deferred command,
  :mod:`cloud.sessions.republish`).
* **"Sent" means the broker acknowledged it.** :meth:`BrokerLink.publish` returns once the
  broker's PUBACK (QoS 1) arrives and raises BrokerError when there is no connection, the
  connection ends first, the broker refuses (a failure reason code, e.g. 0x87 not
  authorized) or :data:`PUBLISH_TIMEOUT_S` passes. The two cases where the message was
  written to the connection but not acknowledged (the connection ended, the timeout) raise
  the subclass :class:`~cloud.errors.BrokerUnacknowledged`: the broker may have it, so a
  caller waiting for the device's answer keeps waiting
  (:func:`cloud.sessions.commands.send_and_wait`). :meth:`BrokerLink.publish_nowait` hands a
  message over without waiting (ingest's acks: a lost one is resent by its device).
* **The broker's Receive Maximum is obeyed** (MQTT 5, 3.3.4): at most that many QoS 1
  publishes await their PUBACK; the rest wait in order on the connection and go as PUBACKs
  free room. Exceeding it is a protocol error the broker disconnects for.
* **Incoming messages wait in one queue** (:attr:`BrokerLink.messages`). When it holds
  ``queue_max`` the connection stops reading its socket until the consumer takes one: TCP
  back-pressure, and with ``receive_maximum`` the broker never has more unacknowledged
  messages in flight to us than that (DESIGN.md §8). With ``manual_ack`` a message is
  PUBACKed only by :meth:`BrokerLink.ack`, and only on the connection that delivered it
  (packet ids mean nothing on another; the broker redelivers).
* **A silent broker is noticed**: a PINGREQ every half keep-alive interval (the broker's
  Server Keep Alive when its CONNACK states one), and a connection that heard nothing at all
  for a whole interval with one unanswered is closed and reconnected.

:func:`request` is the other shape: one blocking round trip on a short connection of its own
(publish a request, wait for the answer on a response topic) — the dynamic-security admin,
which keeps no session to lose.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from cloud.errors import BrokerError, BrokerUnacknowledged, ConfigError
from cloud.settings import MqttSettings
from protocols import mqtt5
from protocols.backoff import Backoff
from protocols.errors import MqttPacketError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Waits between connection attempts (protocols.backoff: exponential, equal jitter).
RECONNECT = Backoff(initial_s=0.5, max_s=30.0)
#: How long :meth:`BrokerLink.publish` waits for the broker's PUBACK.
PUBLISH_TIMEOUT_S = 5.0
#: How long one connection attempt may take, from TCP (and TLS) to CONNACK and SUBACK.
CONNECT_TIMEOUT_S = 10.0
#: A connection that lasted this long resets the backoff; a shorter one counts as a failure.
STABLE_S = 10.0
#: The incoming queue's bound when the caller names none.
QUEUE_MAX = 1000


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
    #: What the link's ``parse`` made of it as it arrived (None without a ``parse``, or when
    #: it raised: the consumer then parses it again itself).
    parsed: object = None


def _ssl_context(login: BrokerLogin) -> ssl.SSLContext | None:
    """The TLS context of ``login`` (None without TLS), built once per link: a CA file that
    cannot be read is a configuration error at startup, not a reconnect loop's crash."""
    if not login.tls:
        return None
    try:
        # Verifies the broker's certificate and name (PROTOCOL_TLS_CLIENT's defaults).
        return ssl.create_default_context(
            cafile=str(login.ca_file) if login.ca_file is not None else None
        )
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise ConfigError(
            f"cannot use the broker's CA file {login.ca_file}: {exc}",
            variable="CHARGEMITRA_MQTT_CA_FILE",
            value=login.ca_file,
        ) from exc


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # the waiter gave up (its timeout) or was cancelled
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)


def _fail(future: asyncio.Future[T], error: BaseException) -> None:
    """Settle ``future`` with ``error`` whether or not anyone awaits it any more (no "never
    retrieved" noise for a connection nobody was waiting on)."""
    if not future.done():
        future.set_exception(error)
        future.exception()


@dataclass(slots=True)
class _Queued:
    """A QoS 1 publish waiting for room under the broker's Receive Maximum."""

    topic: str
    payload: bytes
    expiry_s: int | None
    waiter: asyncio.Future[None] | None


class _Connection(asyncio.Protocol):
    """One connection: its handshake (CONNACK, then the SUBACK of the link's subscriptions),
    the packets that arrive on it, its publishes awaiting PUBACK, its keep-alive."""

    def __init__(self, link: BrokerLink, number: int) -> None:
        self.link = link
        self.number = number
        loop = link.loop
        #: Resolved when the broker accepted the connection and granted its subscriptions.
        self.ready: asyncio.Future[None] = loop.create_future()
        #: Resolved with the reason when the connection ends.
        self.ended: asyncio.Future[str] = loop.create_future()
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        #: Packets held while corked (:meth:`cork`), written as one on :meth:`uncork`.
        self._out: list[bytes] = []
        self._corked = 0
        self._connacked = False
        self._suback_id = 0
        self._last_id = 0
        #: QoS 1 publishes written and not yet PUBACKed: packet id -> their waiter, if any.
        self._in_flight: dict[int, asyncio.Future[None] | None] = {}
        #: QoS 1 publishes beyond the broker's Receive Maximum, in order.
        self._queued: deque[_Queued] = deque()
        #: What the broker receives in flight (its CONNACK says; 3.2.2.3.3).
        self.receive_maximum = mqtt5.DEFAULT_RECEIVE_MAXIMUM
        self._max_packet: int | None = None
        self.keepalive_s = link.keepalive_s
        self._ping: asyncio.TimerHandle | None = None
        #: Ping ticks (half a keep-alive apart) since the broker last sent anything.
        self._silent_ticks = 0
        #: Why the broker ended it (its DISCONNECT), or why we did.
        self._reason: str | None = None
        #: Reading is paused: the link's queue is full.
        self.paused = False

    # --- the transport's callbacks -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A cast, not an isinstance check: uvloop's transports (the API under uvicorn) are not
        # subclasses of asyncio.Transport, though they are one in every way used here.
        self._transport = cast("asyncio.Transport", transport)
        link = self.link
        self._transport.write(
            mqtt5.connect(
                link.client_id,
                link.login.username,
                link.login.password,
                keepalive_s=link.keepalive_s,
                clean_start=link.clean_start,
                session_expiry_s=link.session_expiry_s,
                receive_maximum=link.receive_maximum,
            )
        )

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        self._silent_ticks = 0
        at = 0
        # The answers to a segment's packets (PUBACKs, publishes freed by PUBACKs) leave in
        # one write.
        self.cork()
        try:
            while True:
                body = mqtt5.frame(buffer, at)
                if body is None:  # the rest of it is still on its way
                    break
                first = buffer[at]
                start, at = body
                self._packet(first >> 4, first & 0x0F, bytes(buffer[start:at]))
                if self._transport is None or self._transport.is_closing():
                    return
        except MqttPacketError as exc:
            self.abort(f"the broker sent a packet this client cannot read: {exc}")
            return
        finally:
            self.uncork()
        if at:
            del buffer[:at]

    def connection_lost(self, exc: Exception | None) -> None:
        if self._reason is None:
            self._reason = f"connection lost: {exc}" if exc else "connection closed"
        self._end(self._reason)

    # --- packets in ----------------------------------------------------------------------------

    def _packet(self, kind: int, flags: int, data: bytes) -> None:
        if kind == mqtt5.PUBLISH:
            self._incoming(flags, data)
        elif kind == mqtt5.PUBACK:
            self._acked(*mqtt5.read_ack(data))
        elif kind == mqtt5.PINGRESP:
            pass
        elif kind == mqtt5.CONNACK and not self._connacked:
            self._on_connack(mqtt5.read_connack(data))
        elif kind == mqtt5.SUBACK:
            self._on_suback(*mqtt5.read_suback(data))
        elif kind == mqtt5.DISCONNECT:
            code, text = mqtt5.read_disconnect(data)
            said = f" ({text})" if text else ""
            self.abort(f"the broker disconnected: {mqtt5.reason_text(code)}{said}")
        else:
            raise MqttPacketError(f"unexpected packet type {kind}")

    def _on_connack(self, connack: mqtt5.Connack) -> None:
        self._connacked = True
        if connack.reason >= 0x80:
            said = f": {connack.reason_string}" if connack.reason_string else ""
            refused = f"the broker refused the connection: {mqtt5.reason_text(connack.reason)}"
            _fail(self.ready, BrokerError(refused + said))
            self.abort(refused)
            return
        self.receive_maximum = connack.receive_maximum
        self._max_packet = connack.maximum_packet_size
        if connack.server_keepalive_s is not None:  # the broker's word wins (3.2.2.3.14)
            self.keepalive_s = connack.server_keepalive_s
        self._schedule_ping()
        subscriptions = self.link.subscriptions
        if not subscriptions:
            _settle(self.ready, None)
            return
        self._suback_id = self._next_id()
        self._write(mqtt5.subscribe(self._suback_id, subscriptions))

    def _on_suback(self, packet_id: int, reasons: list[int]) -> None:
        if packet_id != self._suback_id:
            return
        refused = [mqtt5.reason_text(r) for r in reasons if r >= 0x80]
        if refused:
            message = f"the broker refused a subscription: {', '.join(refused)}"
            _fail(self.ready, BrokerError(message))
            self.abort(message)
            return
        _settle(self.ready, None)

    def _incoming(self, flags: int, data: bytes) -> None:
        topic, qos, packet_id, payload = mqtt5.read_publish(flags, data)
        link = self.link
        delivery = Delivery(
            topic, payload, qos, packet_id, self.number, link.parse_delivery(topic, payload)
        )
        if qos and not link.manual_ack:
            self._write(mqtt5.puback(packet_id))
        link.deliver(delivery, self)

    def _acked(self, packet_id: int, reason: int) -> None:
        if packet_id not in self._in_flight:
            return  # a waiter already settled by a lost connection's end: nothing to do
        waiter = self._in_flight.pop(packet_id)
        if waiter is not None:
            error = None
            if reason >= 0x80:
                refusal = mqtt5.reason_text(reason)
                error = BrokerError(f"the broker refused the message: {refusal}")
            _settle(waiter, error)
        queued = self._queued
        while queued and len(self._in_flight) < self.receive_maximum:
            item = queued.popleft()
            self._send(item.topic, item.payload, item.expiry_s, item.waiter)

    # --- packets out ---------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        if self._corked:
            self._out.append(data)
            return
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.write(data)

    def cork(self) -> None:
        """Hold packets until :meth:`uncork` (nested: the outermost one writes).

        Why: a transport writes at once when its buffer is empty, one ``send`` per packet, and
        on loopback each ``send`` also runs the receiving side's TCP stack. An ingest batch
        answers hundreds of messages (an ack and a PUBACK each); py-spy put a quarter of a
        worker's event loop in those sends at 1,500 sites. Measured, the saving is smaller:
        the workers' CPU 0.556-0.565 -> 0.541 cores and the broker's 0.122-0.124 -> 0.114
        (bench.fleet, docs/fleet.md), about the size of the run-to-run noise."""
        self._corked += 1

    def uncork(self) -> None:
        self._corked -= 1
        if self._corked or not self._out:
            return
        data = b"".join(self._out)
        self._out.clear()
        self._write(data)

    def _next_id(self) -> int:
        """A packet id not in use on this connection (2.2.1)."""
        while True:
            self._last_id = self._last_id % 65535 + 1
            if self._last_id not in self._in_flight:
                return self._last_id

    def _send(
        self, topic: str, payload: bytes, expiry_s: int | None, waiter: asyncio.Future[None] | None
    ) -> None:
        packet_id = self._next_id()
        self._in_flight[packet_id] = waiter
        self._write(mqtt5.publish(topic, payload, qos=1, packet_id=packet_id, expiry_s=expiry_s))

    def publish(
        self, topic: str, payload: bytes, *, expiry_s: int | None, wait: bool, qos: int = 1
    ) -> asyncio.Future[None] | None:
        """Write (or queue, past the Receive Maximum) one publish; its waiter if ``wait``."""
        transport = self._transport
        if self.ended.done() or transport is None or transport.is_closing():
            raise BrokerError(f"not connected to the broker: {topic} not published")
        if self._max_packet is not None:
            # The broker would disconnect us for it (3.1.2.11.4): refuse it here instead.
            size = len(mqtt5.publish(topic, payload, qos=qos, packet_id=1, expiry_s=expiry_s))
            if size > self._max_packet:
                raise BrokerError(
                    f"publish to {topic} is {size} bytes, "
                    f"the broker's Maximum Packet Size is {self._max_packet}"
                )
        try:
            mqtt5.check_topic_name(topic)
            mqtt5.check_expiry(expiry_s)
        except MqttPacketError as exc:
            raise BrokerError(f"publish to {topic!r} refused: {exc}") from exc
        waiter = self.link.loop.create_future() if wait else None
        if qos == 0:
            self._write(mqtt5.publish(topic, payload, qos=0, expiry_s=expiry_s))
            if waiter is not None:
                waiter.set_result(None)
        elif len(self._in_flight) < self.receive_maximum and not self._queued:
            self._send(topic, payload, expiry_s, waiter)
        else:
            self._queued.append(_Queued(topic, payload, expiry_s, waiter))
        return waiter

    def withdraw(self, waiter: asyncio.Future[None]) -> bool:
        """Take the publish of ``waiter`` back if it still waits for room; whether it did."""
        for item in self._queued:
            if item.waiter is waiter:
                self._queued.remove(item)
                return True
        return False

    def puback(self, packet_id: int) -> None:
        self._write(mqtt5.puback(packet_id))

    # --- keep-alive, reading, ending -----------------------------------------------------------

    def _schedule_ping(self) -> None:
        # Every half interval: the gap between our packets must never exceed the keep-alive
        # (3.1.2.10), and a timer on a busy event loop fires late.
        if self.keepalive_s > 0:
            self._ping = self.link.loop.call_later(self.keepalive_s / 2, self._on_ping_timer)

    def _on_ping_timer(self) -> None:
        self._silent_ticks += 1
        # A whole interval with a PINGREQ unanswered; not while reading is paused (the
        # broker's answer may be in the unread bytes).
        if self._silent_ticks > 2 and not self.paused:
            self.abort(f"no word from the broker for a keep-alive interval ({self.keepalive_s} s)")
            return
        self._write(mqtt5.pingreq())
        self._schedule_ping()

    def pause(self) -> None:
        if not self.paused and self._transport is not None:
            self.paused = True
            self._transport.pause_reading()

    def resume(self) -> None:
        if self.paused and self._transport is not None:
            self.paused = False
            if not self._transport.is_closing():
                self._transport.resume_reading()

    def abort(self, reason: str) -> None:
        """End the connection at once, for ``reason`` (no DISCONNECT: a broker that broke the
        protocol or said goodbye gets none)."""
        if self._reason is None:
            self._reason = reason
        self._out.clear()
        if self._transport is not None:
            self._transport.abort()
        self._end(reason)

    def close(self) -> None:
        """Say goodbye (DISCONNECT, normal: the broker drops the Will) and close."""
        if self._reason is None:
            self._reason = "closed"
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(self._out) + mqtt5.disconnect())
            self._out.clear()
            self._transport.close()
        self._end(self._reason)

    def _end(self, reason: str) -> None:
        if self.ended.done():
            return
        self.ended.set_result(reason)
        if self._ping is not None:
            self._ping.cancel()
        self.link.ended(self)
        _fail(self.ready, BrokerError(f"connection closed before it was ready: {reason}"))
        for waiter in self._in_flight.values():
            if waiter is not None:
                _settle(
                    waiter,
                    BrokerUnacknowledged(
                        f"connection lost before the broker acknowledged: {reason}"
                    ),
                )
        for item in self._queued:
            if item.waiter is not None:
                _settle(item.waiter, BrokerError(f"connection lost before it was sent: {reason}"))
        self._in_flight.clear()
        self._queued.clear()


class _TakenQueue(asyncio.Queue[Delivery]):
    """An unbounded queue that reports each item taken (its bound is the link's, which
    pauses reading instead of refusing a message already read)."""

    def __init__(self, taken: Callable[[], None]) -> None:
        super().__init__()
        self._taken_callback = taken

    def _get(self) -> Delivery:
        # asyncio.Queue's documented hook for subclasses (LifoQueue, PriorityQueue): every
        # get() and get_nowait() goes through it.
        item: Delivery = super()._get()
        self._taken_callback()
        return item


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
        #: Run on each message as it arrives, before it is queued (Delivery.parsed).
        self._parse = parse
        self.client_id = client_id
        #: Built once (ConfigError here, at startup, if the CA file cannot be read).
        self._ssl = _ssl_context(login)
        self.loop = asyncio.get_running_loop()
        self._queue_max = queue_max
        #: What the broker delivered; past ``queue_max`` the connection stops reading.
        self.messages: asyncio.Queue[Delivery] = _TakenQueue(self._taken)
        self.keepalive_s = keepalive_s
        #: Topic filters subscribed (QoS 1) on every connection, as soon as it is accepted.
        self.subscriptions = tuple(subscriptions)
        self.manual_ack = manual_ack
        self.clean_start = clean_start
        self.session_expiry_s = session_expiry_s
        self.receive_maximum = receive_maximum
        self._backoff = backoff
        self._current: _Connection | None = None
        #: Connections not yet ended, by number (what :meth:`ack` answers through).
        self._live: dict[int, _Connection] = {}
        #: Connections that stopped reading because the queue is full.
        self._paused: list[_Connection] = []
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
        message was written to the connection but no PUBACK came (timeout, connection lost;
        the broker may have it), a plain BrokerError when it never left (not connected, the
        connection ended while it waited for room, too large) or the broker refused it.
        ``expiry_s`` sets the MQTT 5 Message Expiry Interval (the broker drops it,
        undelivered, after that long)."""
        connection = self._connection(topic)
        waiter = connection.publish(topic, payload, expiry_s=expiry_s, wait=True)
        assert waiter is not None
        try:
            async with asyncio.timeout(timeout_s):
                await waiter
        except TimeoutError:
            # The waiter was cancelled with the wait: a late PUBACK settles nothing.
            if connection.withdraw(waiter):
                raise BrokerError(
                    f"{topic} not sent: no room under the broker's Receive Maximum "
                    f"within {timeout_s} s"
                ) from None
            raise BrokerUnacknowledged(f"no PUBACK for {topic} within {timeout_s} s") from None

    def publish_nowait(
        self, topic: str, payload: bytes, *, expiry_s: int | None = None, qos: int = 1
    ) -> None:
        """Hand a message (QoS 1, or ``qos``) to the connection without waiting for the
        broker; raise BrokerError only when there is no connection to hand it to."""
        self._connection(topic).publish(topic, payload, expiry_s=expiry_s, wait=False, qos=qos)

    def ack(self, delivery: Delivery) -> None:
        """PUBACK ``delivery`` (``manual_ack`` links); nothing if the connection that
        delivered it has ended (the broker redelivers it, or drops it with the session)."""
        # Through the delivering connection, not ``_current``: a connection delivers before
        # the run loop makes it current (a persistent session's queue arrives right after the
        # CONNACK) and until its end is seen, when ``_current`` may already be None.
        connection = self._live.get(delivery.connection)
        # Without manual_ack the connection PUBACKed it on arrival: a second PUBACK could
        # acknowledge another message the broker has since sent under the same packet id.
        if not self.manual_ack or delivery.qos == 0 or connection is None:
            return
        connection.puback(delivery.mid)

    @contextmanager
    def corked(self) -> Iterator[None]:
        """Publishes and acks of the block leave in one write per connection at its end
        (:meth:`_Connection.cork` says why): for a caller answering a batch at once."""
        connections = list(self._live.values())
        for connection in connections:
            connection.cork()
        try:
            yield
        finally:
            for connection in connections:
                connection.uncork()

    def _connection(self, topic: str) -> _Connection:
        current = self._current
        if current is None:
            raise BrokerError(f"not connected to the broker: {topic} not published")
        return current

    # --- called by the connections -------------------------------------------------------------

    def parse_delivery(self, topic: str, payload: bytes) -> object:
        """``parse`` of one message as it arrives; None without one or if it raised (never
        lost: the consumer parses the payload again and meets the error there)."""
        if self._parse is None:
            return None
        try:
            return self._parse(topic, payload)
        except Exception:  # noqa: BLE001 -- left to the consumer, as the docstring says
            return None

    def deliver(self, delivery: Delivery, connection: _Connection) -> None:
        """Queue ``delivery``; a full queue stops ``connection`` reading until one is taken
        (the messages already read are queued all the same: they are not lost, and the
        broker's in-flight limit, our ``receive_maximum``, bounds them)."""
        self.messages.put_nowait(delivery)
        if self.messages.qsize() >= self._queue_max and not connection.paused:
            connection.pause()
            self._paused.append(connection)

    def _taken(self) -> None:
        if self._paused and self.messages.qsize() < self._queue_max:
            paused, self._paused = self._paused, []
            for connection in paused:
                connection.resume()

    def ended(self, connection: _Connection) -> None:
        self._live.pop(connection.number, None)
        if connection in self._paused:
            self._paused.remove(connection)

    # --- the connection task -------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect whenever the connection ends, until cancelled."""
        where = self.login.where()
        while True:
            try:
                connection = await self.connect()
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
                connection.close()
            log.warning("disconnected from the broker at %s: %s", where, reason)
            # A connection that ends at once (another process took over our client id, the
            # broker kicks us) counts as a failed attempt, so it cannot become a tight loop.
            stable = self.loop.time() - up_since >= STABLE_S
            self._attempts = 0 if stable else self._attempts + 1
            await asyncio.sleep(self._backoff.delay_s(self._attempts))

    async def connect(self, timeout_s: float = CONNECT_TIMEOUT_S) -> _Connection:
        """One connection, accepted and subscribed; BrokerError if it is not within
        ``timeout_s`` (TCP, TLS, CONNACK and SUBACK together)."""
        self._number += 1
        connection = _Connection(self, self._number)
        # Registered before the first byte: deliveries may follow the CONNACK at once.
        self._live[connection.number] = connection
        host = self.login.host
        try:
            async with asyncio.timeout(timeout_s):
                try:
                    await self.loop.create_connection(
                        lambda: connection,
                        host,
                        self.login.port,
                        ssl=self._ssl,
                        server_hostname=host if self._ssl is not None else None,
                    )
                except OSError as exc:  # refused, unreachable, TLS (ssl.SSLError)
                    where = self.login.where()
                    raise BrokerError(f"cannot reach the broker at {where}: {exc}") from exc
                await connection.ready
        except TimeoutError:
            message = f"no CONNACK or SUBACK within {timeout_s} s"
            connection.abort(message)
            raise BrokerError(message) from None
        except BaseException:
            connection.abort("connection attempt abandoned")
            raise
        return connection


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
    run on each incoming message (topic, payload) as it arrives, its result in
    :attr:`Delivery.parsed`."""
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
    ``timeout_s`` passes at either step.

    Blocking, as its callers are (the CLI, provisioning in a worker thread). Called from a
    thread that runs an event loop, it runs its own loop in a thread of its own, so the
    caller's loop is blocked but not re-entered."""

    async def round_trip() -> T:
        return await _request(
            login,
            client_id,
            topic=topic,
            payload=payload,
            response_topic=response_topic,
            answer=answer,
            timeout_s=timeout_s,
        )

    def run_alone() -> T:
        # A loop of its own that is never made the thread's event loop: asyncio.run() would
        # leave the caller's thread with none set afterwards (its Runner sets it to None),
        # and a later get_event_loop() there would make one that nobody closes.
        with asyncio.Runner(loop_factory=asyncio.new_event_loop) as runner:
            return runner.run(round_trip())

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return run_alone()
    with ThreadPoolExecutor(1, thread_name_prefix="broker-request") as pool:
        return pool.submit(run_alone).result()


async def _request(
    login: BrokerLogin,
    client_id: str,
    *,
    topic: str,
    payload: bytes,
    response_topic: str,
    answer: Callable[[bytes], T | None],
    timeout_s: float,
) -> T:
    link = BrokerLink(login, client_id, subscriptions=[response_topic], keepalive_s=30)
    connection = await link.connect(timeout_s)
    link._current = connection
    try:
        await link.publish(topic, payload, timeout_s=timeout_s)
        async with asyncio.timeout(timeout_s):
            while True:
                delivery = await _next_or_end(link, connection)
                value = answer(delivery.payload)
                if value is not None:
                    return value
    except TimeoutError:
        raise BrokerError(f"no answer on {response_topic} within {timeout_s} s") from None
    finally:
        link._current = None
        connection.close()


async def _next_or_end(link: BrokerLink, connection: _Connection) -> Delivery:
    """The next message of ``link``; BrokerError if ``connection`` ends first."""
    if not link.messages.empty():
        return link.messages.get_nowait()
    getting = asyncio.ensure_future(link.messages.get())
    waits: set[asyncio.Future[Any]] = {getting, connection.ended}
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getting.done():
            getting.cancel()
    if getting.done() and not getting.cancelled():
        return getting.result()
    raise BrokerError(f"broker connection lost: {connection.ended.result()}")
