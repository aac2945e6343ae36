"""The running agent's footprint: resident memory and CPU with 4 meters polled at 1 Hz.

``python -m bench.edge_footprint`` starts the simulator (``chargemitra-sim site``, 4 meters on
Modbus TCP, a coil relay) and ``chargemitra-agent run`` as separate processes, lets the agent
settle, then measures the agent process alone with psutil over a window: ``agent_rss_mb``
(resident set at the end, MiB; goal <= 40) and ``agent_cpu_percent`` (user + system time over
wall time, % of one core; goal <= 1). One JSON line each (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# psutil ships no type stubs and pyproject's mypy overrides do not list it yet.
import psutil  # type: ignore[import-untyped]

METERS = (("m1", "sdm630", 1), ("m2", "sdm630", 2), ("m3", "sdm120", 3), ("m4", "sdm72d", 4))


def _config(tmp: Path, host: str, port: int) -> Path:
    link = f'{{ transport = "tcp", host = "{host}", port = {port} }}'
    meters = "".join(
        f'\n[[meters]]\nid = "{mid}"\nmodel = "{model}"\nunit_id = {unit}\n'
        f"poll_interval_s = 1.0\nlink = {link}\n"
        for mid, model, unit in METERS
    )
    connectors = "".join(
        f'\n[[connectors]]\nid = {i}\nmeter = "{mid}"\nmax_current_a = 32\n'
        + (f'relay = {{ driver = "modbus-coil", unit_id = 5, coil = 0, link = {link} }}\n'
           if i == 1 else 'relay = { driver = "none" }\n')
        for i, (mid, _, _) in enumerate(METERS, start=1)
    )  # fmt: skip
    path = tmp / "agent.toml"
    path.write_text(
        f'device_id = "bench-footprint"\n{meters}{connectors}\n'
        f'[store]\npath = "{tmp / "agent.db"}"\n\n[clock]\ntrust = "always"\n\n'
        f'[control]\nsocket_path = "{tmp / "agent.sock"}"\n'
    )
    return path


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def measure(settle_s: float, window_s: float) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        sim_args = [str(Path(sys.executable).with_name("chargemitra-sim")), "site", "--tcp",
                    "127.0.0.1:0",
                    "--no-serial", "--no-rfid", "--no-keys", "--control", "127.0.0.1:0",
                    "--relay-unit", "5", "--state", str(tmp / "sim.json")]  # fmt: skip
        for _, model, unit in METERS:
            sim_args += ["--meter", f"{model}:{unit}"]
        sim = subprocess.Popen(sim_args, stdout=subprocess.PIPE)
        agent: subprocess.Popen[bytes] | None = None
        try:
            assert sim.stdout is not None
            endpoints = json.loads(sim.stdout.readline())
            host, port = endpoints["tcp"].rsplit(":", 1)
            agent = subprocess.Popen(
                [sys.executable, "-m", "edge_agent.cli", "run", "--log-level", "WARNING",
                 "--config", str(_config(tmp, host, int(port)))],
                env={**os.environ}, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            process = psutil.Process(agent.pid)
            time.sleep(settle_s)
            if agent.poll() is not None:
                raise RuntimeError(f"agent exited with {agent.returncode}")
            cpu_start = process.cpu_times()
            wall_start = time.monotonic()
            time.sleep(window_s)
            cpu_end = process.cpu_times()
            wall = time.monotonic() - wall_start
            rss = process.memory_info().rss
            readings = None
            if agent.poll() is None:
                _stop(agent)
                conn = sqlite3.connect(tmp / "agent.db")
                readings = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
                conn.close()
        finally:
            if agent is not None:
                _stop(agent)
            _stop(sim)
    cpu_s = (cpu_end.user - cpu_start.user) + (cpu_end.system - cpu_start.system)
    cpu_percent = 100 * cpu_s / wall
    rss_mb = rss / (1024 * 1024)
    params = {"meters": [m[1] for m in METERS], "poll_interval_s": 1.0, "transport": "tcp",
              "settle_s": settle_s, "window_s": round(wall, 2), "readings_stored": readings,
              "python": sys.version.split()[0]}  # fmt: skip
    return [
        json.dumps({"bench": "edge_footprint", "figure": "agent_rss_mb", "value": round(rss_mb, 2),
                    "unit": "MiB", "goal": "<= 40", "meets_goal": rss_mb <= 40,
                    "params": params}),
        json.dumps({"bench": "edge_footprint", "figure": "agent_cpu_percent",
                    "value": round(cpu_percent, 3), "unit": "% of one core", "goal": "<= 1",
                    "meets_goal": cpu_percent <= 1, "params": params}),
    ]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--window-s", type=float, default=30.0)
    args = parser.parse_args()
    for line in measure(args.settle_s, args.window_s):
        print(line, flush=True)


if __name__ == "__main__":
    main()
