"""Configuration: a good file loads into frozen settings; a bad one names field, value, want."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_agent.cli import main
from edge_agent.config import (
    CONFIG_ENV_VAR,
    GpioRelay,
    MeterSettings,
    ModbusCoilRelay,
    SerialLink,
    TcpLink,
    build,
    config_path,
    load_config,
    parse_config,
    settings_to_dict,
)
from edge_agent.errors import ConfigError
from edge_agent.sync.from_config import sync_settings

GOOD = """
device_id = "site-001"

[[meters]]
id = "m1"
model = "sdm630"
unit_id = 1
poll_interval_s = 1.0
link = { transport = "rtu", port = "/dev/ttyUSB0", baud = 9600, parity = "N" }

[[meters]]
id = "m2"
model = "sdm120"
link = { transport = "tcp", host = "10.0.0.5", port = 502 }

[[connectors]]
id = 1
meter = "m1"
max_current_a = 32
[connectors.relay]
driver = "modbus-coil"
unit_id = 9
coil = 0
link = { transport = "rtu", port = "/dev/ttyUSB0" }

[[connectors]]
id = 2
meter = "m2"
max_current_a = 16
relay = { driver = "gpio", pin = 17 }

[store]
path = "/tmp/agent.db"
"""


def _data(text: str = GOOD) -> dict[str, object]:
    return tomllib.loads(text)


def _problem_fields(exc: ConfigError) -> list[str]:
    return [p.field for p in exc.problems]


def test_good_file_loads_into_typed_frozen_settings(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(GOOD)
    settings = load_config(path)
    assert settings.device_id == "site-001"
    assert isinstance(settings.meters[0].link, SerialLink)
    assert settings.meters[0].link.bus_key == "rtu:/dev/ttyUSB0"
    assert isinstance(settings.meters[1].link, TcpLink)
    assert isinstance(settings.connectors[0].relay, ModbusCoilRelay)
    assert settings.limits.overcurrent_ratio == pytest.approx(1.10)
    assert settings.limits.meter_silence_s == pytest.approx(3.0)
    assert settings.inputs.http.enabled is False
    assert settings.meters[0].link.transport == "rtu"
    assert settings.connectors[1].relay.driver == "gpio"
    assert settings.meter("m2").model == "sdm120"
    assert settings.connector(2).max_current_a == 16
    with pytest.raises(AttributeError):
        settings.device_id = "other"  # type: ignore[misc]


def test_toml_integers_are_accepted_for_numbers() -> None:
    settings = parse_config(_data())
    max_current = settings.connectors[0].max_current_a  # `max_current_a = 32` in the file
    assert isinstance(max_current, float)
    assert max_current == 32.0


@pytest.mark.parametrize(
    ("found", "value"),
    [("true", True), ('"9"', "9"), ("9.0", 9.0)],
    ids=["bool", "quoted", "float"],
)
def test_only_an_integer_is_an_integer(found: str, value: object) -> None:
    data = _data(GOOD.replace("unit_id = 9", f"unit_id = {found}"))
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    (problem,) = info.value.problems
    assert (problem.field, problem.value) == ("connectors.0.relay.unit_id", value)
    assert problem.expected == "an integer from 1 to 247"


def test_infinite_and_nan_numbers_are_refused() -> None:
    data = _data()
    data["limits"] = {"stuck_relay_power_w": float("inf"), "charging_power_w": float("nan")}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert _problem_fields(info.value) == ["limits.stuck_relay_power_w", "limits.charging_power_w"]
    assert all("finite" in p.expected for p in info.value.problems)


def test_wrong_type_names_field_value_and_expectation() -> None:
    data = _data(GOOD.replace("baud = 9600", 'baud = "fast"', 1))
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    (problem,) = info.value.problems
    assert problem.field == "meters.0.link.baud"
    assert problem.value == "fast"
    assert "9600" in problem.expected


def test_out_of_range_names_the_range() -> None:
    data = _data(GOOD.replace("unit_id = 1\n", "unit_id = 0\n", 1))
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value.problems[0]) == (
        "meters.0.unit_id: got 0, expected an integer from 1 to 247"
    )


def test_unknown_key_is_refused_so_typos_are_caught() -> None:
    data = _data(GOOD.replace("poll_interval_s = 1.0", "poll_intervl_s = 1.0"))
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert _problem_fields(info.value) == ["meters.0.poll_intervl_s"]
    assert "poll_interval_s" in info.value.problems[0].expected  # the known keys are listed


def test_unknown_meter_model_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_data(GOOD.replace('"sdm120"', '"sdm999"')))
    assert "sdm630" in str(info.value)
    assert _problem_fields(info.value) == ["meters.1.model"]
    assert info.value.problems[0].value == "sdm999"


@pytest.mark.parametrize(
    ("link", "value"),
    [
        ('{ transport = "udp", host = "h" }', "udp"),
        ('{ host = "h" }', None),
        ('{ transport = ["tcp"], host = "h" }', ["tcp"]),
        ('{ transport = { tcp = 1 }, host = "h" }', {"tcp": 1}),
    ],
    ids=["unknown", "missing", "a-list", "a-table"],
)
def test_bad_transport_lists_the_transports(link: str, value: object) -> None:
    data = _data(GOOD.replace('{ transport = "tcp", host = "10.0.0.5", port = 502 }', link))
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    (problem,) = info.value.problems
    assert (problem.field, problem.value) == ("meters.1.link.transport", value)
    assert '"rtu", "tcp"' in problem.expected


def test_a_name_with_a_trailing_newline_is_refused() -> None:
    """Python's ``$`` matches before a final newline; the wire's meter id pattern does not,
    so a name the config accepted would fail every telemetry batch."""
    data = tomllib.loads(GOOD)
    data["meters"][0]["id"] = "m1\n"
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert "meters.0.id" in _problem_fields(info.value)


def test_plaintext_mqtt_only_to_this_machine() -> None:
    data = _data(GOOD)
    data["mqtt"] = {"host": "broker.example", "tls": False}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    (problem,) = info.value.problems
    assert (problem.field, problem.value) == ("mqtt.tls", False)
    assert "localhost" in problem.expected
    data["mqtt"] = {"host": "localhost", "port": 1883, "tls": False}
    assert parse_config(data).mqtt is not None


def test_a_dropped_message_resend_is_no_later_than_the_ack_timeout() -> None:
    """``mqtt.no_subscribers_resend_s`` (the first resend of a message the broker dropped
    for want of a subscriber) defaults to 1 s, 0 turns it off, and past the ack timeout it
    would mean nothing: refused, naming the field."""
    data = _data(GOOD)
    data["mqtt"] = {"host": "broker.example"}
    mqtt = parse_config(data).mqtt
    assert mqtt is not None
    assert mqtt.no_subscribers_resend_s == 1.0
    data["mqtt"] = {"host": "broker.example", "no_subscribers_resend_s": 0}
    assert parse_config(data).mqtt is not None
    data["mqtt"] = {"host": "broker.example", "ack_timeout_s": 5, "no_subscribers_resend_s": 10}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    (problem,) = info.value.problems
    assert (problem.field, problem.value) == ("mqtt.no_subscribers_resend_s", 10)
    assert "ack_timeout_s" in problem.expected
    data["mqtt"] = {"host": "broker.example", "no_subscribers_resend_s": -1}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert "mqtt.no_subscribers_resend_s" in _problem_fields(info.value)


def test_the_backlog_pacing_reaches_the_uplink() -> None:
    """``mqtt.backlog_target_rtt_s`` paces the backlog (5 s by default, 0 off, negative
    refused); the uplink uses at most half the ack timeout."""
    data = _data(GOOD)
    data["mqtt"] = {"host": "broker.example"}
    settings = sync_settings(parse_config(data))
    assert settings is not None
    pacer = settings.uplink.pacer()
    assert pacer is not None
    assert pacer.target_rtt_s == 5.0
    data["mqtt"] = {"host": "broker.example", "ack_timeout_s": 4, "backlog_target_rtt_s": 5}
    settings = sync_settings(parse_config(data))
    assert settings is not None
    pacer = settings.uplink.pacer()
    assert pacer is not None
    assert pacer.target_rtt_s == 2.0
    data["mqtt"] = {"host": "broker.example", "backlog_target_rtt_s": 0}
    settings = sync_settings(parse_config(data))
    assert settings is not None
    assert settings.uplink.pacer() is None
    data["mqtt"] = {"host": "broker.example", "backlog_target_rtt_s": -1}
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert "mqtt.backlog_target_rtt_s" in _problem_fields(info.value)


def test_problems_in_different_places_are_reported_together() -> None:
    bad = (
        GOOD.replace("unit_id = 1\n", "unit_id = 0\n", 1)
        .replace('"sdm120"', '"sdm999"')
        .replace("max_current_a = 16", "max_current_a = 0")
        .replace("[store]", "[stor]")
    )
    with pytest.raises(ConfigError) as info:
        parse_config(_data(bad))
    assert _problem_fields(info.value) == [
        "meters.0.unit_id",
        "meters.1.model",
        "connectors.1.max_current_a",
        "stor",
    ]


def test_settings_round_trip_through_plain_data() -> None:
    settings = parse_config(_data())
    data = settings_to_dict(settings)
    assert data["meters"][0]["link"]["transport"] == "rtu"
    assert data["store"]["path"] == "/tmp/agent.db"
    assert parse_config(data) == settings


def test_one_group_is_built_validated_through_build() -> None:
    meter = build(
        MeterSettings,
        {"id": "m1", "model": "sdm630", "link": {"transport": "tcp", "host": "127.0.0.1"}},
    )
    assert meter.link == TcpLink(host="127.0.0.1")
    with pytest.raises(ConfigError) as info:
        build(GpioRelay, {"pin": 40}, source="test")
    assert str(info.value) == "test: pin: got 40, expected an integer from 0 to 27"


def test_cross_field_rules_report_every_problem_at_once() -> None:
    bad = (
        GOOD.replace('device_id = "site-001"', 'device_id = "Site/1"')
        .replace('meter = "m2"', 'meter = "m9"')
        .replace(
            'coil = 0\nlink = { transport = "rtu", port = "/dev/ttyUSB0" }',
            'coil = 0\nlink = { transport = "rtu", port = "/dev/ttyUSB0", baud = 19200 }',
        )
    )
    with pytest.raises(ConfigError) as info:
        parse_config(_data(bad))
    assert sorted(_problem_fields(info.value)) == [
        "connectors.0.relay.link",
        "connectors.1.meter",
        "device_id",
    ]


def test_missing_required_section_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"device_id": "x"})
    assert sorted(_problem_fields(info.value)) == ["connectors", "meters"]


def test_unreadable_and_malformed_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="readable"):
        load_config(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("device_id = ")
    with pytest.raises(ConfigError, match="TOML"):
        load_config(broken)


def test_config_path_prefers_flag_then_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_ENV_VAR, "/env/agent.toml")
    assert config_path(Path("/flag.toml")) == Path("/flag.toml")
    assert config_path(None) == Path("/env/agent.toml")
    monkeypatch.delenv(CONFIG_ENV_VAR)
    assert config_path(None) == Path("/etc/chargemitra/agent.toml")


def test_cli_validate_exits_0_for_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(GOOD)
    result = CliRunner().invoke(main, ["config", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_cli_validate_exits_2_with_one_line_per_problem(tmp_path: Path) -> None:
    path = tmp_path / "agent.toml"
    path.write_text(
        GOOD.replace("max_current_a = 32", "max_current_a = -1").replace("pin = 17", "pin = 99")
    )
    result = CliRunner().invoke(main, ["config", "validate", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert any("connectors.0.max_current_a: got -1" in line for line in lines)
    assert any("connectors.1.relay.pin: got 99" in line for line in lines)
