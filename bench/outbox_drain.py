"""How fast the agent's outbox drains to the broker, against raw paho-mqtt in the same run.

``python -m bench.outbox_drain`` starts the project's cloud broker config (TLS, ACL, on free
ports), queues ``--readings`` readings in a fresh agent store (4 per telemetry batch, as one
meter-poll second of a 4-meter site), and drains them with :class:`SyncService` while a
stand-in for ingest acks every message — so rows leave the outbox only on application acks.
Figures (BENCHMARKS.md):

* ``drain_msgs_per_s`` / ``drain_readings_per_s`` — queued rows until the outbox is empty,
  against raw paho QoS 1 publishing of the same payloads from memory (goal ratio >= 0.8);
* ``first_live_reading_ms`` — a reading queued 0.5 s into the drain, to its arrival at the
  subscriber: a long backlog must not starve the reading a driver is watching;
* ``read_to_broker_p50_ms`` / ``_p95_ms`` — with no backlog, from storing a reading (durably:
  synchronous=FULL) to its arrival at a subscriber (goal p50 <= 50 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.store.db import connect
from edge_agent.store.outbox_lanes import high_water
from edge_agent.store.writer import Durable, StoreWriter
from edge_agent.sync.service import SyncService
from edge_agent.testing import Acker, RecordingHandler, close_threaded
from protocols.messages import MeterReading
from protocols.meters import Quantity
from protocols.topics import topic
from tests.support.certs import make_certs
from tests.support.mosquitto import Broker, cloud_broker
from tests.sync.rig import (
    DEVICE,
    DEVICE_PASSWORD,
    INGEST_PASSWORD,
    USERS,
    outbox_empty,
    outbox_seqs,
    queue_readings,
    sync_settings,
    wall_clock,
)

PER_BATCH = 4


def figure(name: str, value: float, unit: str, **extra: Any) -> None:
    print(
        json.dumps(
            {
                "bench": "outbox_drain",
                "figure": name,
                "value": round(value, 2),
                "unit": unit,
                **extra,
            }
        )
    )


def raw_paho_rate(tls_port: int, ca: Path, payloads: list[tuple[str, bytes]]) -> float:
    """Baseline: raw paho QoS 1 publishing of the same payloads, from memory, to all PUBACKs."""
    done = threading.Event()
    acked = 0

    def on_publish(*_: object) -> None:
        nonlocal acked
        acked += 1
        if acked == len(payloads):
            done.set()

    # The device's own client id: the cloud broker binds a device's client id to its username
    # and refuses any other (deploy/mosquitto/cloud).
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=DEVICE, protocol=paho.MQTTv5)
    client.username_pw_set(DEVICE, DEVICE_PASSWORD)
    client.tls_set(ca_certs=str(ca))
    client.max_inflight_messages_set(100)
    client.on_publish = on_publish
    client.connect("127.0.0.1", tls_port)
    client.loop_start()
    start = time.perf_counter()
    for name, payload in payloads:
        client.publish(name, payload, qos=1)
    if not done.wait(120):
        raise RuntimeError(f"raw paho baseline did not finish ({acked} of {len(payloads)} acked)")
    elapsed = time.perf_counter() - start
    close_threaded(client)
    return len(payloads) / elapsed


def _writer(
    store_path: Path, on_durable: Callable[[Durable], None] = lambda _d: None
) -> StoreWriter:
    return StoreWriter(
        store_path, device_id=DEVICE, now=lambda: datetime.now(UTC), on_durable=on_durable
    )


async def drain(store_path: Path, tls_port: int, ca: Path) -> dict[str, float]:
    conn = connect(store_path)
    total = len(outbox_seqs(conn))
    settings = sync_settings(tls_port, ca, backlog_msgs_per_s=1e9, backlog_burst=1000)
    live_seq = 0
    live_at = 0.0
    # As the agent runs it: acknowledged rows are deleted by the store's writer thread.
    async with _writer(store_path) as writer, asyncio.TaskGroup() as group:
        service = SyncService(
            conn, settings, handler=RecordingHandler(), clock=wall_clock(), writer=writer
        )
        task = group.create_task(service.run(), name="bench-sync")
        # From the link being up, as the baseline is timed from a connected client.
        while not service.stats.connected:
            await asyncio.sleep(0.001)
        start = time.perf_counter()
        await asyncio.sleep(0.5)
        live_at = time.monotonic()
        queue_readings(conn, 1, per_batch=1)
        live_seq = high_water(conn)
        service.notify()
        while not outbox_empty(conn):
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - start
        task.cancel()
    conn.close()
    return {"msgs_per_s": (total + 1) / elapsed, "live_seq": live_seq, "live_at": live_at}


async def latency(store_path: Path, tls_port: int, ca: Path, acker: Acker, n: int) -> list[float]:
    """A reading handed to the store writer (as the poll task does) to its arrival past the
    broker: the writer commits it (synchronous=FULL), then the uplink publishes it."""
    conn = connect(store_path)
    samples: list[float] = []
    services: list[SyncService] = []
    async with (
        _writer(store_path, lambda _durable: services[0].notify()) as writer,
        asyncio.TaskGroup() as group,
    ):
        service = SyncService(
            conn,
            sync_settings(tls_port, ca),
            handler=RecordingHandler(),
            clock=wall_clock(),
            writer=writer,
        )
        services.append(service)
        task = group.create_task(service.run(), name="bench-sync")
        while not service.stats.connected:
            await asyncio.sleep(0.01)
        for i in range(n):
            read_at = time.monotonic()
            writer.submit(
                MeterReading(
                    meter_id="m1",
                    ts=datetime.now(UTC),
                    clock_synced=True,
                    values={Quantity.POWER_W: float(i)},
                )
            )
            while writer.committed <= i:
                await asyncio.sleep(0.0002)
            seq = high_water(conn)
            while seq not in acker.received[DEVICE].first_at:
                await asyncio.sleep(0.0005)
            samples.append(acker.received[DEVICE].first_at[seq] - read_at)
            await asyncio.sleep(0.02)
        task.cancel()
    conn.close()
    return samples


def pair_run(
    root: Path,
    prepared: Path,
    run: int,
    broker: Broker,
    *,
    ca: Path,
    payloads: list[tuple[str, bytes]],
) -> tuple[float, dict[str, float]]:
    """The baseline, then one drain of a copy of the prepared store, with the ingest
    stand-in (its own process) subscribed throughout: the broker delivers every message to
    it in both, so only the publisher differs."""
    store_path = root / f"drain-{run}.sqlite"
    shutil.copyfile(prepared, store_path)
    arrivals = root / f"arrivals-{run}.txt"
    receiver = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.sync.acker_proc",
            str(broker.port),
            INGEST_PASSWORD,
            str(arrivals),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert receiver.stdout is not None
    assert receiver.stdin is not None
    receiver.stdout.readline()
    try:
        assert broker.tls_port is not None
        baseline = raw_paho_rate(broker.tls_port, ca, payloads)
        # The baseline publishes the drain's seqs: the stand-in's acks for them must be past
        # the broker before the drain subscribes, or they would delete rows the drain never
        # published (they did: ~15 % of the rows, counted as drained).
        receiver.stdin.write(f"settle {DEVICE} {len(payloads)}\n")
        receiver.stdin.flush()
        if receiver.stdout.readline().strip() != "settled":
            raise RuntimeError("the ingest stand-in did not settle after the baseline")
        result = asyncio.run(drain(store_path, broker.tls_port, ca))
    finally:
        receiver.terminate()
        receiver.wait()
        receiver.stdout.close()
        receiver.stdin.close()
    first_at = {
        int(seq): float(at)
        for _device, seq, at in (line.split() for line in arrivals.read_text().splitlines())
    }
    result["first_live_s"] = first_at[int(result["live_seq"])] - result["live_at"]
    return baseline, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readings", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3, help="baseline/drain pairs (median)")
    parser.add_argument("--latency-samples", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "certs").mkdir()
        certs = make_certs(root / "certs")
        broker = cloud_broker(root / "broker", certs, USERS)
        broker.start()
        assert broker.tls_port is not None
        try:
            prepared = root / "agent.sqlite"
            conn = connect(prepared)
            batches = args.readings // PER_BATCH
            queue_readings(conn, batches, per_batch=PER_BATCH)
            payloads = [
                (topic(DEVICE, kind), payload)
                for kind, payload in conn.execute("SELECT kind, payload FROM outbox ORDER BY seq")
            ]
            conn.close()
            # The machine is shared and its load drifts: baseline and drain alternate, and
            # each drain is compared with the baseline run just before it.
            baselines: list[float] = []
            results: list[dict[str, float]] = []
            for run in range(args.runs):
                baseline, result = pair_run(
                    root, prepared, run, broker, ca=certs.ca, payloads=payloads
                )
                baselines.append(baseline)
                results.append(result)
            acker = Acker(
                broker.port, username="cloud-ingest", password=INGEST_PASSWORD, validate=False
            )
            try:
                samples = asyncio.run(
                    latency(
                        root / "live.sqlite", broker.tls_port, certs.ca, acker, args.latency_samples
                    )
                )
            finally:
                acker.close()
        finally:
            broker.stop()
    rates = [r["msgs_per_s"] for r in results]
    ratios = [r / b for r, b in zip(rates, baselines, strict=True)]
    rate, baseline, ratio = (statistics.median(v) for v in (rates, baselines, ratios))
    params = {
        "readings": args.readings,
        "readings_per_msg": PER_BATCH,
        "rows": batches,
        "runs": args.runs,
        "run_ratios": [round(r, 3) for r in ratios],
        "run_values": [round(r, 1) for r in rates],
        "baseline_values": [round(b, 1) for b in baselines],
        "environment": "the ingest stand-in subscribed during baseline and drain alike",
        "timed": "link up -> outbox empty (every row acked by the ingest stand-in and "
        "deleted by the store writer)",
    }
    base = "raw paho-mqtt QoS1 publish of the same payloads"
    figure(
        "drain_msgs_per_s",
        rate,
        "msg/s",
        baseline=base,
        baseline_value=round(baseline, 1),
        ratio=round(ratio, 3),
        goal=">= 0.8 ratio",
        meets_goal=ratio >= 0.8,
        params=params,
    )
    figure(
        "drain_readings_per_s",
        rate * PER_BATCH,
        "readings/s",
        baseline=base,
        baseline_value=round(baseline * PER_BATCH, 1),
        ratio=round(ratio, 3),
        goal=">= 0.8 ratio",
        meets_goal=ratio >= 0.8,
        params=params,
    )
    first_live_ms = statistics.median(r["first_live_s"] for r in results) * 1000
    figure("first_live_reading_ms", first_live_ms, "ms", params={**params, "queued_after_s": 0.5})
    samples.sort()
    p50 = statistics.median(samples) * 1000
    p95 = samples[int(0.95 * (len(samples) - 1))] * 1000
    lat_params = {
        "samples": len(samples),
        "backlog": 0,
        "durable": "StoreWriter commit (synchronous=FULL) before publishing",
    }
    figure(
        "read_to_broker_p50_ms", p50, "ms", goal="<= 50", meets_goal=p50 <= 50, params=lat_params
    )
    figure("read_to_broker_p95_ms", p95, "ms", params=lat_params)


if __name__ == "__main__":
    main()
