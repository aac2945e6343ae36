"""Ingest under faults: an outage backlog, two workers, kill -9 mid-batch, redelivery.

The workers are real ``chargemitra-cloud ingest`` processes; the device is simulated on
the wire (tests/support/sim_device.py) and empties its outbox only through real acks.
"""

from __future__ import annotations

import pytest

from cloud.pg import PgConnection
from protocols.ids import new_ulid
from protocols.testing import session_events, telemetry
from tests.support.cloud_env import add_device
from tests.support.mosquitto import Broker
from tests.support.sim_device import SimDevice, wait_for
from tests.support.workers import Workers

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

READINGS_PER_BATCH = 200
BATCHES = 250  # 50,000 readings
SESSIONS = 5


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
    await wait_for(lambda: workers.joined(broker, 0, 1), timeout_s=30)
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
