"""An agent killed with SIGKILL mid-drain resends what was not acked when it comes back."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.testing import Acker
from tests.support.certs import Certs
from tests.support.mosquitto import Broker
from tests.sync.rig import (
    DEVICE,
    outbox_empty,
    outbox_seqs,
    queue_readings,
    queue_session,
    wait_until,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]


def start_agent(store: Path, broker: Broker, certs: Certs) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.sync.agent_proc",
            str(store),
            str(broker.tls_port),
            str(certs.ca),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == b"ready"
    return proc


async def test_agent_killed_mid_drain_resends_unacked_rows(
    store: sqlite3.Connection, broker: Broker, certs: Certs, acker: Acker, tmp_path: Path
) -> None:
    queue_readings(store, 2000, per_batch=5)
    queue_session(store)
    queued = outbox_seqs(store)
    path = tmp_path / "agent.sqlite"
    for _ in range(3):
        agent = start_agent(path, broker, certs)
        try:
            before = len(outbox_seqs(store))
            await wait_until(lambda b=before: len(outbox_seqs(store)) < b - 50, 30, "some acks")  # type: ignore[misc]
        finally:
            agent.send_signal(signal.SIGKILL)
            agent.wait()
            assert agent.stdout is not None
            agent.stdout.close()
        # Nothing deleted that the cloud side did not receive.
        assert queued - outbox_seqs(store) <= acker.seqs(DEVICE)
        assert outbox_seqs(store), "drained before the kill: slow the drain down"
    agent = start_agent(path, broker, certs)
    try:
        await wait_until(lambda: outbox_empty(store), 60, "the rest to drain")
    finally:
        agent.terminate()
        agent.wait()
        assert agent.stdout is not None
        agent.stdout.close()
    await asyncio.sleep(0)
    # Each SIGKILL left the link without a DISCONNECT: the broker published the Last Will.
    wills = [m for m in acker.statuses if m.seq == 0]
    assert wills
    assert all(getattr(w, "online", None) is False for w in wills)
    received = acker.seqs(DEVICE) - {0}  # the will takes no place in the sequence
    assert queued <= received
    assert received == set(range(1, max(received) + 1))  # statuses too: no gaps
