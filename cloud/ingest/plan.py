"""Sort one batch of decoded messages into what to write and whom to ack (pure).

Duplicates inside the batch are dropped here (a QoS 1 redelivery can land in the same batch
as the original); duplicates across batches and workers are dropped by the database keys.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cloud.ingest.decode import Accepted, Rejected
from protocols.messages import (
    Ack,
    AuthDecision,
    CommandResult,
    Envelope,
    SessionEvent,
    Status,
    TelemetryBatch,
    ack_ranges,
)

#: An Ack holds at most this many ranges and dead-lettered seqs (protocols.messages.Ack).
ACK_MAX_ITEMS = 1000

TelemetryRecord = tuple[str, str, datetime, str, float, int, bool]
#: Column order of :data:`TelemetryRecord` in the ``telemetry`` table.
TELEMETRY_COLUMNS = (
    "device_id",
    "meter_id",
    "ts",
    "quantity",
    "value",
    "seq",
    "clock_synced",
)


@dataclass
class DeviceAck:
    """What one device is told after the commit."""

    seqs: set[int] = field(default_factory=set)
    dead_lettered: set[int] = field(default_factory=set)

    def messages_needed(self) -> int:
        ranges = ack_ranges(self.seqs | self.dead_lettered)
        chunks = -(-len(ranges) // ACK_MAX_ITEMS)
        dl_chunks = -(-len(self.dead_lettered) // ACK_MAX_ITEMS)
        return max(chunks, dl_chunks, 1)


@dataclass
class BatchPlan:
    telemetry: dict[tuple[str, str], TelemetryBatch] = field(default_factory=dict)
    session_events: dict[tuple[str, str, int], SessionEvent] = field(default_factory=dict)
    #: Per device, the statuses to apply, in the order they arrived: a run of ordinary
    #: statuses collapses to its newest (highest seq), a run of Last Wills (seq 0) to one.
    #: A Will that came after a status is applied after it (the device went away), one that
    #: came before is applied first (it went away and came back): the batch ends where
    #: applying its messages one at a time would. (Keeping only the newest status dropped a
    #: Will that shared a batch with the status before it: the device stayed online.)
    statuses: dict[str, list[Status]] = field(default_factory=dict)
    cmd_results: dict[str, CommandResult] = field(default_factory=dict)
    #: Authorization decisions by ``(device_id, seq)``.
    auth_decisions: dict[tuple[str, int], AuthDecision] = field(default_factory=dict)
    dead_letters: list[Rejected] = field(default_factory=list)
    acks: dict[str, DeviceAck] = field(default_factory=dict)

    def telemetry_records(self, only: set[tuple[str, str]] | None = None) -> list[TelemetryRecord]:
        """One row per (reading, quantity), of every batch or of the ``only`` batch keys."""
        return [
            record
            for key, batch in self.telemetry.items()
            if only is None or key in only
            for record in batch_records(batch)
        ]

    def kind_counts(self) -> dict[str, int]:
        """Accepted messages per kind (after in-batch de-duplication), for metrics."""
        return {
            "telemetry": len(self.telemetry),
            "session": len(self.session_events),
            "status": sum(len(steps) for steps in self.statuses.values()),
            "cmd_result": len(self.cmd_results),
            "auth": len(self.auth_decisions),
        }

    def session_keys(self) -> list[tuple[str, str]]:
        return sorted({(d, s) for d, s, _ in self.session_events})


def batch_records(batch: TelemetryBatch) -> list[TelemetryRecord]:
    """The ``telemetry`` rows of one batch: one per (reading, quantity), in column order.

    The quantity goes in as the :class:`~protocols.meters.Quantity` member itself: a
    ``StrEnum`` member *is* its value as a ``str`` (COPY writes the same text), and reading
    ``.value`` — an enum property — for every row was a tenth of ingest's own CPU time.
    """
    device_id, seq = batch.device_id, batch.seq
    return [
        (device_id, reading.meter_id, reading.ts, quantity, value, seq, reading.clock_synced)
        for reading in batch.readings
        for quantity, value in reading.values.items()
    ]


def _ack(plan: BatchPlan, device_id: str) -> DeviceAck:
    return plan.acks.setdefault(device_id, DeviceAck())


def _add_status(steps: list[Status], message: Status) -> None:
    """Append ``message`` to a device's status steps, merging it into the last step when
    both are Wills (the same event) or both ordinary statuses (the newer one stands)."""
    last = steps[-1] if steps else None
    if last is None or (last.seq == 0) != (message.seq == 0):
        steps.append(message)
    elif message.seq > last.seq:
        steps[-1] = message


def plan_batch(items: Sequence[Accepted | Rejected]) -> BatchPlan:
    plan = BatchPlan()
    for item in items:
        if isinstance(item, Rejected):
            plan.dead_letters.append(item)
            if item.device_id is not None and item.seq is not None:
                _ack(plan, item.device_id).dead_lettered.add(item.seq)
            continue
        message: Envelope = item.message
        device_id = message.device_id
        if isinstance(message, TelemetryBatch):
            plan.telemetry.setdefault((device_id, message.msg_id), message)
        elif isinstance(message, SessionEvent):
            key = (device_id, message.session_id, message.event_seq)
            plan.session_events.setdefault(key, message)
        elif isinstance(message, Status):
            _add_status(plan.statuses.setdefault(device_id, []), message)
        elif isinstance(message, CommandResult):
            plan.cmd_results.setdefault(message.cmd_id, message)
        elif isinstance(message, AuthDecision):
            plan.auth_decisions.setdefault((device_id, message.seq), message)
        # seq 0 is the Last Will: the broker sent it, it is in no outbox, nothing to ack.
        if message.seq > 0:
            _ack(plan, device_id).seqs.add(message.seq)
    return plan


def build_acks(
    device_id: str,
    ack: DeviceAck,
    first_downlink_seq: int,
    now: datetime,
    new_id: Callable[[], str],
) -> list[Ack]:
    """The Ack messages for one device, numbered from ``first_downlink_seq``.

    Usually one; more only when the seqs fall into more than :data:`ACK_MAX_ITEMS` ranges or
    more than that many were dead-lettered.
    """
    ranges = ack_ranges(ack.seqs | ack.dead_lettered)
    dead = sorted(ack.dead_lettered)
    messages = []
    for i in range(ack.messages_needed()):
        # A message past the last chunk of ranges (many contiguous dead letters) repeats the
        # last range: an Ack needs one, and acking a seq twice is harmless.
        chunk = ranges[i * ACK_MAX_ITEMS : (i + 1) * ACK_MAX_ITEMS] or ranges[-1:]
        messages.append(
            Ack(
                msg_id=new_id(),
                device_id=device_id,
                seq=first_downlink_seq + i,
                ts=now,
                clock_synced=True,
                ranges=chunk,
                dead_lettered=dead[i * ACK_MAX_ITEMS : (i + 1) * ACK_MAX_ITEMS],
            )
        )
    return messages
