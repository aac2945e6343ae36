"""The technician CLI's test rig: the real entry point as a subprocess, the simulator on a
pseudo-terminal (RTU, each device at its own line speed), the project's Mosquitto config with
TLS, and the agent daemon as a process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec
from tests.edge.agent_rig import wait_for_socket

CLI = Path(sys.executable).parent / "chargemitra-agent"
DEVICE = "cli-site-1"
DEVICE_PASSWORD = "cli-device-secret"
INGEST_PASSWORD = "cli-ingest-secret"
USERS = {DEVICE: DEVICE_PASSWORD, "cloud-ingest": INGEST_PASSWORD}
#: A fast line keeps the tests quick; the simulator still checks each device's speed.
BAUD = 38400
TAG = "0A1B2C3D4E"


@dataclass(frozen=True)
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def check(self, name: str) -> dict[str, str]:
        """One doctor check from ``--json`` output, by name."""
        for check in self.json()["checks"]:
            if check["name"] == name:
                return dict(check)
        raise AssertionError(f"no check {name!r} in {self.stdout}")


async def cli(
    *args: str,
    config: Path | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 60.0,
) -> Result:
    """Run ``chargemitra-agent ARGS`` (the installed console script) and wait for it."""
    full_env = {**os.environ, "CHARGEMITRA_CLOCK_SYNCED": "1", "COLUMNS": "200", **(env or {})}
    if config is not None:
        full_env["CHARGEMITRA_AGENT_CONFIG"] = str(config)
    proc = await asyncio.create_subprocess_exec(
        str(CLI),
        *args,
        env=full_env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout_s)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Result(proc.returncode, out.decode(), err.decode())


def one_line_error(result: Result) -> str:
    """The failure contract: exit 2, exactly one line on stderr, no traceback."""
    assert result.code == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@asynccontextmanager
async def sim_site(
    *meters: MeterSpec, relay_unit: int | None = 9, plugged: bool = True
) -> AsyncIterator[SimSite]:
    """Meters and a coil relay on one RTU line (a pty) at ``BAUD``; devices answer only at
    their own speed, as on a real line."""
    config = SimConfig(
        meters=meters or (MeterSpec("sdm630", 1),),
        relay_unit=relay_unit,
        serial=True,
        baud=BAUD,
        check_baud=True,
        turnaround_s=0.002,
        control=None,
        state_path=None,
    )
    async with SimSite(config) as sim:
        if plugged:
            sim.plug("7.4kw", capacity_wh=400_000.0)
        yield sim


def write_config(
    tmp: Path,
    sim: SimSite,
    *,
    baud: int = BAUD,
    meter_unit: int = 1,
    relay_unit: int = 9,
    mqtt: str = "",
    clock: str = "always",
    name: str = "agent.toml",
    tables: str = "",
) -> Path:
    """The agent's configuration for ``sim``; ``mqtt`` and ``tables`` are TOML appended."""
    port = sim.endpoints()["serial"]
    link = f'{{ transport = "rtu", port = "{port}", baud = {baud} }}'
    path = tmp / name
    path.write_text(f"""
device_id = "{DEVICE}"

[[meters]]
id = "m1"
model = "sdm630"
unit_id = {meter_unit}
poll_interval_s = 0.5
link = {link}

[[connectors]]
id = 1
meter = "m1"
max_current_a = 32
relay = {{ driver = "modbus-coil", unit_id = {relay_unit}, coil = 0, link = {link} }}

[bus]
timeout_s = 0.3
retries = 0
frame_gap_s = 0.002

[limits]
# The relay test watches power for this long (+1 s) each way: keep tests quick.
stuck_relay_check_s = 0.5

[store]
path = "{tmp / "agent.db"}"

[clock]
trust = "{clock}"

[control]
socket_path = "{tmp / "agent.sock"}"
{mqtt}
{tables}
""")
    return path


def mqtt_table(tmp: Path, *, port: int, ca: Path, password: str = DEVICE_PASSWORD) -> str:
    (tmp / "mqtt.password").write_text(password)
    return f"""
[mqtt]
host = "127.0.0.1"
port = {port}
ca_file = "{ca}"
password_file = "{tmp / "mqtt.password"}"
status_interval_s = 5
"""


@asynccontextmanager
async def agent_process(config: Path, tmp: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """``chargemitra-agent run`` as a process, until SIGTERM."""
    with (tmp / "agent.log").open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "edge_agent.cli",
            "run",
            "--log-level",
            "INFO",
            "--config",
            str(config),
            stdout=log,
            stderr=log,
        )
    try:
        await wait_for_socket(tmp / "agent.sock")
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
