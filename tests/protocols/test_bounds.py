"""Physical bounds in the wire contract (issue 13): every reading quantity, a session's power
and every timestamp have a finite range, so no accepted message can overflow the cloud's
aggregates or stand as the "latest" value for decades."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from protocols import messages as m
from protocols.errors import InvalidMessage
from protocols.ids import new_ulid
from protocols.meters import QUANTITY_BOUNDS, Quantity
from protocols.meters.quantities import LARGEST_BOUND
from protocols.schemas import message_schemas

NOW = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)


def _batch(values: dict[Quantity, float], *, ts: datetime = NOW) -> m.TelemetryBatch:
    return m.TelemetryBatch(
        msg_id=new_ulid(),
        device_id="site-1",
        seq=1,
        ts=NOW,
        clock_synced=True,
        readings=[m.MeterReading(meter_id="m1", ts=ts, clock_synced=True, values=values)],
    )


def _payload(**reading: Any) -> bytes:
    """A telemetry payload whose one reading has ``reading``'s fields replaced."""
    data = json.loads(m.encode_message(_batch({Quantity.POWER_W: 1.0})))
    data["readings"][0] |= reading
    return json.dumps(data).encode()


def test_every_quantity_has_a_finite_range_no_larger_than_a_whole_wh_float() -> None:
    assert set(QUANTITY_BOUNDS) == set(Quantity)
    for low, high in QUANTITY_BOUNDS.values():
        assert math.isfinite(low)
        assert math.isfinite(high)
        assert low < high
    assert LARGEST_BOUND == 2**53


def test_the_poison_reading_of_issue_13_is_refused_naming_the_field() -> None:
    with pytest.raises(InvalidMessage, match=r"readings\.0: values\.power_w: 1e\+308") as info:
        m.parse_message("telemetry", _payload(values={"power_w": 1e308}))
    assert info.value.fields == ("readings.0",)


@pytest.mark.parametrize("quantity", list(Quantity))
def test_each_quantity_takes_its_bounds_and_refuses_past_them(quantity: Quantity) -> None:
    low, high = QUANTITY_BOUNDS[quantity]
    for value in (low, high):
        parsed = m.parse_message("telemetry", _payload(values={quantity.value: value}))
        assert isinstance(parsed, m.TelemetryBatch)
        assert parsed.readings[0].values == {quantity: value}
    for value in (low - max(1.0, abs(low)), high * 2):
        with pytest.raises(InvalidMessage, match="outside its bounds"):
            m.parse_message("telemetry", _payload(values={quantity.value: value}))


@pytest.mark.parametrize("quantity", [q for q in Quantity if q.value.endswith("_wh")])
def test_negative_energy_is_refused(quantity: Quantity) -> None:
    with pytest.raises(InvalidMessage, match="outside its bounds"):
        m.parse_message("telemetry", _payload(values={quantity.value: -1.0}))
    with pytest.raises(ValueError, match="outside its bounds"):
        _batch({quantity: -0.5})


def test_code_cannot_build_a_reading_out_of_bounds() -> None:
    with pytest.raises(ValueError, match=r"values\.voltage_l1_v"):
        _batch({Quantity.VOLTAGE_L1_V: 1e6})
    with pytest.raises(ValueError, match=r"values\.power_factor"):
        _batch({Quantity.POWER_FACTOR: 1.5})


def test_a_session_power_is_bounded_like_a_reading() -> None:
    data = {
        "v": 1,
        "msg_id": new_ulid(),
        "device_id": "site-1",
        "seq": 1,
        "ts": "2026-03-01T10:00:00Z",
        "clock_synced": True,
        "session_id": new_ulid(),
        "event": "started",
        "event_seq": 1,
        "connector": 1,
        "offline": False,
        "credential": {"kind": "IdTag", "ref": "a" * 64},
        "started_at": "2026-03-01T10:00:00Z",
        "meter_start_wh": 0,
        "meter_wh": 0,
        "energy_wh": 0,
        "power_w": 1e308,
    }
    with pytest.raises(InvalidMessage, match="power_w"):
        m.parse_message("session", json.dumps(data))


@pytest.mark.parametrize("ts", ["2100-01-01T00:00:00Z", "9999-12-31T23:59:59Z"])
def test_no_timestamp_reads_past_2099(ts: str) -> None:
    with pytest.raises(InvalidMessage, match=r"outside 1970-01-01 \.\. 2099-12-31"):
        m.parse_message("telemetry", _payload(ts=ts, clock_synced=False))


def test_an_unsynchronised_clock_may_read_1970_and_says_so() -> None:
    parsed = m.parse_message("telemetry", _payload(ts="1970-01-01T00:02:13Z", clock_synced=False))
    assert isinstance(parsed, m.TelemetryBatch)
    assert parsed.readings[0].ts.year == 1970
    with pytest.raises(InvalidMessage, match="outside"):
        m.parse_message("telemetry", _payload(ts="1969-12-31T23:59:59Z", clock_synced=False))


def test_a_synchronised_clock_cannot_read_a_time_before_devices_existed() -> None:
    with pytest.raises(InvalidMessage, match="before 2020-01-01 on a clock that says"):
        m.parse_message("telemetry", _payload(ts="1970-01-01T00:02:13Z", clock_synced=True))
    envelope = json.loads(_payload())
    envelope["ts"] = "2019-12-31T23:59:59Z"
    with pytest.raises(InvalidMessage, match="before 2020-01-01"):
        m.parse_message("telemetry", json.dumps(envelope))
    envelope["clock_synced"] = False
    assert isinstance(m.parse_message("telemetry", json.dumps(envelope)), m.TelemetryBatch)


def test_readings_far_ahead_of_the_receivers_clock_are_named() -> None:
    batch = m.TelemetryBatch(
        msg_id=new_ulid(),
        device_id="site-1",
        seq=1,
        ts=NOW,
        clock_synced=True,
        readings=[
            m.MeterReading(
                meter_id="m1", ts=NOW + ahead, clock_synced=True, values={Quantity.POWER_W: 1.0}
            )
            for ahead in (timedelta(0), m.MAX_CLOCK_AHEAD, m.MAX_CLOCK_AHEAD + timedelta(1))
        ],
    )
    assert m.readings_ahead_of(batch, NOW) == [2]
    assert m.readings_ahead_of(batch, NOW + timedelta(days=2)) == []


def test_the_json_schema_carries_each_quantitys_bounds() -> None:
    schema = message_schemas()["telemetry.json"]
    values = schema["$defs"]["MeterReading"]["properties"]["values"]
    assert values["properties"]["energy_import_wh"] == {"minimum": 0.0, "maximum": 2.0**53}
    assert values["properties"]["power_factor"] == {"minimum": -1.05, "maximum": 1.05}
    assert set(values["properties"]) == {q.value for q in Quantity}
