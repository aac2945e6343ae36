"""Meter polling by the agent's own poller (``edge_agent.meters``) against the simulator.

``python -m bench.edge_poll`` prints, one JSON line each (BENCHMARKS.md):

* ``rtu_polls_per_s``: full SDM630 reads per second over the simulator's RTU pty, against the
  computed wire limit of the same frames (``firmware_sim.line.read_poll_time_s`` per block);
  goal ratio >= 0.9.
* ``tcp_full_reads_per_s``: full SDM630 reads per second over Modbus TCP with no turnaround,
  each decoded and handed to the store's writer thread, which group-commits it to the store
  and the outbox (synchronous=FULL) as the daemon does; a run ends when every reading taken
  is committed; goal >= 100. (``bench.edge_e2e`` measures the whole agent process.)
* ``frames_per_sdm630_read``: frames one full read takes, against one frame per quantity;
  goal <= 3.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sqlite3
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_agent.config import BusTiming, MeterSettings, SerialLink, TcpLink, build
from edge_agent.meters.bus import ModbusBus
from edge_agent.meters.poller import MeterPoller
from edge_agent.store.writer import StoreWriter
from firmware_sim.clock import ManualClock
from firmware_sim.line import read_poll_time_s
from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec
from protocols.meters import load_map

RUNS = 5


def figure(name: str, value: float, unit: str, **extra: Any) -> str:
    return json.dumps(
        {"bench": "edge_poll", "figure": name, "value": round(value, 3), "unit": unit, **extra}
    )


async def rtu(baud: int, turnaround_s: float, reads: int) -> str:
    config = SimConfig(
        meters=(MeterSpec("sdm630", 1),),
        serial=True,
        baud=baud,
        turnaround_s=turnaround_s,
        control=None,
    )
    async with SimSite(config, clock=ManualClock()) as sim:
        # build: baud is the caller's, and only decoding checks it is a Modbus speed.
        link = build(SerialLink, {"port": sim.endpoints()["serial"], "baud": baud})
        # The 3.5-character silence is the line's (part of the baseline); no extra gap.
        timing = BusTiming(frame_gap_s=0.0, timeout_s=2.0, retries=0)
        async with ModbusBus(link, timing) as bus:
            poller = MeterPoller(MeterSettings(id="m1", model="sdm630", link=link), bus)
            assert await poller.poll() is not None  # connect and warm up
            rates = []
            for _ in range(RUNS):
                start = time.perf_counter()
                for _ in range(reads):
                    if await poller.poll() is None:
                        raise RuntimeError(poller.health.last_error)
                rates.append(reads / (time.perf_counter() - start))
    wire_s = sum(read_poll_time_s(b.count, baud, turnaround_s) for b in poller.blocks)
    value, baseline = statistics.median(rates), 1 / wire_s
    return figure(
        "rtu_polls_per_s",
        value,
        "polls/s",
        baseline="computed RTU wire limit of the same frames (firmware_sim.line)",
        baseline_value=round(baseline, 3),
        ratio=round(value / baseline, 4),
        goal=">= 0.9 ratio",
        meets_goal=value / baseline >= 0.9,
        params={
            "baud": baud,
            "turnaround_ms": turnaround_s * 1000,
            "model": "sdm630",
            "frames_per_read": len(poller.blocks),
            "reads_per_run": reads,
            "runs": RUNS,
            "run_values": [round(r, 3) for r in rates],
        },
    )


async def tcp(seconds: float) -> tuple[str, str]:
    config = SimConfig(
        meters=(MeterSpec("sdm630", 1),),
        tcp=("127.0.0.1", 0),
        turnaround_s=0.0,
        control=None,
    )
    async with SimSite(config, clock=ManualClock()) as sim:
        host, port = sim.endpoints()["tcp"].rsplit(":", 1)
        link = TcpLink(host=host, port=int(port))
        with tempfile.TemporaryDirectory() as tmp:
            db = Path(tmp) / "agent.db"
            writer = StoreWriter(db, device_id="bench", now=lambda: datetime.now(UTC))
            async with (
                writer,
                ModbusBus(link, BusTiming(frame_gap_s=0.0, timeout_s=1.0)) as bus,
            ):
                poller = MeterPoller(MeterSettings(id="m1", model="sdm630", link=link), bus)
                assert await poller.poll() is not None
                frames_before = bus.frames
                rates = []
                reads_total = 0
                for _ in range(RUNS):
                    start = time.perf_counter()
                    committed_before = writer.committed
                    reads = 0
                    while time.perf_counter() - start < seconds:
                        reading = await poller.poll()
                        if reading is None:
                            raise RuntimeError(poller.health.last_error)
                        writer.submit(reading)
                        reads += 1
                    while writer.committed < committed_before + reads:
                        await asyncio.sleep(0.001)
                    rates.append(reads / (time.perf_counter() - start))
                    reads_total += reads
                frames = (bus.frames - frames_before) / reads_total
                commits = writer.commits
            conn = sqlite3.connect(db)
            stored = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
            conn.close()
    value = statistics.median(rates)
    per_quantity = len(load_map("sdm630").registers)
    return (
        figure(
            "tcp_full_reads_per_s",
            value,
            "reads/s",
            goal=">= 100",
            meets_goal=value >= 100,
            params={
                "model": "sdm630",
                "turnaround_ms": 0,
                "stored_readings": stored,
                "seconds_per_run": seconds,
                "runs": RUNS,
                "run_values": [round(r, 1) for r in rates],
                "group_commits": commits,
                "note": "decoded, handed to the StoreWriter, committed in SQLite (WAL, "
                "synchronous=FULL) with its outbox row, as the daemon does",
            },
        ),
        figure(
            "frames_per_sdm630_read",
            frames,
            "frames",
            baseline="one frame per quantity",
            baseline_value=per_quantity,
            ratio=round(frames / per_quantity, 4),
            goal="value <= 3",
            meets_goal=frames <= 3,
            params={"blocks": [(b.start, b.count) for b in poller.blocks]},
        ),
    )


async def main_async(args: argparse.Namespace) -> None:
    print(await rtu(args.baud, args.turnaround_ms / 1000, args.reads), flush=True)
    for line in await tcp(args.seconds):
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baud", type=int, default=9600)
    parser.add_argument("--turnaround-ms", type=float, default=20.0)
    parser.add_argument("--reads", type=int, default=4, help="RTU full reads per run")
    parser.add_argument("--seconds", type=float, default=2.0, help="TCP seconds per run")
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
