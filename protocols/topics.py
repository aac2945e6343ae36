"""MQTT topics: ``cm/v1/d/{device_id}/{kind}``.

A device may publish and subscribe only under its own ``cm/v1/d/{its id}/``; the broker's
ACL enforces that (``deploy/mosquitto``), these helpers only build and parse names.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocols.enums import MessageKind
from protocols.errors import TopicError
from protocols.ids import validate_device_id

PREFIX = "cm/v1/d"

#: Topics a device publishes; the others (``cmd``, ``ack``) flow cloud → device.
UPLINK_KINDS = frozenset(
    {
        MessageKind.TELEMETRY,
        MessageKind.SESSION,
        MessageKind.STATUS,
        MessageKind.CMD_RESULT,
        MessageKind.AUTH,
    }
)
DOWNLINK_KINDS = frozenset({MessageKind.CMD, MessageKind.ACK})
#: Uplink someone is waiting on — a driver at the charger, the API's unlock answer: session
#: events, command results and authorization decisions. Few, and they pass everything else:
#: the agent sends them first (edge_agent/sync/uplink.py) and cloud ingest reads them on a
#: broker connection and batch loop of their own (cloud/workers/ingest.py).
URGENT_KINDS = frozenset({MessageKind.SESSION, MessageKind.CMD_RESULT, MessageKind.AUTH})

#: The QoS of the cloud's acks; every other kind goes at QoS 1 (docs/protocols.md). An ack is
#: what lets a device delete outbox rows, not data: one lost with a dropped connection costs
#: the device a resend of those rows after it reconnects, which the cloud's keys turn into
#: no-ops that are acked again. At QoS 1 the cloud's MQTT client held every ack until the
#: broker's PUBACK: behind a busy broker (a reconnect storm, a loaded node) its queue grew to
#: all 65,535 packet ids, each PUBACK scanned that queue, and further acks were refused
#: ("Message queue full"), so devices resent 30 s later — the lag tail of bench.fleet's 3,500
#: sites and work done twice in its storm. At QoS 0 nothing waits: two fewer packets per
#: uplink message for the broker, the cloud and the device.
ACK_QOS = 0

#: The shared-subscription group cloud ingest workers join, so N workers split the load.
INGEST_SHARE_GROUP = "ingest"


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed device topic."""

    device_id: str
    kind: MessageKind

    def __str__(self) -> str:
        return topic(self.device_id, self.kind)


def topic(device_id: str, kind: MessageKind | str) -> str:
    """Build the topic for ``kind`` messages of ``device_id``."""
    try:
        kind = MessageKind(kind)
    except ValueError:
        raise TopicError(f"unknown message kind {kind!r}") from None
    return f"{PREFIX}/{validate_device_id(device_id)}/{kind.value}"


def parse_topic(name: str) -> Topic:
    """Parse ``cm/v1/d/{device_id}/{kind}``; raise :class:`TopicError` for anything else."""
    parts = name.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != PREFIX:
        raise TopicError(
            f"bad topic {name!r}: expected '{PREFIX}/{{device_id}}/{{kind}}'", topic=name
        )
    try:
        kind = MessageKind(parts[4])
    except ValueError:
        raise TopicError(
            f"bad topic {name!r}: unknown kind {parts[4]!r}, expected one of "
            f"{', '.join(k.value for k in MessageKind)}",
            topic=name,
        ) from None
    try:
        device_id = validate_device_id(parts[3])
    except TopicError as exc:
        raise TopicError(f"bad topic {name!r}: {exc}", topic=name) from None
    return Topic(device_id, kind)


def device_filter(device_id: str) -> str:
    """Subscription filter for everything of one device (``cm/v1/d/{id}/#``)."""
    return f"{PREFIX}/{validate_device_id(device_id)}/#"


def ingest_filter(kind: MessageKind, *, shared: bool = True) -> str:
    """Subscription filter the cloud uses for ``kind`` from every device.

    With ``shared`` (the default) it is an MQTT 5 shared subscription, so several ingest
    workers (or a clustered broker) split the messages between them with no code change.
    """
    plain = f"{PREFIX}/+/{MessageKind(kind).value}"
    return f"$share/{INGEST_SHARE_GROUP}/{plain}" if shared else plain
