"""The agent as deployed, end to end: a reading's timestamp to its arrival past the broker.

``python -m bench.edge_e2e`` starts the simulator (``chargemitra-sim site``, one SDM630 on
Modbus TCP), the project's cloud broker config (TLS, ACL) with a stand-in for cloud ingest
in its own process (it acknowledges what arrives, so rows leave the outbox only on application
acks), and ``chargemitra-agent run`` with its TOML config syncing to it — nothing of the agent
is called in-process. Each phase has a fresh store (no backlog). Figures, one JSON line each
(BENCHMARKS.md):

* ``e2e_read_to_broker_p50_ms`` / ``_p95_ms`` at 1 Hz and at 10 Hz: from the reading's own
  timestamp (taken by the poller when the meter answered) to the moment the ingest stand-in
  receives the telemetry message carrying it from the broker; the agent publishes a reading
  only once it is committed (synchronous=FULL). Goal <= 50 / <= 150.
* ``e2e_full_reads_per_s``: full SDM630 reads per second with ``poll_interval_s`` at its floor,
  counting only readings that were stored and delivered; goal >= 100.
* ``store_commit_p50_ms`` with ``synchronous`` FULL (what the agent uses) and NORMAL: one
  reading handed to :class:`~edge_agent.store.writer.StoreWriter` until it is committed — what
  durability against power loss costs on this disk (docs/decisions.md says which crash each
  level survives).

The receiver's arrival time is CLOCK_MONOTONIC mapped to the wall clock in its own process
(both processes share the machine's clocks), so the figure includes the broker's hop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from edge_agent.store.writer import StoreWriter
from edge_agent.testing import Acker
from protocols.messages import MeterReading, TelemetryBatch
from protocols.meters import Quantity
from tests.support.certs import make_certs
from tests.support.mosquitto import Broker, cloud_broker
from tests.sync.rig import DEVICE, DEVICE_PASSWORD, INGEST_PASSWORD, USERS


def figure(name: str, value: float, unit: str, **extra: Any) -> str:
    return json.dumps(
        {"bench": "edge_e2e", "figure": name, "value": round(value, 3), "unit": unit, **extra}
    )


# --- the ingest stand-in (its own process) -------------------------------------------------


def receiver(port: int, password: str, out: Path) -> None:
    """Ack everything (tests.sync.acker); at SIGTERM write, per telemetry reading, its
    timestamp and the wall time its message first arrived."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    acker = Acker(port, username="cloud-ingest", password=password, validate=True)
    print("ready", flush=True)
    stop.wait()
    acker.close()
    offset = time.time() - time.monotonic()
    with out.open("w") as log:
        for got in acker.received.values():
            for seq, message in got.by_seq.items():
                if isinstance(message, TelemetryBatch):
                    arrived = got.first_at[seq] + offset
                    for r in message.readings:
                        log.write(f"{r.meter_id} {r.ts.timestamp()} {arrived}\n")


# --- one phase -----------------------------------------------------------------------------


def _config(tmp: Path, sim_port: int, broker: Broker, ca: Path, interval_s: float) -> Path:
    (tmp / "mqtt.password").write_text(DEVICE_PASSWORD)
    path = tmp / "agent.toml"
    path.write_text(
        f'device_id = "{DEVICE}"\n\n[[meters]]\nid = "m1"\nmodel = "sdm630"\nunit_id = 1\n'
        f"poll_interval_s = {interval_s}\n"
        f'link = {{ transport = "tcp", host = "127.0.0.1", port = {sim_port} }}\n\n'
        '[[connectors]]\nid = 1\nmeter = "m1"\nmax_current_a = 32\n'
        'relay = { driver = "none" }\n\n'
        "[bus]\nframe_gap_s = 0.0\n\n"
        f'[store]\npath = "{tmp / "agent.db"}"\n\n[clock]\ntrust = "always"\n\n'
        f'[control]\nsocket_path = "{tmp / "agent.sock"}"\n\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.tls_port}\nca_file = "{ca}"\n'
        f'password_file = "{tmp / "mqtt.password"}"\n'
    )
    return path


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def phase(
    root: Path, broker: Broker, ca: Path, sim_port: int, *, interval_s: float, seconds: float
) -> dict[str, Any]:
    """Run the agent at ``interval_s`` for ``seconds`` (after 2 s to settle); return the
    latencies of the readings taken in the window and how many were stored and delivered."""
    tmp = root / f"phase-{interval_s}"
    tmp.mkdir()
    arrivals = tmp / "arrivals.txt"
    recv = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bench.edge_e2e",
            "--receiver",
            str(broker.port),
            INGEST_PASSWORD,
            str(arrivals),
        ],
        stdout=subprocess.PIPE,
    )
    assert recv.stdout is not None
    recv.stdout.readline()
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "run",
            "--log-level",
            "WARNING",
            "--config",
            str(_config(tmp, sim_port, broker, ca, interval_s)),
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(2.0)
        if agent.poll() is not None:
            raise RuntimeError(f"agent exited with {agent.returncode}")
        start = time.time()
        time.sleep(seconds)
        end = time.time()
        time.sleep(1.0)  # the last readings of the window reach the receiver
        _stop(agent)
        time.sleep(0.5)
    finally:
        _stop(agent)
        recv.terminate()
        recv.wait()
        recv.stdout.close()
    conn = sqlite3.connect(tmp / "agent.db")
    stored = [
        datetime.fromisoformat(ts).timestamp() for (ts,) in conn.execute("SELECT ts FROM readings")
    ]
    conn.close()
    got: dict[float, float] = {}
    for line in arrivals.read_text().splitlines():
        _meter, ts, arrived = line.split()
        got.setdefault(float(ts), float(arrived))
    window = [ts for ts in stored if start <= ts < end]
    latencies = sorted((got[ts] - ts) * 1000 for ts in window if ts in got)
    return {
        "latencies_ms": latencies,
        "stored_in_window": len(window),
        "delivered_in_window": len(latencies),
        "seconds": end - start,
    }


