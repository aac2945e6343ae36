"""The committed JSON Schemas are what the models produce (run `make schemas` if this fails)."""

from __future__ import annotations

import json

from protocols.messages import MESSAGE_TYPES, encode_message
from protocols.schemas import SCHEMA_DIR, message_schemas, render
from tests.protocols.test_messages import telemetry


def test_committed_schemas_are_current() -> None:
    expected = message_schemas()
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.json")) == sorted(expected)
    for name, schema in expected.items():
        committed = (SCHEMA_DIR / name).read_text(encoding="utf-8")
        assert committed == render(schema), f"{name} is stale: run `make schemas`"


def test_schema_describes_every_field_of_a_real_message() -> None:
    schema = message_schemas()["telemetry.json"]
    payload = json.loads(encode_message(telemetry()))
    assert set(payload) <= set(schema["properties"])
    assert set(schema["required"]) <= set(payload)
    assert schema["additionalProperties"] is False
    assert len(message_schemas()) == len(MESSAGE_TYPES)
