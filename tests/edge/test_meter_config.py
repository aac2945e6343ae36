"""A site's own register map file and its choice of quantities are checked when the config
loads: each problem names the field, the value found and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.config import load_config, register_map_of
from edge_agent.errors import ConfigError, ConfigProblem

GOOD_MAP = """
name = "Site meter"
source = "the site's own manual, page 12"
function = "holding"
phases = 1

[serial]
baud = 9600
parity = "N"
stop_bits = 1

[[registers]]
quantity = "energy_import_wh"
address = 0
type = "uint32"
scale = 10.0
[[registers]]
quantity = "power_w"
address = 2
type = "int32"
[[registers]]
quantity = "current_l1_a"
address = 4
type = "uint16"
scale = 0.01
"""


def _config(tmp: Path, meter: str) -> Path:
    path = tmp / "agent.toml"
    path.write_text(f"""
device_id = "site-1"

[[meters]]
id = "m1"
link = {{ transport = "tcp", host = "127.0.0.1" }}
{meter}

[[connectors]]
id = 1
meter = "m1"
max_current_a = 32
relay = {{ driver = "fake" }}

[store]
path = "{tmp / "agent.db"}"
""")
    return path


def _problems(tmp: Path, meter: str) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as refused:
        load_config(_config(tmp, meter))
    return refused.value.problems


def test_a_good_map_file_is_the_meters_map(tmp_path: Path) -> None:
    (tmp_path / "site.toml").write_text(GOOD_MAP)
    settings = load_config(
        _config(tmp_path, f'model = "acme-dinrail"\nmap_file = "{tmp_path / "site.toml"}"')
    )
    register_map = register_map_of(settings.meters[0])
    assert (register_map.model, register_map.name) == ("acme-dinrail", "Site meter")
    assert len(register_map.registers) == 3


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("registers = [", "not valid TOML"),
        (GOOD_MAP.replace('quantity = "power_w"', 'quantity = "watts"'), "bad or missing field"),
        (GOOD_MAP.replace('quantity = "power_w"', 'quantity = "voltage_l1_v"'), "power_w"),
        (GOOD_MAP.replace("address = 2", "address = 1"), "overlaps"),
    ],
)
def test_a_bad_map_file_is_refused_with_the_file_and_the_reason(
    tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(text)
    [problem] = _problems(tmp_path, f'model = "acme"\nmap_file = "{path}"')
    assert problem.field == "meters.0.map_file"
    assert problem.value == str(path)
    assert "catalogue's TOML format" in problem.expected
    assert reason in problem.expected


def test_a_missing_map_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    [problem] = _problems(tmp_path, f'model = "acme"\nmap_file = "{missing}"')
    assert (problem.field, problem.value) == ("meters.0.map_file", str(missing))
    assert "cannot read it" in problem.expected


def test_an_unknown_model_without_a_map_file_names_the_way_out(tmp_path: Path) -> None:
    [problem] = _problems(tmp_path, 'model = "acme"')
    assert (problem.field, problem.value) == ("meters.0.model", "acme")
    assert "mfm383a" in problem.expected
    assert "em6400ng" in problem.expected
    assert "map_file" in problem.expected


def test_quantities_must_be_in_the_map_and_include_what_sessions_need(tmp_path: Path) -> None:
    problems = _problems(
        tmp_path,
        'model = "sdm120"\nquantities = ["energy_import_wh", "power_w", "voltage_l2_v"]',
    )
    by_field = {p.field: p for p in problems}
    assert by_field["meters.0.quantities.2"].value == "voltage_l2_v"
    assert "sdm120 map holds" in by_field["meters.0.quantities.2"].expected
    assert "current_l1_a" in by_field["meters.0.quantities"].expected


def test_a_quantity_name_that_does_not_exist_lists_the_known_ones(tmp_path: Path) -> None:
    [problem] = _problems(
        tmp_path,
        'model = "sdm630"\nquantities = ["energy_import_wh", "power_w", "current_l1_a", "kwh"]',
    )
    assert (problem.field, problem.value) == ("meters.0.quantities.3", "kwh")
    assert '"energy_import_wh"' in problem.expected


def test_a_valid_choice_of_quantities_loads(tmp_path: Path) -> None:
    settings = load_config(
        _config(
            tmp_path,
            'model = "em6400ng"\n'
            'quantities = ["energy_import_wh", "power_w", "current_l1_a", "frequency_hz"]',
        )
    )
    quantities = settings.meters[0].quantities
    assert quantities is not None
    assert [q.value for q in quantities] == [
        "energy_import_wh",
        "power_w",
        "current_l1_a",
        "frequency_hz",
    ]