async def _commit_latencies(
    directory: Path, synchronous: Literal["FULL", "NORMAL"], n: int
) -> list[float]:
    """Hand one reading at a time to a StoreWriter; time until its group is committed."""
    samples: list[float] = []
    async with StoreWriter(
        directory / f"commit-{synchronous}.db",
        device_id=DEVICE,
        now=lambda: datetime.now(UTC),
        synchronous=synchronous,
    ) as writer:
        for i in range(n):
            start = time.perf_counter()
            writer.submit(
                MeterReading(
                    meter_id="m1",
                    ts=datetime.now(UTC),
                    clock_synced=True,
                    values={Quantity.POWER_W: float(i)},
                )
            )
            while writer.committed <= i:
                await asyncio.sleep(0)
            samples.append((time.perf_counter() - start) * 1000)
    return sorted(samples)


def commit_figures(directory: Path, n: int) -> list[str]:
    """What each ``synchronous`` level costs a reading's commit on this disk."""
    lines = []
    for level in ("FULL", "NORMAL"):
        lat = asyncio.run(_commit_latencies(directory, level, n))
        survives = (
            "process kill and power loss"
            if level == "FULL"
            else "process kill; power loss may lose the last commits"
        )
        params = {
            "synchronous": level,
            "journal_mode": "WAL",
            "samples": n,
            "p95_ms": round(_percentile(lat, 0.95), 3),
            "survives": survives,
            "disk": "the machine's /tmp (a Pi's SD card syncs far slower)",
        }
        lines.append(figure("store_commit_p50_ms", statistics.median(lat), "ms", params=params))
    return lines


def _percentile(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="window per phase")
    parser.add_argument("--commit-samples", type=int, default=300)
    parser.add_argument(
        "--receiver", nargs=3, metavar=("PORT", "PASSWORD", "OUT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.receiver:
        receiver(int(args.receiver[0]), args.receiver[1], Path(args.receiver[2]))
        return
    lines: list[str] = []
    with tempfile.TemporaryDirectory() as tmp_name, ExitStack() as stack:
        root = Path(tmp_name)
        (root / "certs").mkdir()
        certs = make_certs(root / "certs")
        broker = cloud_broker(root / "broker", certs, USERS)
        broker.start()
        stack.callback(broker.stop)
        assert broker.tls_port is not None
        sim = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("chargemitra-sim")),
                "site",
                "--tcp",
                "127.0.0.1:0",
                "--no-serial",
                "--no-rfid",
                "--no-keys",
                "--control",
                "127.0.0.1:0",
                "--meter",
                "sdm630:1",
                "--state",
                str(root / "sim.json"),
            ],
            stdout=subprocess.PIPE,
            env={**os.environ},
        )
        stack.callback(_stop, sim)
        assert sim.stdout is not None
        sim_port = int(json.loads(sim.stdout.readline())["tcp"].rsplit(":", 1)[1])
        lines += commit_figures(root, args.commit_samples)
        for hz in (1, 10):
            result = phase(
                root, broker, certs.ca, sim_port, interval_s=1 / hz, seconds=args.seconds
            )
            lat = result["latencies_ms"]
            params = {
                "poll_hz": hz,
                "model": "sdm630",
                "transport": "tcp",
                "samples": len(lat),
                "stored": result["stored_in_window"],
                "window_s": round(result["seconds"], 1),
                "synchronous": "FULL",
                "max_ms": round(lat[-1], 2) if lat else None,
            }
            p50, p95 = statistics.median(lat), _percentile(lat, 0.95)
            lines.append(
                figure(
                    "e2e_read_to_broker_p50_ms",
                    p50,
                    "ms",
                    goal="<= 50",
                    meets_goal=p50 <= 50,
                    params=params,
                )
            )
            lines.append(
                figure(
                    "e2e_read_to_broker_p95_ms",
                    p95,
                    "ms",
                    goal="<= 150",
                    meets_goal=p95 <= 150,
                    params=params,
                )
            )
        result = phase(root, broker, certs.ca, sim_port, interval_s=0.001, seconds=args.seconds)
        lat = result["latencies_ms"]
        rate = result["delivered_in_window"] / result["seconds"]
        lines.append(
            figure(
                "e2e_full_reads_per_s",
                rate,
                "reads/s",
                goal=">= 100",
                meets_goal=rate >= 100,
                params={
                    "poll_interval_s": 0.001,
                    "model": "sdm630",
                    "transport": "tcp",
                    "stored_in_window": result["stored_in_window"],
                    "delivered_in_window": result["delivered_in_window"],
                    "window_s": round(result["seconds"], 1),
                    "latency_p50_ms": round(statistics.median(lat), 2) if lat else None,
                    "latency_p95_ms": round(_percentile(lat, 0.95), 2) if lat else None,
                },
            )
        )
    for line in lines:
        print(line, flush=True)


if __name__ == "__main__":
    main()
