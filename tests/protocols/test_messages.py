"""Wire messages: round trips, and every kind of bad input refused with one error type."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, get_args
from zoneinfo import ZoneInfo

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import messages as m
from protocols.enums import (
    AuthorizationStatus,
    CommandName,
    CommandStatus,
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
            m.MeterReading(
                meter_id="m1", ts=NOW, clock_synced=True, values={Quantity.POWER_W: 7360.0}
            )
        ],
    }
    fields.update(changes)
    return msgspec.convert(fields, m.TelemetryBatch)


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


def test_a_number_too_large_for_a_float_is_refused() -> None:
    data = json.loads(m.encode_message(telemetry()))
    data["readings"][0]["values"]["power_w"] = 1
    raw = json.dumps(data).replace('"power_w": 1', '"power_w": 1e999')
    with pytest.raises(InvalidMessage, match="out of range") as info:
        m.parse_message("telemetry", raw)
    # msgspec's path names the mapping, not the key inside it.
    assert info.value.fields == ("readings.0.values",)


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_nan_or_infinity_is_not_json(value: float) -> None:
    data = json.loads(m.encode_message(telemetry()))
    data["readings"][0]["values"]["power_w"] = value  # json.dumps writes Infinity, NaN
    with pytest.raises(MalformedJSON):
        m.parse_message("telemetry", json.dumps(data))


@pytest.mark.parametrize("value", [float("inf"), float("nan")])
def test_nan_or_infinity_is_never_sent(value: float) -> None:
    """Not even built: a reading's values are checked against their physical bounds when code
    builds one (protocols.meters.QUANTITY_BOUNDS), and neither lies within any bounds."""
    with pytest.raises(ValueError, match=r"values\.power_w: .* is outside its bounds"):
        m.MeterReading(meter_id="m1", ts=NOW, clock_synced=True, values={Quantity.POWER_W: value})


def test_oversized_payload_is_refused_before_parsing() -> None:
    payload = b'{"v": 1, "pad": "' + b"x" * m.MAX_PAYLOAD_BYTES + b'"}'
    with pytest.raises(PayloadTooLarge, match="limit is 262144 bytes") as info:
        m.parse_message("telemetry", payload)
    assert info.value.size == len(payload)


def test_encoding_refuses_to_produce_an_oversized_payload() -> None:
    reading = m.MeterReading(
        meter_id="m1", ts=NOW, clock_synced=True, values=dict.fromkeys(Quantity, 0.123456789012345)
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
    assert msgspec.convert(session_event(), m.SessionEvent).energy_wh == 1233
    with pytest.raises(ValueError, match="needs stopped_at and stop_reason"):
        msgspec.convert(session_event(stop_reason=None), m.SessionEvent)
    with pytest.raises(ValueError, match="has no stopped_at"):
        msgspec.convert(session_event(event=SessionEventType.UPDATED), m.SessionEvent)
    with pytest.raises(ValueError, match="event_seq 1"):
        msgspec.convert(
            session_event(event=SessionEventType.STARTED, stopped_at=None, stop_reason=None),
            m.SessionEvent,
        )


def test_rules_between_fields_hold_when_code_builds_a_message() -> None:
    """__post_init__ runs on construction too: a broken event cannot even be built."""
    event = msgspec.convert(session_event(), m.SessionEvent)
    with pytest.raises(ValueError, match="needs stopped_at and stop_reason"):
        msgspec.structs.replace(event, stop_reason=None)
    with pytest.raises(ValueError, match="needs stopped_at and stop_reason"):
        m.SessionEvent(
            msg_id=new_ulid(),
            device_id="site-1",
            seq=1,
            ts=NOW,
            clock_synced=True,
            session_id=new_ulid(),
            event=SessionEventType.STOPPED,
            event_seq=2,
            connector=1,
            offline=False,
            credential=m.CredentialRef(kind=CredentialKind.REMOTE, ref="u-1"),
            started_at=NOW,
            meter_start_wh=0,
            meter_wh=0,
            energy_wh=0,
            stopped_at=NOW,
        )


def test_negative_energy_cannot_be_expressed() -> None:
    with pytest.raises(ValueError, match="energy_wh"):
        msgspec.convert(session_event(energy_wh=-5), m.SessionEvent)
    # Built in Python, msgspec does not check ranges; encoding (the only way out) does.
    event = msgspec.structs.replace(msgspec.convert(session_event(), m.SessionEvent), energy_wh=-5)
    with pytest.raises(InvalidMessage, match="energy_wh") as info:
        m.encode_message(event)
    assert info.value.fields == ("energy_wh",)


def test_full_auth_list_cannot_remove_entries() -> None:
    entry = {"id_tag_hash": "0" * 64, "status": None}
    with pytest.raises(ValueError, match="Full update cannot remove"):
        msgspec.convert({"version": 2, "update_type": "Full", "entries": [entry]}, m.AuthListUpdate)
    diff = msgspec.convert(
        {"version": 2, "update_type": "Differential", "entries": [entry]}, m.AuthListUpdate
    )
    assert diff.entries[0].status is None


def test_unknown_command_is_refused() -> None:
    data = {
        "v": 1,
        "msg_id": new_ulid(),
        "device_id": "site-1",
        "seq": 1,
        "ts": NOW.isoformat(),
        "clock_synced": True,
        "cmd_id": new_ulid(),
        "expires_at": NOW.isoformat(),
        "action": {"name": "self_destruct"},
    }
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


# --- what msgspec changes about checking, and what it must not ----------------------------


def test_a_version_problem_is_named_wherever_v_is_written() -> None:
    """msgspec stops at the first problem in document order; the classification does not."""
    data = json.loads(m.encode_message(telemetry()))
    data["seq"] = "7"
    del data["v"]
    with pytest.raises(UnsupportedVersion, match="v is missing"):
        m.parse_message("telemetry", json.dumps(data))
    data["v"] = 2  # written after the bad seq
    with pytest.raises(UnsupportedVersion) as info:
        m.parse_message("telemetry", json.dumps(data))
    assert info.value.version == 2


def test_truncated_json_is_malformed_even_after_a_bad_field() -> None:
    with pytest.raises(MalformedJSON, match="not valid JSON"):
        m.parse_message("telemetry", b'{"v": 1, "seq": "7", "readings": [')


def test_deeply_nested_json_is_refused_as_malformed() -> None:
    deep = b'{"v": 1, "settings": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    with pytest.raises(MalformedJSON, match="nested too deeply"):
        m.parse_message("cmd", deep)


@pytest.mark.parametrize(
    ("change", "fields"),
    [
        (lambda d: d["readings"][0].update(ts="2026-11-24T03:00:00"), ("readings.0.ts",)),
        (lambda d: d["readings"][0]["values"].update(power_w="1"), ("readings.0.values",)),
        (lambda d: d["readings"][0]["values"].update(kwh=1.0), ("readings.0.values",)),
        (lambda d: d["readings"][0].update(meter_id="m1\n"), ("readings.0.meter_id",)),
        (lambda d: d["readings"][0].update(extra=1), ("readings.0.extra",)),
        (lambda d: d["readings"][0].pop("clock_synced"), ("readings.0.clock_synced",)),
        (lambda d: d.update(msg_id=new_ulid() + "\n"), ("msg_id",)),
        (lambda d: d.update(clock_synced=1), ("clock_synced",)),
    ],
)
def test_nested_problems_name_their_dotted_path(
    change: Callable[[dict[str, Any]], object], fields: tuple[str, ...]
) -> None:
    data = json.loads(m.encode_message(telemetry()))
    change(data)
    with pytest.raises(InvalidMessage) as info:
        m.parse_message("telemetry", json.dumps(data))
    assert info.value.fields == fields
    assert str(info.value).startswith(f"telemetry: {fields[0]}: ")


def test_a_command_action_is_named_by_its_tag() -> None:
    data = {
        "v": 1,
        "msg_id": new_ulid(),
        "device_id": "site-1",
        "seq": 1,
        "ts": "2026-11-24T03:00:00Z",
        "clock_synced": True,
        "cmd_id": new_ulid(),
        "expires_at": "2026-11-24T03:05:00+05:30",
        "action": {"name": "relay_test", "connector": 2},
    }
    command = m.parse_message(MessageKind.CMD, json.dumps(data))
    assert isinstance(command, m.Command)
    assert isinstance(command.action, m.RelayTest)
    assert command.action.name is CommandName.RELAY_TEST
    assert command.expires_at == datetime(2026, 11, 23, 21, 35, tzinfo=UTC)
    assert json.loads(m.encode_message(command))["action"] == {"name": "relay_test", "connector": 2}
    data["action"] = {"name": "relay_test", "connector": 33}
    with pytest.raises(InvalidMessage) as info:
        m.parse_message(MessageKind.CMD, json.dumps(data))
    assert info.value.fields == ("action.connector",)


def test_v_is_defaulted_in_python_and_written_on_the_wire() -> None:
    message = telemetry()
    assert message.v == m.SCHEMA_VERSION
    assert json.loads(m.encode_message(message))["v"] == 1
    assert m.to_builtins(message)["v"] == 1
    assert m.parse_message("telemetry", m.encode_message(message)).v == 1


def test_times_must_be_aware_when_code_builds_a_message() -> None:
    with pytest.raises(ValueError, match="ts must be timezone-aware"):
        m.MeterReading(meter_id="m1", ts=datetime(2026, 1, 1), clock_synced=True, values={})
    with pytest.raises(ValueError, match="device_id"):
        telemetry(device_id="Site/1")


def test_to_builtins_is_the_wire_form_as_json_values() -> None:
    message = telemetry()
    assert m.to_builtins(message) == json.loads(m.encode_message(message))


@pytest.mark.parametrize(
    ("data", "error"),
    [
        ({"x": object()}, "data.x: a object is not a JSON value"),
        ({"at": NOW}, "data.at: a datetime is not a JSON value"),
        ({"raw": b"\x00"}, "data.raw: a bytes is not a JSON value"),
        ({"s": {1, 2}}, "data.s: a set is not a JSON value"),
        ({"m": {1: 2}}, "data.m: key 1 is not a string"),
        ({"l": [1.0, float("nan")]}, "data.l.1: nan is not a JSON number"),
    ],
)
def test_a_message_with_values_json_cannot_carry_is_refused(
    data: dict[str, Any], error: str
) -> None:
    """msgspec would turn these into something else (a string, base64, a list, null) and the
    receiver would read what was not meant: refused when the message is built."""
    with pytest.raises((TypeError, ValueError), match=error.replace(".", r"\.")):
        m.CommandResult(
            msg_id=new_ulid(),
            device_id="site-1",
            seq=2,
            ts=NOW,
            clock_synced=True,
            cmd_id=new_ulid(),
            status=CommandStatus.ACCEPTED,
            data=data,
        )


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_an_optional_float_is_never_sent_as_null_for_a_non_finite_value(value: float) -> None:
    with pytest.raises(ValueError, match="oldest_age_s must be a finite number"):
        m.Backlog(rows=1, oldest_age_s=value)
    event = msgspec.convert(session_event(), m.SessionEvent)
    with pytest.raises(ValueError, match="power_w must be a finite number"):
        msgspec.structs.replace(event, power_w=value)


@pytest.mark.parametrize(
    "payload",
    [b'{"v": 1, "msg_id": "\xff"}', b'{"v": 1, "seq": "7", "device_id": "\xff"}'],
)
def test_a_payload_that_is_not_utf8_is_malformed(payload: bytes) -> None:
    with pytest.raises(MalformedJSON, match="not UTF-8"):
        m.parse_message("telemetry", payload)


def test_each_action_class_names_its_own_tag() -> None:
    for action in (
        m.StartSession,
        m.StopSession,
        m.AuthListUpdate,
        m.ConfigUpdate,
        m.Diagnostics,
        m.RelayTest,
    ):
        assert action.name.value == action.__struct_config__.tag


@pytest.mark.parametrize("ts", ["0001-01-01T00:00:00+05:30", "9999-12-31T23:59:59-05:00"])
def test_a_time_with_no_utc_equivalent_is_refused(ts: str) -> None:
    data = json.loads(m.encode_message(telemetry()))
    data["readings"][0]["ts"] = ts
    with pytest.raises(InvalidMessage, match="out of range in UTC") as info:
        m.parse_message("telemetry", json.dumps(data))
    assert info.value.fields == ("readings.0",)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(s.any_message, st.data())
def test_any_damage_to_a_message_is_a_message_error_or_a_valid_message(
    message: m.Envelope, data: st.DataObject
) -> None:
    """Whatever a device sends, the parser answers with a message or a MessageError: nothing
    else may escape into ingest."""
    payload = json.loads(m.encode_message(message))
    target = payload
    while isinstance(target, dict) and target and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(target)))
        if not isinstance(target[key], dict) or not target[key]:  # nothing inside to damage
            break
        target = target[key]
    key = data.draw(st.sampled_from(sorted(target)) | st.text(max_size=8))
    target[key] = data.draw(json_values)
    raw = json.dumps(payload).encode()
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(raw)))
        raw = raw[:cut] + data.draw(st.binary(max_size=4)) + raw[cut:]
    with contextlib.suppress(MessageError):
        m.parse_message(KIND_OF[type(message)], raw)


def test_the_version_field_reads_exactly_the_supported_versions() -> None:
    (v,) = (f for f in msgspec.structs.fields(m.Envelope) if f.name == "v")
    assert set(get_args(v.type)) == m.SUPPORTED_VERSIONS
    assert m.SCHEMA_VERSION in m.SUPPORTED_VERSIONS
