"""Polls per second a plain pymodbus RTU client gets from the simulator, against the computed
wire limit of the line (``firmware_sim.line.read_poll_time_s``: request + response at 11 bits
per character, two 3.5-character silences, the configured turnaround).

``python -m bench.sim_line_rate`` prints one JSON line per (turnaround, baud, registers),
per ``BENCHMARKS.md``; the goal (issue 3) is a ratio from 0.9 to 1.1. Each figure is the
median of several short runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

from pymodbus.client import AsyncModbusSerialClient

from firmware_sim.clock import ManualClock
from firmware_sim.line import read_poll_time_s
from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec

BAUDS = (9600, 19200)
REGISTER_COUNTS = (2, 20, 80)
TURNAROUNDS_MS = (0.0, 20.0)
RUNS = 5
#: Wall time one run aims for (at least MIN_POLLS polls).
RUN_S = 0.4
MIN_POLLS = 4


async def measure(baud: int, registers: int, turnaround_s: float) -> dict[str, Any]:
    config = SimConfig(
        meters=(MeterSpec("sdm630", 1),),
        serial=True,
        baud=baud,
        turnaround_s=turnaround_s,
        control=None,
    )
    expected_s = read_poll_time_s(registers, baud, turnaround_s)
    polls = max(MIN_POLLS, round(RUN_S / expected_s))
    async with SimSite(config, clock=ManualClock()) as sim:
        client = AsyncModbusSerialClient(
            sim.endpoints()["serial"], baudrate=baud, timeout=2, retries=0
        )
        await client.connect()
        try:
            await client.read_input_registers(0, count=registers, device_id=1)  # warm up
            rates = []
            for _ in range(RUNS):
                start = time.perf_counter()
                for _ in range(polls):
                    response = await client.read_input_registers(0, count=registers, device_id=1)
                    if response.isError():
                        raise RuntimeError(f"simulator answered {response}")
                rates.append(polls / (time.perf_counter() - start))
        finally:
            client.close()
    value = statistics.median(rates)
    baseline = 1 / expected_s
    ratio = value / baseline
    return {
        "bench": "sim_line_rate",
        "figure": "polls_per_s",
        "value": round(value, 3),
        "unit": "polls/s",
        "baseline": "computed RTU wire limit + turnaround (firmware_sim.line.read_poll_time_s)",
        "baseline_value": round(baseline, 3),
        "ratio": round(ratio, 4),
        "goal": "ratio within 0.9\u20131.1",  # the wording of BENCHMARKS.md
        "meets_goal": 0.9 <= ratio <= 1.1,
        "params": {
            "baud": baud,
            "registers": registers,
            "turnaround_ms": turnaround_s * 1000,
            "runs": RUNS,
            "polls_per_run": polls,
            "run_values": [round(r, 3) for r in rates],
            "client": "pymodbus AsyncModbusSerialClient on the simulator's pty",
        },
    }


async def main_async(turnarounds_ms: tuple[float, ...]) -> None:
    for turnaround_ms in turnarounds_ms:
        for baud in BAUDS:
            for registers in REGISTER_COUNTS:
                figure = await measure(baud, registers, turnaround_ms / 1000)
                print(json.dumps(figure, ensure_ascii=False), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--turnaround-ms",
        type=float,
        action="append",
        help="meter turnaround(s) to measure (default: 0 and 20)",
    )
    args = parser.parse_args()
    asyncio.run(main_async(tuple(args.turnaround_ms or TURNAROUNDS_MS)))


if __name__ == "__main__":
    main()
