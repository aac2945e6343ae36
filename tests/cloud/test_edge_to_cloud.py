"""The real edge agent's outbox, drained by its sync task over TLS with per-device
credentials, into real ingest workers and PostgreSQL: an outage backlog arrives whole and once,
and the outbox empties only through the cloud's acks — with a worker killed -9 on the way; and
the decisions of the agent's one authorization path arrive as rows of ``auth_decisions``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from cloud.pg import PgConnection
from edge_agent.auth.authorizer import Authorizer, Credential, IdTag, Moment, Pin
from edge_agent.backoff import Backoff
from edge_agent.store.auth import apply_auth_list_update
from edge_agent.store.db import connect, transaction
from edge_agent.sync.link import LinkSettings
from edge_agent.sync.service import SyncService, SyncSettings
from edge_agent.sync.uplink import UplinkSettings
from edge_agent.testing import RecordingHandler
from protocols.enums import AuthListUpdateType
from protocols.enums import AuthorizationStatus as Status
from protocols.idtags import hash_id_tag
from protocols.messages import AuthListEntry, AuthListUpdate
from tests.support.certs import Certs
from tests.support.cloud_env import add_device
from tests.support.mosquitto import Broker
from tests.support.sim_device import wait_for
from tests.support.workers import Workers
from tests.sync.rig import (
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


def _sync_settings(
    broker: Broker, certs: Certs, device: str, password: str, uplink: UplinkSettings
) -> SyncSettings:
    """The agent's link to the test broker's TLS listener as ``device``, quick to retry."""
    assert broker.tls_port is not None
    link = LinkSettings(
        device_id=device,
        host="127.0.0.1",
        port=broker.tls_port,
        username=device,
        password=password,
        ca_file=certs.ca,
        keepalive_s=5,
    )
    return SyncSettings(link=link, uplink=uplink, backoff=Backoff(initial_s=0.05, max_s=0.5))


async def test_edge_backlog_reaches_postgres_once_and_leaves_the_outbox_only_on_acks(
    broker: Broker,
    certs: Certs,
    pg: PgConnection,
    workers: Workers,
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
    settings = _sync_settings(
        broker,
        certs,
        DEVICE,
        password,
        UplinkSettings(ack_timeout_s=5.0, backlog_msgs_per_s=2000, backlog_burst=200),
    )
    sync = SyncService(store, settings, handler=RecordingHandler(), clock=wall_clock())
    async with running(sync):
        await wait_until(
            lambda: len(queued & outbox_seqs(store)) < len(queued) // 2,
            120,
            "half the backlog acked",
        )
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


async def test_decisions_made_at_the_edge_store_arrive_in_postgres_once(
    broker: Broker,
    certs: Certs,
    pg: PgConnection,
    workers: Workers,
    tmp_path: Path,
) -> None:
    assert broker.tls_port is not None
    device = "cm-edge-auth"
    password = add_device(broker, device)
    store = connect(tmp_path / "agent.sqlite")
    with transaction(store):
        apply_auth_list_update(
            store,
            AuthListUpdate(
                version=1,
                update_type=AuthListUpdateType.FULL,
                entries=[
                    AuthListEntry(id_tag_hash=hash_id_tag("04A21B"), status=Status.ACCEPTED),
                    AuthListEntry(id_tag_hash=hash_id_tag("0B10C"), status=Status.BLOCKED),
                ],
            ),
        )
    # The agent's one decision path, on its real store, while the cloud link is down.
    authorizer = Authorizer(store, charger_id=device, verifier=None, pin_secret=None)
    at = Moment(datetime.now(UTC), 1.0, clock_synced=True)
    presented: list[tuple[Credential, bool]] = [
        (IdTag("04A21B"), False),
        (IdTag("0B10C"), False),
        (IdTag("FFFF"), False),
        (IdTag("04A21B"), True),
        (IdTag("no such tag!"), False),
        (Pin("12345678"), False),
    ]
    made = [
        authorizer.authorize(credential, connector=1, at=at, connector_busy=busy)
        for credential, busy in presented
    ]
    assert [d.status for d in made] == [
        Status.ACCEPTED,
        Status.BLOCKED,
        Status.UNKNOWN,
        Status.CONCURRENT_TX,
        Status.INVALID,
        Status.INVALID,
    ]
    logged = store.execute(
        "SELECT outbox_seq, status, ref, session_id FROM decisions ORDER BY id"
    ).fetchall()

    workers.start(0)
    await wait_for(lambda: workers.joined(broker, 0), timeout_s=30)
    settings = _sync_settings(broker, certs, device, password, UplinkSettings(ack_timeout_s=5.0))
    sync = SyncService(store, settings, handler=RecordingHandler(), clock=wall_clock())
    async with running(sync):
        await wait_until(lambda: outbox_empty(store), 60, "the outbox to empty on acks")
        # The link is up: a decision now is live, and arrives as well.
        made.append(authorizer.authorize(IdTag("FFFF"), connector=2, at=at, connector_busy=False))
        logged += store.execute(
            "SELECT outbox_seq, status, ref, session_id FROM decisions ORDER BY id DESC LIMIT 1"
        ).fetchall()
        await wait_until(lambda: outbox_empty(store), 60, "the live decision to be acked")
    store.close()

    rows = await pg.fetch(
        "SELECT seq, status, credential_ref, device_session_id, connector FROM auth_decisions "
        "WHERE device_id = $1 ORDER BY seq",
        device,
    )
    assert [(r["seq"], r["status"], r["credential_ref"], r["device_session_id"]) for r in rows] == [
        tuple(row) for row in logged
    ]
    assert [r["connector"] for r in rows] == [1] * 6 + [2]
    assert made[0].session_id is not None
    assert rows[0]["device_session_id"] == made[0].session_id
    # Only hashes reached the cloud: no tag or PIN as presented.
    refs = " ".join(r["credential_ref"] for r in rows)
    for presented_value in ("04A21B", "12345678", "no such tag"):
        assert presented_value not in refs
    assert await pg.fetchval("SELECT count(*) FROM dead_letters") == 0
