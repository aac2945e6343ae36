"""MQTT 5 packets as bytes: the framing and the few packets ChargeMitra's own asyncio clients
speak — the cloud's broker link (cloud/broker.py) and the fleet simulator's sites
(firmware_sim/mqtt_wire.py). Pure: no socket, no clock; the clients own those.

Spoken (OASIS MQTT 5.0, section numbers in the functions): CONNECT with credentials, clean
start, keep-alive, a Last Will and the Session Expiry Interval / Receive Maximum properties;
CONNACK with its reason and the properties a client must obey (Receive Maximum, Server Keep
Alive, Maximum Packet Size); PUBLISH both ways at QoS 0 and 1 (Message Expiry Interval out);
PUBACK both ways with a reason code; SUBSCRIBE/SUBACK; PINGREQ/PINGRESP; DISCONNECT both ways.

Not spoken: QoS 2, AUTH, and topic aliases. A client never states a Topic Alias Maximum, so a
broker may not send an alias (3.1.2.11.5): a PUBLISH with an empty topic is refused here.
Incoming PUBLISH properties are skipped unread; none of ours needs them.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass

from protocols.errors import MqttPacketError

CONNECT, CONNACK, PUBLISH, PUBACK = 1, 2, 3, 4
SUBSCRIBE, SUBACK, PINGREQ, PINGRESP, DISCONNECT = 8, 9, 12, 13, 14

#: PUBACK reason "No matching subscribers": accepted and dropped, nobody subscribes (3.4.2.1).
NO_MATCHING_SUBSCRIBERS = 0x10
#: DISCONNECT reason "Disconnect with Will Message": the broker publishes the Will.
DISCONNECT_WITH_WILL = 0x04
#: What a peer that states no Receive Maximum receives (3.2.2.3.3).
DEFAULT_RECEIVE_MAXIMUM = 65535
#: The largest Remaining Length four bytes can encode (1.5.5).
MAX_REMAINING_LENGTH = 268_435_455

#: Reason codes by value (2.4), for error messages.
REASONS: Mapping[int, str] = {
    0x00: "Success",
    0x04: "Disconnect with Will Message",
    0x10: "No matching subscribers",
    0x80: "Unspecified error",
    0x81: "Malformed Packet",
    0x82: "Protocol Error",
    0x83: "Implementation specific error",
    0x84: "Unsupported Protocol Version",
    0x85: "Client Identifier not valid",
    0x86: "Bad User Name or Password",
    0x87: "Not authorized",
    0x88: "Server unavailable",
    0x89: "Server busy",
    0x8A: "Banned",
    0x8B: "Server shutting down",
    0x8C: "Bad authentication method",
    0x8D: "Keep Alive timeout",
    0x8E: "Session taken over",
    0x8F: "Topic Filter invalid",
    0x90: "Topic Name invalid",
    0x91: "Packet Identifier in use",
    0x93: "Receive Maximum exceeded",
    0x94: "Topic Alias invalid",
    0x95: "Packet too large",
    0x96: "Message rate too high",
    0x97: "Quota exceeded",
    0x98: "Administrative action",
    0x99: "Payload format invalid",
    0x9A: "Retain not supported",
    0x9B: "QoS not supported",
    0x9C: "Use another server",
    0x9D: "Server moved",
    0x9E: "Shared Subscriptions not supported",
    0x9F: "Connection rate exceeded",
    0xA0: "Maximum connect time",
    0xA1: "Subscription Identifiers not supported",
    0xA2: "Wildcard Subscriptions not supported",
}


def reason_text(code: int) -> str:
    """``code`` for a person: its name and its value (``Not authorized (0x87)``)."""
    return f"{REASONS.get(code, 'unknown reason')} (0x{code:02X})"


# Property identifiers (2.2.2.2) this module writes or reads, and the wire type of every one,
# which skipping an unread property needs.
MESSAGE_EXPIRY_INTERVAL = 0x02
SESSION_EXPIRY_INTERVAL = 0x11
SERVER_KEEP_ALIVE = 0x13
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
MAXIMUM_PACKET_SIZE = 0x27
_BYTE, _TWO, _FOUR, _VARINT, _UTF8, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES: Mapping[int, int] = {
    0x01: _BYTE,
    0x02: _FOUR,
    0x03: _UTF8,
    0x08: _UTF8,
    0x09: _BINARY,
    0x0B: _VARINT,
    0x11: _FOUR,
    0x12: _UTF8,
    0x13: _TWO,
    0x15: _UTF8,
    0x16: _BINARY,
    0x17: _BYTE,
    0x18: _FOUR,
    0x19: _BYTE,
    0x1A: _UTF8,
    0x1C: _UTF8,
    0x1F: _UTF8,
    0x21: _TWO,
    0x22: _TWO,
    0x23: _TWO,
    0x24: _BYTE,
    0x25: _BYTE,
    0x26: _PAIR,
    0x27: _FOUR,
    0x28: _BYTE,
    0x29: _BYTE,
    0x2A: _BYTE,
}
_INT_WIDTHS = {_BYTE: "!B", _TWO: "!H", _FOUR: "!I"}


def vbi(n: int) -> bytes:
    """A Variable Byte Integer (1.5.5)."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_vbi(data: bytes, at: int) -> tuple[int, int]:
    """The Variable Byte Integer at ``at`` and where it ends."""
    value, shift = 0, 0
    while True:
        if at >= len(data) or shift > 21:
            raise MqttPacketError("malformed variable byte integer")
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7


