"""The running agent's footprint: memory and CPU with 4 meters at 1 Hz; safety tick at 10 Hz.

``python -m bench.edge_footprint`` starts the simulator (``chargemitra-sim site``, 4 meters on
Modbus TCP, a coil relay), the project's cloud broker config (TLS, ACL) with a stand-in for
cloud ingest that acknowledges what arrives, and ``chargemitra-agent run`` syncing to it over
TLS -- the agent as deployed, not without its link. It lets the agent settle, then measures
the agent process alone with psutil over a window: ``agent_rss_mb`` (resident set at the end,
MiB; goal <= 40) and ``agent_cpu_percent`` (user + system time over wall time, % of one core;
goal <= 1). Then the same site polled at 10 Hz (40 readings a second, each fsynced by the
store's writer thread as it is taken): ``safety_tick_jitter_p99_ms``, how late the agent's
0.5 s relay safety tick woke (p99, as the agent itself measures it: control ``status``,
``safety_tick``); goal <= 50. Then the 1 Hz site again with the OCPP 1.6-J uplink on as well
(``[ocpp]``: TLS, Basic auth, to the ``ocpp`` package's CSMS run in this process,
tests/edge/ocpp_csms.py): ``agent_rss_mb`` and ``agent_cpu_percent`` with ``params.ocpp``
"on" and the same figure without the uplink, measured in this run, as the baseline (the
uplink's cost is the difference; its WebSocket client is imported only then). One JSON line
each (BENCHMARKS.md). ``--no-sync`` leaves the ``[mqtt]`` table out; ``--no-ocpp`` skips the
OCPP run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

# psutil ships no type stubs and pyproject's mypy overrides do not list it yet.
import psutil  # type: ignore[import-untyped]

from edge_agent.control import request
from edge_agent.testing import Acker
from tests.edge.ocpp_csms import Csms
from tests.support.certs import Certs, make_certs
from tests.support.mosquitto import Broker, cloud_broker
from tests.sync.rig import DEVICE, DEVICE_PASSWORD, INGEST_PASSWORD, USERS

METERS = (("m1", "sdm630", 1), ("m2", "sdm630", 2), ("m3", "sdm120", 3), ("m4", "sdm72d", 4))
OCPP_KEY = "bench-ocpp-key-0123456789"


@contextmanager
def _csms(certs: Certs) -> Iterator[Csms]:
    """The ocpp package's CSMS (TLS, Basic auth) on its own event loop in a thread."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="csms", daemon=True)
    thread.start()
    csms = Csms(certs, password=OCPP_KEY)
    try:
        asyncio.run_coroutine_threadsafe(csms.start(), loop).result(10)
        yield csms
    finally:
        asyncio.run_coroutine_threadsafe(csms.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _ocpp_table(tmp: Path, csms: Csms, ca: Path) -> str:
    (tmp / "ocpp.key").write_text(OCPP_KEY)
    return (
        f'\n[ocpp]\nurl = "{csms.url}"\nsecurity_profile = 2\n'
        f'authorization_key_file = "{tmp / "ocpp.key"}"\nca_file = "{ca}"\n'
    )


def _mqtt_table(tmp: Path, broker: Broker, ca: Path) -> str:
    (tmp / "mqtt.password").write_text(DEVICE_PASSWORD)
    return (
        f'\n[mqtt]\nhost = "127.0.0.1"\nport = {broker.tls_port}\nca_file = "{ca}"\n'
        f'password_file = "{tmp / "mqtt.password"}"\n'
    )


def _config(tmp: Path, host: str, port: int, mqtt: str, interval_s: float) -> Path:
    link = f'{{ transport = "tcp", host = "{host}", port = {port} }}'
    meters = "".join(
        f'\n[[meters]]\nid = "{mid}"\nmodel = "{model}"\nunit_id = {unit}\n'
        f"poll_interval_s = {interval_s}\nlink = {link}\n"
        for mid, model, unit in METERS
    )
    connectors = "".join(
        f'\n[[connectors]]\nid = {i}\nmeter = "{mid}"\nmax_current_a = 32\n'
        + (
            f'relay = {{ driver = "modbus-coil", unit_id = 5, coil = 0, link = {link} }}\n'
            if i == 1
            else 'relay = { driver = "none" }\n'
        )
        for i, (mid, _, _) in enumerate(METERS, start=1)
    )
    path = tmp / "agent.toml"
    path.write_text(
        f'device_id = "{DEVICE}"\n{meters}{connectors}\n'
        f'[store]\npath = "{tmp / "agent.db"}"\n\n[clock]\ntrust = "always"\n\n'
        f'[control]\nsocket_path = "{tmp / "agent.sock"}"\n{mqtt}'
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


def measure(
    settle_s: float,
    window_s: float,
    sync: bool,
    interval_s: float = 1.0,
    *,
    ocpp: bool = False,
    baseline: dict[str, float] | None = None,
) -> list[str]:
    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as stack:
        tmp = Path(tmp_name)
        mqtt = ""
        acker: Acker | None = None
        (tmp / "certs").mkdir()
        certs = make_certs(tmp / "certs")
        csms: Csms | None = None
        if ocpp:
            csms = stack.enter_context(_csms(certs))
            mqtt += _ocpp_table(tmp, csms, certs.ca)
        if sync:
            broker = cloud_broker(tmp / "broker", certs, USERS)
            broker.start()
            stack.callback(broker.stop)
            acker = Acker(broker.port, username="cloud-ingest", password=INGEST_PASSWORD)
            stack.callback(acker.close)
            mqtt += _mqtt_table(tmp, broker, certs.ca)
        sim_args = [
            str(Path(sys.executable).with_name("chargemitra-sim")),
            "site",
            "--tcp",
            "127.0.0.1:0",
            "--no-serial",
            "--no-rfid",
            "--no-keys",
            "--control",
            "127.0.0.1:0",
            "--relay-unit",
            "5",
            "--state",
            str(tmp / "sim.json"),
        ]
        for _, model, unit in METERS:
            sim_args += ["--meter", f"{model}:{unit}"]
        sim = subprocess.Popen(sim_args, stdout=subprocess.PIPE)
        agent: subprocess.Popen[bytes] | None = None
        try:
            assert sim.stdout is not None
            endpoints = json.loads(sim.stdout.readline())
            host, port = endpoints["tcp"].rsplit(":", 1)
            agent = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "edge_agent.cli",
                    "run",
                    "--log-level",
                    "WARNING",
                    "--config",
                    str(_config(tmp, host, int(port), mqtt, interval_s)),
                ],
                env={**os.environ},
                stderr=subprocess.DEVNULL,
            )
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
            status = asyncio.run(request(tmp / "agent.sock", {"cmd": "status"}))
            ticks = status.get("safety_tick", {})
            readings = received = None
            if acker is not None:
                received = len(acker.seqs(DEVICE))
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
    params = {
        "meters": [m[1] for m in METERS],
        "poll_interval_s": interval_s,
        "transport": "tcp",
        "sync": "tls to the cloud broker config" if sync else "off",
        "settle_s": settle_s,
        "window_s": round(wall, 2),
        "readings_stored": readings,
        "messages_received": received,
        "python": sys.version.split()[0],
    }
    if csms is not None:
        rec = csms.record
        params["ocpp"] = (
            "on: OCPP 1.6-J over TLS with Basic auth to the ocpp package's CSMS "
            "(booted, statuses on change, heartbeat per the CSMS's 300 s; nothing polls)"
        )
        params["ocpp_seen_by_csms"] = {
            "boots": rec.boots,
            "status_notifications": len(rec.statuses),
            "heartbeats": rec.heartbeats,
        }
    if baseline is not None:
        return [
            json.dumps(
                {
                    "bench": "edge_footprint",
                    "figure": figure,
                    "value": round(value, 3),
                    "unit": unit,
                    "goal": goal,
                    "meets_goal": value <= limit,
                    "baseline": "the same agent without [ocpp], this run",
                    "baseline_value": round(baseline[figure], 3),
                    "ratio": round(value / baseline[figure], 3) if baseline[figure] else None,
                    "params": params,
                }
            )
            for figure, value, unit, goal, limit in (
                ("agent_rss_mb", rss_mb, "MiB", "<= 40", 40.0),
                ("agent_cpu_percent", cpu_percent, "% of one core", "<= 1", 1.0),
            )
        ]
    if interval_s < 1.0:
        late_p99 = ticks.get("late_p99_ms")
        return [
            json.dumps(
                {
                    "bench": "edge_footprint",
                    "figure": "safety_tick_jitter_p99_ms",
                    "value": late_p99,
                    "unit": "ms",
                    "goal": "<= 50",
                    "meets_goal": late_p99 is not None and late_p99 <= 50,
                    "params": {
                        **params,
                        "ticks": ticks.get("ticks"),
                        "late_p50_ms": ticks.get("late_p50_ms"),
                        "late_max_ms": ticks.get("late_max_ms"),
                        "agent_cpu_percent": round(cpu_percent, 3),
                        "agent_rss_mb": round(rss_mb, 2),
                        "store": "synchronous=FULL, one commit per group of "
                        "readings ready (StoreWriter)",
                    },
                }
            ),
        ]
    return [
        json.dumps(
            {
                "bench": "edge_footprint",
                "figure": "agent_rss_mb",
                "value": round(rss_mb, 2),
                "unit": "MiB",
                "goal": "<= 40",
                "meets_goal": rss_mb <= 40,
                "params": params,
            }
        ),
        json.dumps(
            {
                "bench": "edge_footprint",
                "figure": "agent_cpu_percent",
                "value": round(cpu_percent, 3),
                "unit": "% of one core",
                "goal": "<= 1",
                "meets_goal": cpu_percent <= 1,
                "params": params,
            }
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--window-s", type=float, default=30.0)
    parser.add_argument(
        "--no-sync",
        dest="sync",
        action="store_false",
        help="run the agent without its [mqtt] table (no broker)",
    )
    parser.add_argument(
        "--no-ocpp", dest="ocpp", action="store_false", help="skip the run with the OCPP uplink on"
    )
    args = parser.parse_args()
    without: dict[str, float] = {}
    for line in measure(args.settle_s, args.window_s, args.sync):
        figure = json.loads(line)
        without[figure["figure"]] = figure["value"]
        print(line, flush=True)
    if args.ocpp:
        for line in measure(args.settle_s, args.window_s, args.sync, ocpp=True, baseline=without):
            print(line, flush=True)
    for line in measure(args.settle_s, args.window_s, args.sync, interval_s=0.1):
        print(line, flush=True)


if __name__ == "__main__":
    main()
