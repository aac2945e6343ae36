"""Ingest under faults: an outage backlog, two workers, kill -9 mid-batch, redelivery.

The workers are real ``chargemitra-cloud ingest`` processes; the device is simulated on
the wire (tests/cloud/sim_device.py) and empties its outbox only through real acks.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.pg import PgConnection
from cloud.settings import env_name
from protocols.ids import new_ulid
from tests.cloud.conftest import REDIS_URL, add_device
from tests.cloud.messages import session_events, telemetry
from tests.cloud.mosquitto import Broker
from tests.cloud.sim_device import SimDevice, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

CLI = Path(sys.executable).with_name("chargemitra-cloud")
READINGS_PER_BATCH = 200
BATCHES = 250  # 50,000 readings
SESSIONS = 5


class Workers:
    """``chargemitra-cloud ingest`` processes, one per index, that can be killed -9."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, index: int) -> None:
        with (self.log_dir / f"ingest-{index}.log").open("ab") as log:
            self.procs[index] = subprocess.Popen(
                [str(CLI), "ingest", "--index", str(index)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def kill9(self, index: int) -> None:
        proc = self.procs[index]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def workers(
    db_url: str, broker: Broker, service_passwords: dict[str, str], tmp_path: Path
) -> Iterator[Workers]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEMITRA_")}
    env |= {
        env_name("app", "env"): "test",
        env_name("app", "secret_key"): new_ulid() + new_ulid(),
        env_name("db", "url"): db_url,
        env_name("redis", "url"): REDIS_URL,
        env_name("mqtt", "port"): str(broker.port),
        env_name("mqtt", "username"): "cloud-ingest",
        env_name("mqtt", "password"): service_passwords["cloud-ingest"],
        # Small batches so a kill lands mid-stream, between and inside transactions.
        env_name("ingest", "batch_max"): "8",
        env_name("app", "log_level"): "WARNING",
    }
    running = Workers(env, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()


def _backlog(device: SimDevice) -> None:
    seq = 1
    device.queue(
        telemetry(device.device_id, seq + b, readings=READINGS_PER_BATCH, first_index=b * 1000)
        for b in range(BATCHES)
    )
    seq += BATCHES
    for _ in range(SESSIONS):
        events = session_events(device.device_id, new_ulid(), seq, updates=3)
        seq += len(events)
        device.queue([events[-1], events[2], events[0], events[1]])  # stop first, one lost


async def test_outage_backlog_with_two_workers_killed_five_times_loses_and_duplicates_nothing(
    broker: Broker, pg: PgConnection, workers: Workers
) -> None:
    device = SimDevice("dev-fault", add_device(broker, "dev-fault"), broker.port)
    _backlog(device)
    total = device.unacked()
    workers.start(0)
    workers.start(1)
    # A shared subscription with no member drops messages: wait for both workers' sessions.
    await wait_for(lambda: all(f"as ingest-{i}" in broker.log_text() for i in (0, 1)), timeout_s=30)
    await device.connect()
    # Kill -9 a worker each time another seventh of the backlog is acked, then restart it.
    for kill in range(5):
        await device.drain(timeout_s=120, resend_every_s=5, until=total - (kill + 1) * total // 7)
        workers.kill9(kill % 2)
        workers.start(kill % 2)
    await device.drain(timeout_s=180, resend_every_s=5)
    device.disconnect()

    points = BATCHES * READINGS_PER_BATCH * 2
    assert await pg.fetchval("SELECT count(*) FROM telemetry") == points
    assert await pg.fetchval("SELECT count(*) FROM telemetry_batches") == BATCHES
    assert (
        await pg.fetchval(
            "SELECT count(*) FROM (SELECT DISTINCT meter_id, ts, quantity FROM telemetry) t"
        )
        == points
    )
    rows = await pg.fetch("SELECT state, energy_wh, events_received, last_event_seq FROM sessions")
    assert len(rows) == SESSIONS
    assert {
        (r["state"], r["energy_wh"], r["events_received"], r["last_event_seq"]) for r in rows
    } == {("stopped", 400, 4, 5)}
    assert await pg.fetchval("SELECT count(*) FROM session_events") == SESSIONS * 4
    assert await pg.fetchval("SELECT count(*) FROM dead_letters") == 0
    assert all(p.poll() is None for p in workers.procs.values())
