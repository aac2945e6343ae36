"""A stopped ingest worker parks nothing (issue 13, item 4).

Two real ``chargemitra-cloud ingest`` processes share ``$share/ingest``; one is killed -9.
With a persistent session (the old 1-hour expiry) Mosquitto kept queueing the dead worker's
share — about half of all uplink — for its return. Workers now connect with session expiry
0: the dead worker's membership ends with its connection and the survivor takes everything.
"""

from __future__ import annotations

import time

import pytest

from cloud.pg import PgConnection
from protocols.testing import telemetry
from tests.support.cloud_env import add_device
from tests.support.mosquitto import Broker
from tests.support.sim_device import SimDevice, wait_for
from tests.support.workers import Workers

pytestmark = [pytest.mark.integration, pytest.mark.fault]

MESSAGES = 40


async def _both_workers_joined(broker: Broker, workers: Workers) -> None:
    workers.start(0)
    workers.start(1)
    # A shared subscription with no member drops messages: wait for both workers' sessions.
    await wait_for(lambda: workers.joined(broker, 0, 1), timeout_s=30)


async def _gone(broker: Broker, client_id: str) -> None:
    """Wait until the broker has noticed ``client_id``'s connection is gone."""
    await wait_for(
        lambda: any(
            f"Client {client_id} {what}" in broker.log_text()
            for what in ("closed its connection", "disconnected")
        ),
        timeout_s=30,
    )


async def test_with_one_of_two_workers_killed_every_message_is_ingested_at_once(
    broker: Broker, pg: PgConnection, workers: Workers
) -> None:
    await _both_workers_joined(broker, workers)
    workers.kill9(1)
    await _gone(broker, "ingest-1")

    device = SimDevice("dev-k", add_device(broker, "dev-k"), broker.port)
    device.queue(telemetry("dev-k", seq, readings=5, first_index=seq * 10) for seq in range(1, 41))
    await device.connect()
    started = time.monotonic()
    # Sent once, never resent: each message must reach the surviving worker on its own.
    assert device.send_unacked() == MESSAGES
    try:
        await wait_for(lambda: device.unacked() == 0, timeout_s=30)
    except TimeoutError:
        pytest.fail(
            f"{device.unacked()} of {MESSAGES} messages never ingested: parked in the killed "
            "worker's session"
        )
    print(f"{MESSAGES}/{MESSAGES} ingested in {time.monotonic() - started:.2f} s")
    device.disconnect()

    assert await pg.fetchval("SELECT count(*) FROM telemetry_batches") == MESSAGES
    assert await pg.fetchval("SELECT count(*) FROM telemetry") == MESSAGES * 5 * 2
    assert workers.procs[0].poll() is None


async def test_a_worker_killed_mid_stream_loses_nothing_the_device_resends(
    broker: Broker, pg: PgConnection, workers: Workers
) -> None:
    """What the killed worker had received but not committed is gone from the broker (its
    session ended); the device still holds it, unacked, and resends it — as the agent does
    after its ack timeout — and the survivor stores it exactly once."""
    await _both_workers_joined(broker, workers)
    device = SimDevice("dev-m", add_device(broker, "dev-m"), broker.port)
    batches = 200
    device.queue(
        telemetry("dev-m", seq, readings=50, first_index=seq * 100) for seq in range(1, batches + 1)
    )
    await device.connect()
    device.send_unacked()
    await wait_for(lambda: device.unacked() < batches * 3 // 4, timeout_s=60)
    workers.kill9(0)
    await _gone(broker, "ingest-0")
    await device.drain(timeout_s=120, resend_every_s=5)
    device.disconnect()

    assert await pg.fetchval("SELECT count(*) FROM telemetry_batches") == batches
    assert await pg.fetchval("SELECT count(*) FROM telemetry") == batches * 50 * 2
    assert await pg.fetchval("SELECT count(*) FROM dead_letters") == 0
    assert workers.procs[1].poll() is None
