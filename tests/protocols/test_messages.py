"""Wire messages: round trips, and every kind of bad input refused with one error type."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import messages as m
from protocols.enums import (
    AuthorizationStatus,
    CredentialKind,
    MessageKind,
    SessionEventType,
    StopReason,
)
from protocols.errors import (
    InvalidMessage,
    MalformedJSON,
    MessageError,
    PayloadTooLarge,
    ProtocolError,
    TopicError,
    UnsupportedVersion,
)
from protocols.ids import new_ulid
from protocols.meters import Quantity
from protocols.topics import topic
from tests.protocols import strategies as s

KIND_OF = {model: kind for kind, model in m.MESSAGE_TYPES.items()}
NOW = datetime(2026, 11, 24, 3, 0, tzinfo=UTC)


def telemetry(device_id: str = "site-1", **changes: object) -> m.TelemetryBatch:
    fields: dict[str, object] = {
        "msg_id": new_ulid(),
        "device_id": device_id,
        "seq": 7,
        "ts": NOW,
        "clock_synced": True,
        "readings": [
            m.MeterReading(meter_id="m1", ts=NOW, clock_synced=True, values={"power_w": 7360.0})
        ],
    }
    fields.update(changes)
    return m.TelemetryBatch.model_validate(fields)


@settings(max_examples=300, deadline=None)
@given(s.any_message)
def test_every_message_survives_encode_then_parse(message: m.Envelope) -> None:
    kind = KIND_OF[type(message)]
    raw = m.encode_message(message)
    assert m.parse_message(kind, raw) == message
    assert m.parse_for_topic(topic(message.device_id, kind), raw)[1] == message


def test_timestamps_are_normalised_to_utc() -> None:
    ist = datetime(2026, 11, 24, 8, 30, tzinfo=UTC).astimezone(ZoneInfo("Asia/Kolkata"))
    parsed = m.parse_message("telemetry", m.encode_message(telemetry(ts=ist)))
    assert parsed.ts == datetime(2026, 11, 24, 8, 30, tzinfo=UTC)
    assert parsed.ts.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "payload",
    [b"{not json", b"\xff\xfe", b"", b"[1, 2]", b'"v"', b'{"v": 1', b"{'v': 1}"],
)
def test_malformed_json_is_refused(payload: bytes) -> None:
    with pytest.raises(MalformedJSON, match="telemetry: payload"):
        m.parse_message("telemetry", payload)


@pytest.mark.parametrize("version", [None, 0, 2, "1", True, 1.0])
def test_unknown_or_missing_version_is_refused(version: object) -> None:
    data = json.loads(m.encode_message(telemetry()))
    if version is None:
        del data["v"]
    else:
        data["v"] = version
    with pytest.raises(UnsupportedVersion, match="unsupported schema version") as info:
        m.parse_message("telemetry", json.dumps(data))
    assert info.value.version == version


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("seq", "7", "seq"),  # no string-to-int coercion
        ("seq", -1, "seq"),
        ("clock_synced", "yes", "clock_synced"),
        ("ts", "2026-11-24T03:00:00", "ts"),  # no timezone
        ("device_id", "site/1", "device_id"),
        ("msg_id", "not-a-ulid", "msg_id"),
        ("readings", [], "readings"),
        ("extra", 1, "extra"),
    ],
)
def test_wrong_fields_are_refused_naming_the_field(field: str, value: object, where: str) -> None:
    data = json.loads(m.encode_message(telemetry()))
    data[field] = value
    with pytest.raises(InvalidMessage) as info:
        m.parse_message("telemetry", json.dumps(data))
    assert any(f.startswith(where) for f in info.value.fields), info.value.fields
    assert where in str(info.value)


@pytest.mark.parametrize("value", [1e999, float("nan")])  # json.dumps writes Infinity, NaN
def test_nan_or_infinity_in_a_reading_is_refused(value: float) -> None:
    data = json.loads(m.encode_message(telemetry()))
    data["readings"][0]["values"]["power_w"] = value
    with pytest.raises(InvalidMessage, match="finite number"):
        m.parse_message("telemetry", json.dumps(data))


def test_oversized_payload_is_refused_before_parsing() -> None:
    payload = b'{"v": 1, "pad": "' + b"x" * m.MAX_PAYLOAD_BYTES + b'"}'
    with pytest.raises(PayloadTooLarge, match="limit is 262144 bytes") as info:
        m.parse_message("telemetry", payload)
    assert info.value.size == len(payload)


def test_encoding_refuses_to_produce_an_oversized_payload() -> None:
    reading = m.MeterReading(
        meter_id="m1", ts=NOW, clock_synced=True, values=dict.fromkeys(Quantity, 1.0e300)
    )
    with pytest.raises(PayloadTooLarge):
        m.encode_message(telemetry(readings=[reading] * 2000))


def test_payload_device_must_match_topic_device() -> None:
    raw = m.encode_message(telemetry(device_id="site-1"))
    with pytest.raises(InvalidMessage, match="does not match topic device 'site-2'"):
        m.parse_for_topic("cm/v1/d/site-2/telemetry", raw)


def test_every_refusal_is_a_protocol_error() -> None:
    for exc in (PayloadTooLarge, MalformedJSON, UnsupportedVersion, InvalidMessage):
        assert issubclass(exc, MessageError)
        assert issubclass(exc, ProtocolError)
    assert issubclass(TopicError, ProtocolError)


def session_event(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "msg_id": new_ulid(),
        "device_id": "site-1",
        "seq": 1,
        "ts": NOW,
        "clock_synced": True,
        "session_id": new_ulid(),
        "event": SessionEventType.STOPPED,
        "event_seq": 3,
        "connector": 1,
        "offline": True,
        "credential": {"kind": CredentialKind.ID_TAG, "ref": "ab" * 32},
        "started_at": NOW,
        "meter_start_wh": 1000,
        "meter_wh": 2233,
        "energy_wh": 1233,
        "stopped_at": NOW + timedelta(minutes=10),
        "stop_reason": StopReason.LOCAL,
    }
    fields.update(changes)
    return fields


def test_a_stopped_event_needs_its_stop_fields() -> None:
    assert m.SessionEvent.model_validate(session_event()).energy_wh == 1233
    with pytest.raises(ValueError, match="needs stopped_at and stop_reason"):
        m.SessionEvent.model_validate(session_event(stop_reason=None))
    with pytest.raises(ValueError, match="has no stopped_at"):
        m.SessionEvent.model_validate(session_event(event=SessionEventType.UPDATED))
    with pytest.raises(ValueError, match="event_seq 1"):
        m.SessionEvent.model_validate(
            session_event(event=SessionEventType.STARTED, stopped_at=None, stop_reason=None)
        )


def test_negative_energy_cannot_be_expressed() -> None:
    with pytest.raises(ValueError, match="energy_wh"):
        m.SessionEvent.model_validate(session_event(energy_wh=-5))


def test_full_auth_list_cannot_remove_entries() -> None:
    entry = {"id_tag_hash": "0" * 64, "status": None}
    with pytest.raises(ValueError, match="Full update cannot remove"):
        m.AuthListUpdate.model_validate({"version": 2, "update_type": "Full", "entries": [entry]})
    diff = m.AuthListUpdate.model_validate(
        {"version": 2, "update_type": "Differential", "entries": [entry]}
    )
    assert diff.entries[0].status is None


def test_unknown_command_is_refused() -> None:
    data = {
        "v": 1, "msg_id": new_ulid(), "device_id": "site-1", "seq": 1,
        "ts": NOW.isoformat(), "clock_synced": True, "cmd_id": new_ulid(),
        "expires_at": NOW.isoformat(), "action": {"name": "self_destruct"},
    }  # fmt: skip
    with pytest.raises(InvalidMessage, match="action"):
        m.parse_message(MessageKind.CMD, json.dumps(data))


@given(st.sets(st.integers(0, 10_000), min_size=1))
def test_ack_ranges_cover_exactly_the_given_seqs(seqs: set[int]) -> None:
    ranges = m.ack_ranges(seqs)
    ack = m.Ack(msg_id=new_ulid(), device_id="d", seq=1, ts=NOW, clock_synced=True, ranges=ranges)
    assert {n for n in range(10_002) if ack.covers(n)} == seqs


@pytest.mark.parametrize("ranges", [[(5, 3)], [(1, 5), (5, 8)], [(6, 8), (1, 2)]])
def test_ack_ranges_must_be_sorted_disjoint_and_forward(ranges: list[tuple[int, int]]) -> None:
    with pytest.raises(ValueError, match="range"):
        m.Ack(msg_id=new_ulid(), device_id="d", seq=1, ts=NOW, clock_synced=True, ranges=ranges)


def test_last_will_is_offline_with_reserved_seq_zero() -> None:
    will = m.last_will("site-1", ts=NOW, clock_synced=False)
    assert (will.online, will.seq, will.device_id) == (False, 0, "site-1")
    assert m.parse_message("status", m.encode_message(will)) == will


def auth_decision(**changes: object) -> dict[str, object]:
    fields: dict[str, object] = {
        "v": 1,
        "msg_id": new_ulid(),
        "device_id": "site-1",
        "seq": 4,
        "ts": NOW.isoformat(),
        "clock_synced": True,
        "connector": 1,
        "credential": {"kind": "IdTag", "ref": "ab" * 32},
        "status": "Accepted",
        "reason": "local list: Accepted",
        "decided_at": NOW.isoformat(),
        "session_id": new_ulid(),
    }
    fields.update(changes)
    return fields


@pytest.mark.parametrize("status", list(AuthorizationStatus))
def test_a_decision_of_every_status_parses_on_the_auth_topic(status: AuthorizationStatus) -> None:
    accepted = status is AuthorizationStatus.ACCEPTED
    data = auth_decision(status=status.value, session_id=new_ulid() if accepted else None)
    parsed_topic, message = m.parse_for_topic("cm/v1/d/site-1/auth", json.dumps(data))
    assert parsed_topic.kind is MessageKind.AUTH
    assert isinstance(message, m.AuthDecision)
    assert message.status is status


@pytest.mark.parametrize(
    ("kind", "ref"),
    [
        ("IdTag", "04A21B9C7F"),  # a raw RFID UID
        ("IdTag", "AB" * 32),  # upper case: not how the agent writes a hash
        ("Pin", "12345678"),  # a raw booking PIN
        ("Pin", "pin-" + "0" * 31),
        ("Token", "v4.public.eyJjaGFyZ2VyX2lkIjoic2l0ZS0xIn0"),  # a token itself
    ],
)
def test_a_decision_never_carries_the_credential_itself(kind: str, ref: str) -> None:
    data = auth_decision(credential={"kind": kind, "ref": ref})
    with pytest.raises(InvalidMessage, match="never the"):
        m.parse_message(MessageKind.AUTH, json.dumps(data))


@pytest.mark.parametrize("status", [s for s in AuthorizationStatus if s.value != "Accepted"])
def test_only_an_accepted_decision_names_a_session(status: AuthorizationStatus) -> None:
    data = auth_decision(status=status.value)
    with pytest.raises(InvalidMessage, match="starts no session"):
        m.parse_message(MessageKind.AUTH, json.dumps(data))


def test_a_decision_needs_its_fields() -> None:
    data = auth_decision()
    del data["decided_at"]
    with pytest.raises(InvalidMessage) as info:
        m.parse_message(MessageKind.AUTH, json.dumps(data))
    assert info.value.fields == ("decided_at",)
