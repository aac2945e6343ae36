"""With the agent stopped the commands use the bus themselves — and say so — and bad input
(an unknown meter id, a register range no device has, a busy or missing port) is one line on
stderr and exit 2, never a traceback."""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import pytest

from firmware_sim.site import MeterSpec
from tests.cli.rig import cli, one_line_error, sim_site, write_config

DIRECT = "the agent is not running"


@pytest.mark.integration
async def test_meter_scan_finds_two_meters_at_different_units_and_bauds_and_names_them(
    tmp_path: Path,
) -> None:
    meters = (MeterSpec("sdm630", 3, baud=9600), MeterSpec("sdm120", 7, baud=19200))
    async with sim_site(*meters, relay_unit=9) as sim:
        port = sim.endpoints()["serial"]
        result = await cli(
            "meter",
            "scan",
            "--port",
            port,
            "--units",
            "1-8",
            "--bauds",
            "9600,19200",
            "--parities",
            "N",
            "--json",
            config=tmp_path / "none.toml",
        )
    assert result.code == 0, result
    found = {(f["unit"], f["baud"]): f["model"] for f in result.json()["found"]}
    assert found == {(3, 9600): "sdm630", (7, 19200): "sdm120"}
    sdm630 = next(f for f in result.json()["found"] if f["unit"] == 3)
    assert 200 < sdm630["summary"]["voltage_l1_v"] < 260


@pytest.mark.integration
async def test_meter_scan_names_the_relay_as_an_unknown_device_and_warns_when_no_meter(
    tmp_path: Path,
) -> None:
    async with sim_site(MeterSpec("sdm630", 1, baud=9600), relay_unit=4) as sim:
        port = sim.endpoints()["serial"]
        result = await cli(
            "meter",
            "scan",
            "--port",
            port,
            "--units",
            "4-5",
            "--bauds",
            "38400",
            "--json",
            config=tmp_path / "none.toml",
        )
    assert result.code == 1, result  # a device, but no meter
    assert result.json()["found"] == [
        {"unit": 4, "baud": 38400, "parity": "N", "model": None, "candidates": [], "summary": {}}
    ]


@pytest.mark.integration
async def test_meter_read_raw_and_watch_use_the_bus_directly_and_say_so(tmp_path: Path) -> None:
    async with sim_site(MeterSpec("sdm630", 1)) as sim:
        config = write_config(tmp_path, sim)
        read = await cli("meter", "read", "--meter", "m1", "--json", config=config)
        raw = await cli(
            "meter", "raw", "--fc", "4", "--addr", "0", "--count", "2", "--json", config=config
        )
        watch = await cli(
            "meter", "watch", "--count", "2", "--interval", "0.2", "--json", config=config
        )
        human = await cli("meter", "read", config=config)
    assert read.code == 0, read
    assert DIRECT in read.stderr
    assert read.json()["via"] == "bus"
    values = read.json()["meters"][0]["values"]
    assert 200 < values["voltage_l1_v"] < 260
    assert 49 < values["frequency_hz"] < 51
    assert raw.code == 0, raw
    assert len(raw.json()["hex"].split()) == 2
    assert raw.json()["words"][0]["hex"].startswith("0x43")  # float32 ~230 V: 0x436x
    assert 200 < raw.json()["quantities"]["voltage_l1_v"] < 260
    lines = [json.loads(line) for line in watch.stdout.splitlines()]
    assert len(lines) == 2
    assert all(line["meters"][0]["values"]["voltage_l1_v"] > 200 for line in lines)
    assert "voltage_l1" in human.stdout
    assert "kWh" in human.stdout


@pytest.mark.integration
@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["meter", "read", "--meter", "nope"], "unknown meter id 'nope'"),
        (["meter", "raw", "--addr", "0", "--count", "200"], "bad register range"),
        (["meter", "raw", "--addr", "65535", "--count", "2"], "bad register range"),
        (["meter", "raw", "--fc", "7", "--addr", "0"], "function code 7"),
        (["meter", "scan", "--port", "/dev/ttyUSB-missing"], "does not exist"),
        (["meter", "scan", "--port", "PORT", "--units", "0-300"], "1..247"),
        (["relay", "on", "--connector", "5"], "unknown connector 5"),
    ],
)
async def test_bad_input_is_one_clear_line_and_exit_2(
    tmp_path: Path, args: list[str], words: str
) -> None:
    async with sim_site(MeterSpec("sdm630", 1)) as sim:
        config = write_config(tmp_path, sim)
        argv = [sim.endpoints()["serial"] if a == "PORT" else a for a in args]
        result = await cli(*argv, config=config)
    assert words in one_line_error(result)


@pytest.mark.integration
async def test_a_port_held_by_another_program_is_busy_one_line_and_exit_2(tmp_path: Path) -> None:
    async with sim_site(MeterSpec("sdm630", 1)) as sim:
        config = write_config(tmp_path, sim)
        port = sim.endpoints()["serial"]
        # What pyserial's exclusive=True (pymodbus, the agent) or a terminal program does.
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            read = await cli("meter", "read", config=config)
            scan = await cli("meter", "scan", "--port", port, "--units", "1", config=config)
            relay = await cli("relay", "off", config=config)
            doctor = await cli("doctor", "--json", config=config)
        finally:
            os.close(fd)
    for result in (read, scan, relay):
        line = one_line_error(result)
        assert f"port {port} is busy" in line
        assert f"pid {os.getpid()}" in line  # who holds it, from /proc/locks
    assert doctor.check(f"port {port}")["level"] == "FAIL"
    assert "fuser" in doctor.check(f"port {port}")["remedy"]
    assert doctor.check("meter m1")["remedy"] == "fix the serial port first (above)"


@pytest.mark.integration
async def test_relay_test_on_the_bus_passes_warns_without_an_ev_and_fails_when_welded(
    tmp_path: Path,
) -> None:
    async with sim_site(MeterSpec("sdm630", 1), plugged=False) as sim:
        config = write_config(tmp_path, sim)
        no_ev = await cli("relay", "test", "--json", config=config)
        sim.plug("7.4kw", capacity_wh=400_000.0)
        good = await cli("relay", "test", "--json", config=config)
        sim.set_relay(True)  # as a `relay on` beside a dead agent could have left it
        off = await cli("relay", "off", "--json", config=config)
        opened = not sim.site.relay_closed
        sim.set_relay(True)
        sim.set_fault("welded")
        welded = await cli("relay", "test", "--json", config=config)
    assert no_ev.code == 1, no_ev
    assert no_ev.json()["verdict"] == "no_power"
    assert DIRECT in no_ev.stderr
    assert good.code == 0, good
    assert good.json()["verdict"] == "pass"
    assert (off.code, off.json()["read_closed"], opened) == (0, False, True)
    assert welded.code == 2, welded
    assert welded.json()["verdict"] == "stuck_closed"
    assert welded.json()["open_read"] is False  # the coil obeyed; the contacts did not
