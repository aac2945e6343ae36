"""Decoding, planning and ack building of ingest batches (pure)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from cloud.ingest.decode import Accepted, Rejected, decode
from cloud.ingest.plan import ACK_MAX_ITEMS, DeviceAck, build_acks, plan_batch
from protocols.enums import AuthorizationStatus, MessageKind
from protocols.ids import new_ulid
from protocols.messages import MAX_PAYLOAD_BYTES, Ack, Envelope, encode_message, last_will
from protocols.testing import auth_decision, session_events, status, telemetry
from protocols.topics import topic

DEV = "dev-1"
NOW = datetime(2026, 3, 1, tzinfo=UTC)


def _accept(message: Envelope, kind: MessageKind) -> Accepted | Rejected:
    return decode(topic(DEV, kind), encode_message(message))


def test_valid_telemetry_is_accepted() -> None:
    result = _accept(telemetry(DEV, 5, readings=3), MessageKind.TELEMETRY)
    assert isinstance(result, Accepted)


def test_invalid_payload_is_rejected_with_reason_and_best_effort_seq() -> None:
    result = decode(topic(DEV, MessageKind.TELEMETRY), b'{"v": 1, "seq": 42, "junk": true}')
    assert isinstance(result, Rejected)
    assert result.seq == 42
    assert result.device_id == DEV
    assert result.error_kind == "InvalidMessage"


def test_device_id_mismatch_with_topic_is_rejected() -> None:
    payload = encode_message(telemetry("dev-2", 5, readings=1))
    result = decode(topic(DEV, MessageKind.TELEMETRY), payload)
    assert isinstance(result, Rejected)
    assert "does not match" in result.reason


def test_bad_topic_and_oversized_payloads_are_rejected() -> None:
    bad_topic = decode("cm/v1/d/NOT VALID/telemetry", b"{}")
    assert isinstance(bad_topic, Rejected)
    assert bad_topic.device_id is None
    big = decode(topic(DEV, MessageKind.STATUS), b" " * (MAX_PAYLOAD_BYTES + 1))
    assert isinstance(big, Rejected)
    assert big.error_kind == "PayloadTooLarge"


def test_downlink_kind_published_by_a_device_is_rejected() -> None:
    result = decode(topic(DEV, MessageKind.ACK), b"{}")
    assert isinstance(result, Rejected)
    assert result.error_kind == "WrongDirection"


def test_plan_drops_in_batch_duplicates_and_collects_ack_seqs() -> None:
    batch = telemetry(DEV, 3, readings=2)
    events = session_events(DEV, new_ulid(), 10, updates=1)
    items = [
        _accept(batch, MessageKind.TELEMETRY),
        _accept(batch, MessageKind.TELEMETRY),
        *(_accept(e, MessageKind.SESSION) for e in events),
        _accept(events[0], MessageKind.SESSION),
        decode(topic(DEV, MessageKind.TELEMETRY), b'{"seq": 20}'),
    ]
    plan = plan_batch(items)
    assert len(plan.telemetry) == 1
    assert len(list(plan.telemetry_records())) == 4  # 2 readings x 2 quantities
    assert len(plan.session_events) == 3
    assert plan.acks[DEV].seqs == {3, 10, 11, 12}
    assert plan.acks[DEV].dead_lettered == {20}
    assert len(plan.dead_letters) == 1


def _statuses(*messages: Envelope) -> list[int]:
    """The seqs of the status steps ``messages`` plan to, in the order they are applied."""
    plan = plan_batch([_accept(m, MessageKind.STATUS) for m in messages])
    return [m.seq for m in plan.statuses[DEV]]


def test_newest_status_wins_and_the_last_will_is_not_acked() -> None:
    plan = plan_batch(
        [
            _accept(status(DEV, 9), MessageKind.STATUS),
            _accept(status(DEV, 7), MessageKind.STATUS),  # a late resend: older, dropped
        ]
    )
    assert [m.seq for m in plan.statuses[DEV]] == [9]
    will = last_will(DEV, ts=NOW, clock_synced=True)
    plan = plan_batch([_accept(will, MessageKind.STATUS)])
    assert [m.seq for m in plan.statuses[DEV]] == [0]
    assert DEV not in plan.acks


def test_a_last_will_keeps_its_place_among_the_statuses_of_its_batch() -> None:
    """A Will after the device's status is applied after it (the device is gone), one
    before it first (the device went and came back): the batch ends where one message at a
    time would. It was dropped whenever a status shared its batch, leaving a device that had
    gone away online (tests/cloud/test_fleet_sim.py, under load)."""
    will = last_will(DEV, ts=NOW, clock_synced=True)
    assert _statuses(status(DEV, 7), status(DEV, 9), will) == [9, 0]
    assert _statuses(will, status(DEV, 7), status(DEV, 9)) == [0, 9]
    assert _statuses(status(DEV, 3), will, status(DEV, 4)) == [3, 0, 4]
    assert _statuses(will, will, status(DEV, 5), will) == [0, 5, 0]
    plan = plan_batch([_accept(m, MessageKind.STATUS) for m in (status(DEV, 7), will)])
    assert plan.acks[DEV].seqs == {7}  # the Will is never acked
    assert plan.kind_counts()["status"] == 2


def test_acks_cover_every_seq_and_split_beyond_the_range_limit() -> None:
    seqs = set(range(1, 2 * (ACK_MAX_ITEMS + 10), 2))  # every other seq: one range each
    ack = DeviceAck(seqs=seqs, dead_lettered={3})
    messages = build_acks(DEV, ack, 100, NOW, new_ulid)
    assert len(messages) == 2
    assert [m.seq for m in messages] == [100, 101]
    assert all(isinstance(m, Ack) for m in messages)
    covered = {s for s in seqs if any(m.covers(s) for m in messages)}
    assert covered == seqs
    assert messages[0].dead_lettered == [3]
    for m in messages:
        assert len(encode_message(m)) <= MAX_PAYLOAD_BYTES


def test_decisions_are_planned_once_per_seq_and_acked() -> None:
    decision = auth_decision(DEV, 7, AuthorizationStatus.BLOCKED)
    raw_secret = json.loads(encode_message(decision))
    raw_secret["credential"]["ref"] = "04A21B9C7F"  # a raw tag: refused, dead-lettered, acked
    plan = plan_batch(
        [
            _accept(decision, MessageKind.AUTH),
            _accept(decision, MessageKind.AUTH),  # QoS 1 redelivery in the same batch
            decode(topic(DEV, MessageKind.AUTH), json.dumps({**raw_secret, "seq": 8}).encode()),
        ]
    )
    assert list(plan.auth_decisions) == [(DEV, 7)]
    assert plan.kind_counts()["auth"] == 1
    assert [d.error_kind for d in plan.dead_letters] == ["InvalidMessage"]
    assert "never the tag" in plan.dead_letters[0].reason
    assert (plan.acks[DEV].seqs, plan.acks[DEV].dead_lettered) == ({7}, {8})
