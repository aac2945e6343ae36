"""Ingest throughput from the broker to committed rows with acks, against raw COPY.

``python -m bench.ingest`` starts the project's cloud broker (deploy/mosquitto) on a free
port and one ``chargemitra-cloud ingest`` worker process, then a simulated device
publishes a backlog of telemetry batches over MQTT 5 QoS 1 and waits for the application
acks of every batch. Figures (one JSON line each, per BENCHMARKS.md):

* ``ingest_readings_per_s``: readings from first publish to last ack (all committed),
  against ``asyncpg copy_records_to_table`` of the same rows into the same table in the same
  run (goal: ratio >= 0.8, raised from 0.5 in issue 21). Median of ``--runs``.
* ``ack_p99_ms`` (and ``ack_p50_ms``): publish-to-ack latency with no backlog, one small
  batch every ``--live-interval-ms``.

The database is ``CHARGEMITRA_BENCH_DATABASE_URL`` (default: the development database,
migrated to head); only the bench device's own rows are written and removed, so the bench
can run beside the test suite and leaves other data alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from cloud import migrate
from cloud.ingest.plan import BatchPlan
from cloud.pg import PgConnection, close, connect
from cloud.settings import DbSettings, env_name
from edge_agent.testing import close_threaded
from protocols.enums import MessageKind
from protocols.messages import Ack, TelemetryBatch, encode_message, parse_message
from protocols.testing import telemetry
from protocols.topics import topic
from tests.support.certs import make_certs
from tests.support.mosquitto import cloud_broker

DEVICE = "dev-bench"
DEFAULT_DB = "postgresql://chargemitra:chargemitra@127.0.0.1:5432/chargemitra"
GOAL_RATIO = 0.8
COLUMNS = ("device_id", "meter_id", "ts", "quantity", "value", "seq", "clock_synced")


class BenchDevice:
    """Publishes batches and records, per seq, when it was sent and when its ack came."""

    def __init__(self, port: int, password: str) -> None:
        self.sent: dict[int, float] = {}
        self.acked: dict[int, float] = {}
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=DEVICE, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.username_pw_set(DEVICE, password)
        self.client.max_inflight_messages_set(500)
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self._ready.set()
        self.client.on_connect = lambda c, *_: c.subscribe(topic(DEVICE, MessageKind.ACK), qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        if not self._ready.wait(10):
            raise RuntimeError("device did not connect")

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        ack = parse_message(MessageKind.ACK, bytes(msg.payload))
        assert isinstance(ack, Ack)
        with self._lock:
            for first, last in ack.ranges:
                for seq in range(first, last + 1):
                    self.acked.setdefault(seq, now)

    def publish(self, seq: int, payload: bytes) -> None:
        self.sent[seq] = time.perf_counter()
        self.client.publish(topic(DEVICE, MessageKind.TELEMETRY), payload, qos=1)

    async def wait_acked(self, seqs: list[int], timeout_s: float = 300) -> float:
        async with asyncio.timeout(timeout_s):
            while True:
                with self._lock:
                    if all(s in self.acked for s in seqs):
                        return max(self.acked[s] for s in seqs)
                await asyncio.sleep(0.005)

    def close(self) -> None:
        close_threaded(self.client)


async def _clear(conn: PgConnection) -> None:
    """Remove the bench device's rows (and only those)."""
    for table in ("telemetry", "telemetry_batches", "downlink_sequences", "dead_letters"):
        # Table names come from the literal tuple above, never from input.
        await conn.execute(f"DELETE FROM {table} WHERE device_id = $1", DEVICE)


async def _baseline_rate(conn: PgConnection, batches: list[TelemetryBatch], readings: int) -> float:
    plan = BatchPlan(telemetry={(b.device_id, b.msg_id): b for b in batches})
    # Exactly the rows ingest writes, built the same way (not timed).
    records = list(plan.telemetry_records())
    await _clear(conn)
    started = time.perf_counter()
    await conn.copy_records_to_table("telemetry", records=records, columns=COLUMNS)
    return readings / (time.perf_counter() - started)


async def _throughput(
    conn: PgConnection, device: BenchDevice, args: argparse.Namespace
) -> tuple[list[float], list[float]]:
    """Readings/s through ingest and through raw COPY, per run."""
    seq = 1
    ingest_rates, baseline_rates = [], []
    readings = args.batches * args.readings
    for _ in range(args.runs):
        await _clear(conn)
        batches = [
            telemetry(DEVICE, seq + i, readings=args.readings, first_index=(seq + i) * 10_000)
            for i in range(args.batches)
        ]
        seq += args.batches
        payloads = [(b.seq, encode_message(b)) for b in batches]  # not timed
        started = time.perf_counter()
        for batch_seq, payload in payloads:
            device.publish(batch_seq, payload)
        last_ack = await device.wait_acked([b.seq for b in batches])
        ingest_rates.append(readings / (last_ack - started))
        stored = await conn.fetchval("SELECT count(*) FROM telemetry WHERE device_id = $1", DEVICE)
        if stored != readings * 2:
            raise RuntimeError(f"stored {stored} rows, expected {readings * 2}")
        baseline_rates.append(await _baseline_rate(conn, batches, readings))
    return ingest_rates, baseline_rates


