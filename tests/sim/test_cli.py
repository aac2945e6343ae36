"""The real ``chargemitra-sim`` entry point, as a subprocess: bad input gives one clear line
and a non-zero exit; a running site prints its endpoints and obeys the client commands."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.client import ModbusTcpClient

SIM = str(Path(sys.executable).with_name("chargemitra-sim"))


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SIM, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_unknown_model(tmp_path: Path) -> None:
    result = run(
        "meter", "--model", "sdm999", "--tcp", "127.0.0.1:0", "--state", str(tmp_path / "s")
    )
    assert_one_line_error(result, "unknown meter model 'sdm999'", "sdm630")


@pytest.mark.parametrize(("baud", "needle"), [("12345", "baud 12345"), ("fast", "'fast'")])
def test_bad_baud(tmp_path: Path, baud: str, needle: str) -> None:
    result = run(
        "meter", "--model", "sdm120", "--serial", "--baud", baud, "--state", str(tmp_path / "s")
    )
    assert_one_line_error(result, needle, "baud")


def test_usage_errors_are_one_line_too() -> None:
    assert_one_line_error(run("meter"), "Missing option '--model'")


def test_bad_parity(tmp_path: Path) -> None:
    result = run(
        "meter", "--model", "sdm120", "--serial", "--parity", "X", "--state", str(tmp_path / "s")
    )
    assert_one_line_error(result, "parity 'X'")


def test_busy_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run(
            "meter",
            "--model",
            "sdm630",
            "--tcp",
            f"127.0.0.1:{port}",
            "--control",
            "127.0.0.1:0",
            "--state",
            str(tmp_path / "s"),
        )
    assert_one_line_error(result, f"127.0.0.1:{port}", "address already in use")


def test_bad_fault_name() -> None:
    result = run("fault", "melted", "--control", "http://127.0.0.1:9")
    assert_one_line_error(result, "unknown fault 'melted'", "timeout")


def test_no_simulator_to_talk_to() -> None:
    result = run("plug", "--control", "http://127.0.0.1:9")
    assert_one_line_error(result, "cannot reach the simulator")


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["meter"],
        ["site"],
        ["fault"],
        ["plug"],
        ["unplug"],
        ["tap"],
        ["keys"],
        ["relay"],
        ["state"],
        ["advance"],
    ],
)
def test_help_everywhere(command: list[str]) -> None:
    result = run(*command, "--help")
    assert result.returncode == 0
    assert "Usage:" in result.stdout


@pytest.fixture
def running_site(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with subprocess.Popen(
        [
            SIM,
            "site",
            "--tcp",
            "127.0.0.1:0",
            "--control",
            "127.0.0.1:0",
            "--manual-clock",
            "--plugged",
            "7.4kw",
            "--state",
            str(tmp_path / "state.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            yield json.loads(process.stdout.readline())
        finally:
            process.terminate()
            _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr
    # Terminating saved the state: energy flowed in the test.
    assert sum(json.loads((tmp_path / "state.json").read_text())["energy_wh"]) > 0


def test_site_prints_its_endpoints_and_obeys_commands(running_site: dict[str, Any]) -> None:
    url = running_site["control"]
    assert running_site["serial"].startswith("/dev/pts/")
    assert running_site["rfid"].startswith("/dev/pts/")
    assert running_site["meters"] == {"1": "sdm630"}
    assert running_site["relay_unit"] == 2
    host, port = running_site["tcp"].split(":")
    client = ModbusTcpClient(host, port=int(port), timeout=1, retries=0)
    assert client.connect()  # type: ignore[no-untyped-call]  # pymodbus leaves it untyped
    try:
        assert json.loads(run("state", "--control", url).stdout)["ev"]["profile"] == "7.4kw"
        assert run("plug", "--profile", "11kw", "--control", url).returncode == 0
        assert not client.write_coil(0, value=True, device_id=2).isError()
        assert run("advance", "60s", "--control", url).returncode == 0
        state = json.loads(run("state", "--control", url).stdout)
        assert state["meters"]["1"]["values"]["power_w"] == pytest.approx(11000)
        assert state["meters"]["1"]["values"]["energy_import_wh"] == pytest.approx(11000 / 60)
        fault = run("fault", "exception", "--code", "6", "--for", "30s", "--control", url)
        assert fault.returncode == 0, fault.stderr
        assert client.read_input_registers(0, count=2, device_id=1).exception_code == 6
        assert run("fault", "exception", "--off", "--control", url).returncode == 0
        assert not client.read_input_registers(0, count=2, device_id=1).isError()
        assert run("tap", "0A1B2C3D4E", "--control", url).returncode == 0
        bad_tag = run("tap", "nope", "--control", url)
        assert_one_line_error(bad_tag, "10 hex characters")
        assert run("keys", "123456#", "--control", url).returncode == 0
    finally:
        client.close()  # type: ignore[no-untyped-call]
