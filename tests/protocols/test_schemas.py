"""The committed JSON Schemas are what the models produce (run `make schemas` if this fails),
and they describe the wire: what we send validates, what we refuse mostly does not."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings

from protocols.messages import MESSAGE_TYPES, Envelope, TelemetryBatch, encode_message
from protocols.schemas import SCHEMA_DIR, message_schemas, render
from tests.protocols import strategies as s
from tests.protocols.test_messages import KIND_OF, telemetry


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
    assert "v" in schema["required"]  # defaulted in Python, required on the wire
    assert schema["additionalProperties"] is False
    assert len(message_schemas()) == len(MESSAGE_TYPES)


def test_patterns_are_ecma_262() -> None:
    """Python's \\Z anchors the models; JSON Schema readers get $ (they have no \\Z)."""
    text = "".join(render(schema) for schema in message_schemas().values())
    assert "\\\\Z" not in text
    assert '"pattern": "^[0-9a-f]{64}$"' in text


@functools.cache
def _validators() -> dict[type[Envelope], Any]:
    """A validator per message type, from the committed files (jsonschema-rs is pinned in the
    dev lock, through schemathesis; a missing package fails here, it never skips)."""
    import jsonschema_rs

    return {
        model: jsonschema_rs.validator_for(
            json.loads((SCHEMA_DIR / f"{kind.value}.json").read_text(encoding="utf-8"))
        )
        for kind, model in MESSAGE_TYPES.items()
    }


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(s.any_message)
def test_every_message_we_send_validates_against_its_schema(message: Envelope) -> None:
    validator = _validators()[type(message)]
    payload = json.loads(encode_message(message))
    errors = [e.message for e in validator.iter_errors(payload)]
    assert not errors, (KIND_OF[type(message)], errors)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda d: d.pop("v"), "v is required"),
        (lambda d: d.update(v=2), "unknown version"),
        (lambda d: d.update(extra=1), "unknown field"),
        (lambda d: d.update(msg_id="not-a-ulid"), "pattern"),
        (lambda d: d["readings"][0]["values"].update(kwh=1.0), "unknown quantity"),
        (lambda d: d.update(readings=[]), "minItems"),
    ],
)
def test_the_schema_refuses_what_the_parser_refuses(
    change: Callable[[dict[str, Any]], object], why: str
) -> None:
    validator = _validators()[TelemetryBatch]
    payload = json.loads(encode_message(telemetry()))
    change(payload)
    assert not validator.is_valid(payload), why