async def _latencies(device: BenchDevice, args: argparse.Namespace, first_seq: int) -> list[float]:
    """Publish-to-ack milliseconds of small batches sent at a steady pace (no backlog)."""
    seqs = list(range(first_seq, first_seq + args.live))
    for seq in seqs:
        batch = telemetry(DEVICE, seq, readings=10, first_index=seq * 10_000)
        device.publish(seq, encode_message(batch))
        await asyncio.sleep(args.live_interval_ms / 1000)
    await device.wait_acked(seqs)
    return sorted((device.acked[s] - device.sent[s]) * 1000 for s in seqs)


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    db_url = os.environ.get("CHARGEMITRA_BENCH_DATABASE_URL", DEFAULT_DB)
    await asyncio.to_thread(migrate.upgrade, db_url, "head")
    conn = await connect(DbSettings(url=db_url))
    with tempfile.TemporaryDirectory() as tmp:
        ingest_password = secrets.token_urlsafe(16)
        device_password = secrets.token_urlsafe(16)
        broker = cloud_broker(
            Path(tmp) / "broker",
            make_certs(Path(tmp)),
            {"cloud-ingest": ingest_password, DEVICE: device_password},
        )
        broker.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEMITRA_")} | {
            env_name("app", "env"): "test",
            env_name("app", "secret_key"): secrets.token_urlsafe(32),
            env_name("app", "log_level"): "WARNING",
            env_name("db", "url"): db_url,
            env_name("mqtt", "port"): str(broker.port),
            env_name("mqtt", "password"): ingest_password,
        }
        cli = Path(sys.executable).with_name("chargemitra-cloud")
        workers = [
            await asyncio.create_subprocess_exec(
                str(cli), "ingest", "--index", str(i), env=env, stdout=subprocess.DEVNULL
            )
            for i in range(args.workers)
        ]
        device: BenchDevice | None = None
        try:
            async with asyncio.timeout(30):
                # A shared subscription without members drops messages: wait for every worker.
                names = [f"as ingest-{i}" for i in range(args.workers)]
                while not all(name in broker.log_text() for name in names):
                    await asyncio.sleep(0.05)
            device = BenchDevice(broker.port, device_password)
            ingest_rates, baseline_rates = await _throughput(conn, device, args)
            latencies = await _latencies(device, args, first_seq=args.runs * args.batches + 1)
        finally:
            if device is not None:
                device.close()
            for worker in workers:
                worker.terminate()
                await worker.wait()
            broker.stop()
            await _clear(conn)
            await close(conn)
    value, baseline = statistics.median(ingest_rates), statistics.median(baseline_rates)
    params = {
        "batches": args.batches,
        "readings_per_batch": args.readings,
        "quantities_per_reading": 2,
        "runs": args.runs,
        "workers": args.workers,
    }
    ratio = value / baseline
    return [
        {
            "bench": "ingest",
            "figure": "ingest_readings_per_s",
            "value": round(value, 1),
            "unit": "readings/s",
            "baseline": "raw asyncpg copy_records_to_table of the same rows",
            "baseline_value": round(baseline, 1),
            "ratio": round(ratio, 3),
            "goal": f">= {GOAL_RATIO} ratio",
            "meets_goal": ratio >= GOAL_RATIO,
            "params": params,
        },
        {
            "bench": "ingest",
            "figure": "ack_p99_ms",
            "value": round(latencies[int(0.99 * (len(latencies) - 1))], 2),
            "unit": "ms",
            "params": {
                "batches": args.live,
                "interval_ms": args.live_interval_ms,
                "readings_per_batch": 10,
            },
        },
        {
            "bench": "ingest",
            "figure": "ack_p50_ms",
            "value": round(statistics.median(latencies), 2),
            "unit": "ms",
            "params": {
                "batches": args.live,
                "interval_ms": args.live_interval_ms,
                "readings_per_batch": 10,
            },
        },
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--readings", type=int, default=250, help="readings per batch")
    parser.add_argument("--runs", type=int, default=5)
    # Ingest is deployed as N workers sharing $share/ingest; two match this 2-core machine.
    parser.add_argument("--workers", type=int, default=2, help="ingest worker processes")
    parser.add_argument("--live", type=int, default=300, help="batches in the latency phase")
    parser.add_argument("--live-interval-ms", type=float, default=10.0)
    for line in asyncio.run(run(parser.parse_args())):
        print(json.dumps(line))


if __name__ == "__main__":
    main()