def utf8(s: str) -> bytes:
    """A UTF-8 Encoded String (1.5.4): two bytes of length, then the bytes."""
    data = s.encode()
    return struct.pack("!H", len(data)) + data


def binary(b: bytes) -> bytes:
    """Binary Data (1.5.6)."""
    return struct.pack("!H", len(b)) + b


def packet(kind: int, flags: int, body: bytes) -> bytes:
    """A whole control packet: fixed header (type, flags, Remaining Length), then ``body``."""
    return bytes([kind << 4 | flags]) + vbi(len(body)) + body


def frame(buffer: bytearray | bytes, at: int) -> tuple[int, int] | None:
    """Where the body of the packet starting at ``at`` lies (start, end); None while the buffer
    does not hold all of it. A Remaining Length longer than four bytes is malformed (1.5.5)."""
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
            raise MqttPacketError("malformed packet: a remaining length of more than four bytes")
    return (i, i + length) if end - i >= length else None


def properties(values: Mapping[int, int]) -> bytes:
    """Integer properties (Byte, Two and Four Byte Integer ones) with their length prefix."""
    body = b"".join(
        bytes([pid]) + struct.pack(_INT_WIDTHS[_PROPERTY_TYPES[pid]], value)
        for pid, value in values.items()
    )
    return vbi(len(body)) + body


def read_properties(data: bytes, at: int) -> tuple[dict[int, int | str | bytes], int]:
    """The property block at ``at``: its integer, string and binary properties by identifier
    (a repeated one keeps its last value; User Properties are skipped), and where it ends."""
    length, at = read_vbi(data, at)
    end = at + length
    if end > len(data):
        raise MqttPacketError("malformed properties: longer than the packet")
    found: dict[int, int | str | bytes] = {}
    try:
        while at < end:
            pid = data[at]
            kind = _PROPERTY_TYPES.get(pid)
            at += 1
            if kind is None:
                raise MqttPacketError(f"unknown property 0x{pid:02X}")
            if kind in _INT_WIDTHS:
                fmt = _INT_WIDTHS[kind]
                (found[pid],) = struct.unpack_from(fmt, data, at)
                at += struct.calcsize(fmt)
            elif kind == _VARINT:
                found[pid], at = read_vbi(data, at)
            else:
                strings = 2 if kind == _PAIR else 1
                values = []
                for _ in range(strings):
                    (size,) = struct.unpack_from("!H", data, at)
                    values.append(bytes(data[at + 2 : at + 2 + size]))
                    at += 2 + size
                if kind == _UTF8:
                    found[pid] = values[0].decode()
                elif kind == _BINARY:
                    found[pid] = values[0]
    except (struct.error, UnicodeDecodeError) as exc:
        raise MqttPacketError(f"malformed properties: {exc}") from exc
    if at != end:
        raise MqttPacketError("malformed properties: a property runs past the block")
    return found, end


