"""Poll intervals go down to the bus's own limit: 1 ms on Modbus TCP, the computed wire time of
a full read on an RS-485 line (refused below it, naming the floor), and the agent as deployed
keeps up with a TCP meter polled far faster than the old 0.05 s floor allowed."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.config import parse_config
from edge_agent.errors import ConfigError
from edge_agent.meters.line import rtu_read_time_s
from firmware_sim.line import read_poll_time_s
from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec
from protocols.meters import load_map, plan_blocks

from .agent_rig import control, wait_for_socket, wait_until, write_config

AGENT = [sys.executable, "-m", "edge_agent.cli", "run", "--log-level", "WARNING", "--config"]
SDM630_COUNTS = [b.count for b in plan_blocks(load_map("sdm630"))]


def _site(link: dict[str, Any], interval_s: float, frame_gap_s: float = 0.005) -> dict[str, Any]:
    return {
        "device_id": "site-test",
        "meters": [{"id": "m1", "model": "sdm630", "poll_interval_s": interval_s, "link": link}],
        "connectors": [{"id": 1, "meter": "m1", "max_current_a": 32, "relay": {"driver": "none"}}],
        "bus": {"frame_gap_s": frame_gap_s},
    }


def test_a_tcp_meter_may_be_polled_every_millisecond() -> None:
    link = {"transport": "tcp", "host": "10.0.0.5"}
    assert parse_config(_site(link, 0.001)).meters[0].poll_interval_s == 0.001
    assert parse_config(_site(link, 0.01)).meters[0].poll_interval_s == 0.01
    with pytest.raises(ConfigError) as info:
        parse_config(_site(link, 0.0))
    assert info.value.problems[0].field == "meters.0.poll_interval_s"


@pytest.mark.parametrize("baud", [9600, 19200, 115200])
def test_an_rtu_meter_is_refused_below_its_full_read_wire_time(baud: int) -> None:
    link = {"transport": "rtu", "port": "/dev/ttyUSB0", "baud": baud}
    floor = rtu_read_time_s(SDM630_COUNTS, baud, 0.005)
    # The same wire arithmetic as the simulator's line model (Modbus serial line v1.02 §2.5).
    assert floor == pytest.approx(
        sum(read_poll_time_s(c, baud, 0.0) for c in SDM630_COUNTS) + 0.005 * len(SDM630_COUNTS)
    )
    with pytest.raises(ConfigError) as info:
        parse_config(_site(link, round(floor * 0.9, 4)))
    (problem,) = info.value.problems
    assert problem.field == "meters.0.poll_interval_s"
    assert f"at least {floor:.3f} s" in problem.expected
    assert f"{baud} baud" in problem.expected
    accepted = parse_config(_site(link, round(floor + 0.001, 4))).meters[0]
    assert accepted.poll_interval_s > floor


def test_the_frame_gap_counts_in_the_rtu_floor() -> None:
    link = {"transport": "rtu", "port": "/dev/ttyUSB0", "baud": 115200}
    bare = rtu_read_time_s(SDM630_COUNTS, 115200, 0.0)
    assert parse_config(_site(link, round(bare + 0.001, 4), frame_gap_s=0.0))
    with pytest.raises(ConfigError):
        parse_config(_site(link, round(bare + 0.001, 4), frame_gap_s=0.05))


@pytest.mark.integration
async def test_the_agent_polls_a_tcp_meter_at_a_5_ms_interval_and_stores_every_reading(
    tmp_path: Path,
) -> None:
    config = SimConfig(
        meters=(MeterSpec("sdm630", 1),),
        relay_unit=2,
        tcp=("127.0.0.1", 0),
        turnaround_s=0.0,
        control=None,
        state_path=None,
    )
    async with SimSite(config) as sim:
        port = int(sim.endpoints()["tcp"].rsplit(":", 1)[1])
        path = write_config(tmp_path, port=port, poll_interval_s=0.005, relay_unit=2)
        sock = tmp_path / "agent.sock"
        proc = await asyncio.create_subprocess_exec(
            *AGENT, str(path), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
        )
        try:
            await wait_for_socket(sock)

            async def many_readings() -> bool:
                status = await control(sock, cmd="status")
                return bool(status["store_writer"]["committed"] >= 300)

            await wait_until(many_readings, timeout_s=60)
        finally:
            if proc.returncode is None:
                proc.terminate()
            _, stderr = await proc.communicate()
        assert proc.returncode == 0, stderr.decode()
    check = sqlite3.connect(tmp_path / "agent.db")
    stored = check.execute("SELECT count(*) FROM readings").fetchone()[0]
    queued = check.execute("SELECT count(*) FROM outbox WHERE kind = 'telemetry'").fetchone()[0]
    check.close()
    # Everything handed over was committed at shutdown, each reading with its telemetry row.
    assert stored >= 300
    assert queued >= 1
