"""Configuration: a good file loads into frozen settings; a bad one names field, value, want."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from edge_agent.cli import main
from edge_agent.config import (
    CONFIG_ENV_VAR,
    ModbusCoilRelay,
    SerialLink,
    TcpLink,
    config_path,
    load_config,
    parse_config,
)
from edge_agent.errors import ConfigError

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
    with pytest.raises(ValidationError):
        settings.device_id = "other"  # type: ignore[misc]


def test_wrong_type_names_field_value_and_expectation() -> None:
    data = _data(GOOD.replace("baud = 9600", 'baud = "fast"', 1))
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    (problem,) = info.value.problems
    assert problem.field == "meters.0.link.rtu.baud"
    assert problem.value == "fast"
    assert "9600" in problem.expected


def test_unknown_key_is_refused_so_typos_are_caught() -> None:
    data = _data(GOOD.replace("poll_interval_s = 1.0", "poll_intervl_s = 1.0"))
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert _problem_fields(info.value) == ["meters.0.poll_intervl_s"]


def test_unknown_meter_model_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(_data(GOOD.replace('"sdm120"', '"sdm999"')))
    assert "sdm630" in str(info.value)
    assert _problem_fields(info.value) == ["meters.1"]


def test_cross_field_rules_report_every_problem_at_once() -> None:
    bad = (
        GOOD.replace('device_id = "site-001"', 'device_id = "Site/1"')
        .replace('meter = "m2"', 'meter = "m9"')
        .replace('coil = 0\nlink = { transport = "rtu", port = "/dev/ttyUSB0" }',
                 'coil = 0\nlink = { transport = "rtu", port = "/dev/ttyUSB0", baud = 19200 }')
    )  # fmt: skip
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
    path.write_text(GOOD.replace("max_current_a = 32", "max_current_a = -1").replace(
        "pin = 17", "pin = 99"))  # fmt: skip
    result = CliRunner().invoke(main, ["config", "validate", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2
    assert any("connectors.0.max_current_a: got -1" in line for line in lines)
    assert any("connectors.1.relay.gpio.pin: got 99" in line for line in lines)