@dataclass(frozen=True, slots=True)
class Will:
    """A Last Will: published by the broker when the connection ends without a DISCONNECT
    (or with :data:`DISCONNECT_WITH_WILL`)."""

    topic: str
    payload: bytes
    retain: bool = True


def connect(
    client_id: str,
    username: str,
    password: str,
    *,
    keepalive_s: int,
    clean_start: bool = True,
    will: Will | None = None,
    session_expiry_s: int | None = None,
    receive_maximum: int | None = None,
) -> bytes:
    """CONNECT (3.1). The Will, if any, at QoS 1."""
    flags = 0x80 | 0x40 | (0x02 if clean_start else 0)  # user name, password, clean start
    will_part = b""
    if will is not None:
        flags |= 0x04 | 0x08 | (0x20 if will.retain else 0)  # will, will QoS 1, will retain
        will_part = vbi(0) + utf8(will.topic) + binary(will.payload)
    values = {}
    if session_expiry_s is not None:
        values[SESSION_EXPIRY_INTERVAL] = session_expiry_s
    if receive_maximum is not None:
        values[RECEIVE_MAXIMUM] = receive_maximum
    body = (
        utf8("MQTT")
        + bytes([5, flags])
        + struct.pack("!H", keepalive_s)
        + properties(values)
        + utf8(client_id)
        + will_part
        + utf8(username)
        + binary(password.encode())
    )
    return packet(CONNECT, 0, body)


@dataclass(frozen=True, slots=True)
class Connack:
    """What a CONNACK (3.2) says, and the properties the client must obey."""

    reason: int
    session_present: bool
    receive_maximum: int = DEFAULT_RECEIVE_MAXIMUM
    server_keepalive_s: int | None = None
    maximum_packet_size: int | None = None
    reason_string: str | None = None


def read_connack(data: bytes) -> Connack:
    if len(data) < 2:
        raise MqttPacketError("malformed CONNACK: shorter than two bytes")
    reason = data[1]
    props: dict[int, int | str | bytes] = {}
    if len(data) > 2:
        props, _ = read_properties(data, 2)
    receive_maximum = props.get(RECEIVE_MAXIMUM, DEFAULT_RECEIVE_MAXIMUM)
    keepalive = props.get(SERVER_KEEP_ALIVE)
    packet_size = props.get(MAXIMUM_PACKET_SIZE)
    text = props.get(REASON_STRING)
    if receive_maximum == 0:  # 3.2.2.3.3: a Protocol Error
        raise MqttPacketError("malformed CONNACK: a Receive Maximum of 0")
    return Connack(
        reason=reason,
        session_present=bool(data[0] & 0x01),
        receive_maximum=int(receive_maximum),
        server_keepalive_s=int(keepalive) if isinstance(keepalive, int) else None,
        maximum_packet_size=int(packet_size) if isinstance(packet_size, int) else None,
        reason_string=text if isinstance(text, str) else None,
    )


def check_topic_name(topic: str) -> None:
    """A Topic Name a client may publish to (3.3.2.1, 4.7.3): not empty, no wildcard, no NUL,
    at most 65,535 bytes. The broker would end the whole connection for one."""
    if not topic or "+" in topic or "#" in topic or "\0" in topic:
        raise MqttPacketError(f"not a topic name to publish to: {topic!r}")
    if len(topic.encode()) > 0xFFFF:
        raise MqttPacketError("a topic name longer than 65,535 bytes")


