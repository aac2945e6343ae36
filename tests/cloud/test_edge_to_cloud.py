"""The real edge agent's outbox, drained by its sync task over TLS with per-device
credentials, into real ingest workers and PostgreSQL: an outage backlog arrives whole and once,
and the outbox empties only through the cloud's acks — with a worker killed -9 on the way."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.pg import PgConnection
from edge_agent.store.db import connect
from edge_agent.sync.backoff import Backoff
from edge_agent.sync.link import LinkSettings
from edge_agent.sync.service import SyncService, SyncSettings
from edge_agent.sync.uplink import UplinkSettings
from tests.cloud.certs import Certs
from tests.cloud.conftest import add_device
from tests.cloud.mosquitto import Broker
from tests.cloud.sim_device import wait_for
from tests.cloud.test_ingest_faults import Workers, workers  # noqa: F401 -- the fixture
from tests.sync.rig import (
    RecordingHandler,
    outbox_empty,
    outbox_seqs,
    queue_readings,
    queue_session,
    running,
    wait_until,
    wall_clock,
)

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

DEVICE = "cm-edge-e2e"
SESSIONS = 3
EVENTS = 4  # started, 2 updated, stopped
BATCHES = 2500
PER_BATCH = 20  # 50,000 readings, 2 quantities each


async def test_edge_backlog_reaches_postgres_once_and_leaves_the_outbox_only_on_acks(
    broker: Broker,
    certs: Certs,
    pg: PgConnection,
    workers: Workers,  # noqa: F811 -- the imported fixture
    tmp_path: Path,
) -> None:
    assert broker.tls_port is not None
    password = add_device(broker, DEVICE)
    store = connect(tmp_path / "agent.sqlite")
    for _ in range(SESSIONS):
        queue_session(store, events=EVENTS, device_id=DEVICE)
    queue_readings(store, BATCHES, per_batch=PER_BATCH, device_id=DEVICE)
    queued = outbox_seqs(store)

    workers.start(0)
    workers.start(1)
    await wait_for(lambda: all(f"as ingest-{i}" in broker.log_text() for i in (0, 1)), timeout_s=30)
    settings = SyncSettings(
        link=LinkSettings(
            device_id=DEVICE, host="127.0.0.1", port=broker.tls_port, username=DEVICE,
            password=password, ca_file=certs.ca, keepalive_s=5,
        ),
        uplink=UplinkSettings(ack_timeout_s=5.0, backlog_msgs_per_s=2000, backlog_burst=200),
        backoff=Backoff(initial_s=0.05, max_s=0.5),
    )  # fmt: skip
    sync = SyncService(store, settings, handler=RecordingHandler(), clock=wall_clock())
    async with running(sync):
        await wait_until(lambda: len(queued & outbox_seqs(store)) < len(queued) // 2, 120,
                         "half the backlog acked")  # fmt: skip
        # Every row gone from the outbox is committed in PostgreSQL.
        gone = queued - outbox_seqs(store)
        committed = await pg.fetchval(
            "SELECT count(*) FROM telemetry_batches WHERE device_id = $1", DEVICE
        )
        assert committed >= len(gone) - SESSIONS * EVENTS
        workers.kill9(0)  # mid-stream
        workers.start(0)
        await wait_until(lambda: outbox_empty(store), 180, "the outbox to empty")
    store.close()

    points = BATCHES * PER_BATCH * 2
    count = "SELECT count(*) FROM telemetry WHERE device_id = $1"
    assert await pg.fetchval(count, DEVICE) == points  # nothing lost, nothing twice
    assert (
        await pg.fetchval("SELECT count(*) FROM telemetry_batches WHERE device_id = $1", DEVICE)
        == BATCHES
    )
    rows = await pg.fetch(
        "SELECT state, energy_wh, events_received FROM sessions WHERE device_id = $1", DEVICE
    )
    assert len(rows) == SESSIONS
    assert {(r["state"], r["energy_wh"], r["events_received"]) for r in rows} == {
        ("stopped", 10 * EVENTS, EVENTS)
    }
    assert await pg.fetchval("SELECT count(*) FROM dead_letters") == 0
