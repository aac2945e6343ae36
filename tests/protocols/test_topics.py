"""Topics: built and parsed symmetrically; anything else refused with TopicError."""

from __future__ import annotations

import pytest
from hypothesis import given

from protocols.enums import MessageKind
from protocols.errors import TopicError
from protocols.ids import is_ulid, new_ulid, validate_device_id
from protocols.topics import device_filter, ingest_filter, parse_topic, topic
from tests.protocols.strategies import device_ids


@given(device_ids)
def test_topic_round_trip(device_id: str) -> None:
    for kind in MessageKind:
        name = topic(device_id, kind)
        assert name == f"cm/v1/d/{device_id}/{kind.value}"
        parsed = parse_topic(name)
        assert (parsed.device_id, parsed.kind) == (device_id, kind)
        assert str(parsed) == name


@pytest.mark.parametrize(
    "device_id", ["", "a+b", "a#", "a/b", "$SYS", "A1", "-lead", "x" * 65, "caf\u00e9", "a b"]
)
def test_bad_device_ids_are_refused(device_id: str) -> None:
    with pytest.raises(TopicError, match="invalid device id"):
        validate_device_id(device_id)
    with pytest.raises(TopicError):
        topic(device_id, MessageKind.STATUS)


@pytest.mark.parametrize(
    "name",
    [
        "cm/v1/d/site-1",
        "cm/v1/d/site-1/telemetry/extra",
        "cm/v2/d/site-1/telemetry",
        "cm/v1/d/site-1/firmware",
        "cm/v1/d/+/telemetry",
        "cm/v1/d/#",
        "",
    ],
)
def test_bad_topics_are_refused(name: str) -> None:
    with pytest.raises(TopicError, match="bad topic") as info:
        parse_topic(name)
    assert info.value.topic == name


def test_filters() -> None:
    assert device_filter("site-1") == "cm/v1/d/site-1/#"
    assert ingest_filter(MessageKind.TELEMETRY) == "$share/ingest/cm/v1/d/+/telemetry"
    assert ingest_filter(MessageKind.SESSION, shared=False) == "cm/v1/d/+/session"


def test_ulids_are_sortable_by_time_and_unique() -> None:
    ids = [new_ulid(1_700_000_000_000 + i) for i in range(100)]
    assert ids == sorted(ids)
    assert len(set(ids)) == 100
    assert all(is_ulid(i) for i in ids)
    assert not is_ulid("8" + ids[0][1:])  # above the 48-bit time range