def check_expiry(expiry_s: int | None) -> None:
    """A Message Expiry Interval fits its Four Byte Integer (3.3.2.3.3)."""
    if expiry_s is not None and not 0 <= expiry_s <= 0xFFFF_FFFF:
        raise MqttPacketError(f"a message expiry of {expiry_s} s does not fit 32 bits")


def publish(
    topic: str, payload: bytes, *, qos: int, packet_id: int = 0, expiry_s: int | None = None
) -> bytes:
    """PUBLISH (3.3) at QoS 0 or 1 (``packet_id`` only at 1), not retained."""
    head = utf8(topic) + (struct.pack("!H", packet_id) if qos else b"")
    props = properties({MESSAGE_EXPIRY_INTERVAL: expiry_s}) if expiry_s is not None else b"\0"
    return packet(PUBLISH, qos << 1, head + props + payload)


def read_publish(flags: int, data: bytes) -> tuple[str, int, int, bytes]:
    """A received PUBLISH: (topic, qos, packet id — 0 at QoS 0, payload)."""
    qos = (flags >> 1) & 0x03
    if qos > 1:
        raise MqttPacketError(f"PUBLISH at QoS {qos}: only 0 and 1 are spoken")
    try:
        (topic_len,) = struct.unpack_from("!H", data)
        at = 2 + topic_len
        topic = data[2:at].decode()
        packet_id = 0
        if qos:
            (packet_id,) = struct.unpack_from("!H", data, at)
            at += 2
    except (struct.error, UnicodeDecodeError) as exc:
        raise MqttPacketError(f"malformed PUBLISH: {exc}") from exc
    if not topic:  # a topic alias, which this client never allows (3.3.2.3.4)
        raise MqttPacketError("PUBLISH without a topic name (topic aliases are not spoken)")
    props_len, at = read_vbi(data, at)
    if at + props_len > len(data):
        raise MqttPacketError("malformed PUBLISH: properties longer than the packet")
    return topic, qos, packet_id, data[at + props_len :]


def puback(packet_id: int, reason: int = 0) -> bytes:
    """PUBACK (3.4); success goes without a reason byte (3.4.2.1)."""
    body = struct.pack("!H", packet_id) + (bytes([reason]) if reason else b"")
    return packet(PUBACK, 0, body)


def read_ack(data: bytes) -> tuple[int, int]:
    """A PUBACK's (packet id, reason code); no reason byte means success (3.4.2.1)."""
    if len(data) < 2:
        raise MqttPacketError("malformed PUBACK: shorter than two bytes")
    return (data[0] << 8) | data[1], data[2] if len(data) > 2 else 0


def subscribe(packet_id: int, filters: list[str] | tuple[str, ...], *, qos: int = 1) -> bytes:
    """SUBSCRIBE (3.8) to every filter at ``qos``."""
    body = struct.pack("!H", packet_id) + vbi(0)
    body += b"".join(utf8(f) + bytes([qos]) for f in filters)
    return packet(SUBSCRIBE, 0x02, body)


def read_suback(data: bytes) -> tuple[int, list[int]]:
    """A SUBACK's (packet id, one reason code per filter: the granted QoS, or a failure)."""
    if len(data) < 3:
        raise MqttPacketError("malformed SUBACK: shorter than three bytes")
    (packet_id,) = struct.unpack_from("!H", data)
    _, at = read_properties(data, 2)
    return packet_id, list(data[at:])


def pingreq() -> bytes:
    return packet(PINGREQ, 0, b"")


def disconnect(reason: int = 0) -> bytes:
    """DISCONNECT (3.14): 0 is normal (the Will is dropped), :data:`DISCONNECT_WITH_WILL`."""
    return packet(DISCONNECT, 0, bytes([reason]) + vbi(0))


def read_disconnect(data: bytes) -> tuple[int, str | None]:
    """A broker's DISCONNECT: (reason code, its Reason String if it sent one)."""
    if not data:
        return 0, None
    text = None
    if len(data) > 1:
        props, _ = read_properties(data, 1)
        found = props.get(REASON_STRING)
        text = found if isinstance(found, str) else None
    return data[0], text
