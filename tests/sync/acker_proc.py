"""``python -m tests.sync.acker_proc PORT PASSWORD LOG``: the test acker in its own process.

The cloud's ingest never shares a process (or a GIL) with an agent; benchmarks run the acker
here so the drain is measured against a separate receiver, as in the field. Each received
message's seq and arrival time (CLOCK_MONOTONIC, comparable across processes) is appended to
LOG; SIGTERM stops it. A line ``settle DEVICE N`` on stdin is answered with ``settled`` once N
messages from DEVICE have arrived and all their acks are at the broker (``Acker.settle``).
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from pathlib import Path

from edge_agent.testing import Acker


def main(port: int, password: str, log_path: Path) -> None:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    acker = Acker(port, username="cloud-ingest", password=password, validate=False)
    print("ready", flush=True)

    def commands() -> None:
        for line in sys.stdin:
            _verb, device, count = line.split()
            try:
                acker.settle(device, int(count))
            except TimeoutError as exc:
                # Say so: the benchmark waiting for the answer fails instead of hanging.
                print(f"not settled: {exc}", flush=True)
                continue
            print("settled", flush=True)

    threading.Thread(target=commands, name="acker-commands", daemon=True).start()
    stop.wait()
    acker.close()
    with log_path.open("w") as log:
        for device, got in acker.received.items():
            for seq, at in got.first_at.items():
                log.write(f"{device} {seq} {at}\n")
    time.sleep(0)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))
