"""Turn one received MQTT message into an accepted wire message or a dead letter (pure).

A rejected message is still acknowledged to its device when we can tell which device and
``seq`` it was (the topic names the device; the seq is read best-effort from the JSON):
it is stored with the reason, and resending it would only fail the same way.

Beyond the contract, ingest refuses a telemetry batch with a reading stamped more than
:data:`~protocols.messages.MAX_CLOCK_AHEAD` after the cloud received it: it would stand as
that meter's "latest" value until then (issue 13). Sessions, statuses and decisions are kept
whatever their clock says: losing a billing or audit event costs more than an odd time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from protocols.errors import MessageError, ProtocolError, TopicError
from protocols.messages import (
    MAX_CLOCK_AHEAD,
    Envelope,
    TelemetryBatch,
    parse_for_topic,
    readings_ahead_of,
)
from protocols.topics import UPLINK_KINDS, Topic, parse_topic


@dataclass(frozen=True, slots=True)
class Accepted:
    topic: Topic
    message: Envelope


@dataclass(frozen=True, slots=True)
class Rejected:
    topic_name: str
    device_id: str | None
    seq: int | None
    payload: bytes
    error_kind: str
    reason: str


def _best_effort_seq(payload: bytes) -> int | None:
    """The ``seq`` of an invalid message, if it has a plausible one (for the ack)."""
    try:
        data: Any = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    seq = data.get("seq") if isinstance(data, dict) else None
    # bool is an int; 0 is the Last Will's reserved seq, never in an outbox.
    if type(seq) is int and 0 < seq < 2**63:
        return seq
    return None


def decode(
    topic_name: str, payload: bytes, received_at: datetime | None = None
) -> Accepted | Rejected:
    """Validate ``payload`` received on ``topic_name`` at ``received_at`` (the cloud's clock;
    default now) with the protocols models."""
    try:
        topic = parse_topic(topic_name)
    except TopicError as exc:
        return Rejected(topic_name, None, None, payload, type(exc).__name__, str(exc))
    if topic.kind not in UPLINK_KINDS:
        reason = f"{topic.kind.value} flows cloud to device; a device may not publish it"
        return Rejected(topic_name, topic.device_id, None, payload, "WrongDirection", reason)
    try:
        _, message = parse_for_topic(topic_name, payload)
    except MessageError as exc:
        seq = _best_effort_seq(payload)
        return Rejected(topic_name, topic.device_id, seq, payload, type(exc).__name__, str(exc))
    except ProtocolError as exc:  # any other contract violation: still a dead letter
        return Rejected(topic_name, topic.device_id, None, payload, type(exc).__name__, str(exc))
    if isinstance(message, TelemetryBatch):
        received_at = received_at or datetime.now(UTC)
        ahead = readings_ahead_of(message, received_at)
        if ahead:
            first = message.readings[ahead[0]]
            reason = (
                f"{len(ahead)} reading(s) stamped more than {MAX_CLOCK_AHEAD} after receipt "
                f"({received_at.isoformat()}), first readings.{ahead[0]}.ts "
                f"{first.ts.isoformat()}"
            )
            return Rejected(topic_name, topic.device_id, message.seq, payload, "ClockAhead", reason)
    return Accepted(topic, message)
