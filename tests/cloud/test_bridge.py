"""The edge site broker (deploy/mosquitto/edge) bridging a device to the cloud broker over
TLS, queueing QoS 1 messages through a cloud outage."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.pg import PgConnection
from cloud.settings import Settings
from cloud.workers.ingest import open_ingest_worker
from protocols.enums import AuthorizationStatus, MessageKind
from protocols.testing import auth_decision, telemetry
from protocols.topics import topic
from tests.support.certs import Certs
from tests.support.cloud_env import add_device
from tests.support.mosquitto import Broker, edge_broker
from tests.support.probe import Probe
from tests.support.sim_device import SimDevice, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

DEVICE = "dev-site"
BACKLOG = 2000  # twice Mosquitto's default max_queued_messages


@pytest.fixture
def edge(tmp_path: Path, broker: Broker, certs: Certs) -> Iterator[Broker]:
    assert broker.tls_port is not None
    site = edge_broker(
        tmp_path / "edge",
        device_id=DEVICE,
        password=add_device(broker, DEVICE),
        cloud_tls_port=broker.tls_port,
        ca=certs.ca,
    )
    site.start()
    try:
        yield site
    finally:
        site.stop()


async def test_bridge_carries_both_directions_and_queues_through_an_outage(
    broker: Broker, edge: Broker, service_passwords: dict[str, str]
) -> None:
    ingest = Probe("cloud-ingest", service_passwords["cloud-ingest"], broker.port, "obs")
    await ingest.connect(session_expiry_s=3600)
    await ingest.subscribe(topic(DEVICE, MessageKind.TELEMETRY))
    agent = Probe("agent", "", edge.port, "agent")
    await agent.connect()
    await agent.subscribe(topic(DEVICE, MessageKind.CMD))
    await wait_for(lambda: f"as {DEVICE}" in broker.log_text(), timeout_s=20)

    await agent.publish(topic(DEVICE, MessageKind.TELEMETRY), b"live")
    await wait_for(lambda: len(ingest.messages) == 1, timeout_s=20)
    api = Probe("cloud-api", service_passwords["cloud-api"], broker.port, "api")
    await api.connect()
    await api.publish(topic(DEVICE, MessageKind.CMD), b"cmd-1")
    await wait_for(lambda: len(agent.messages) == 1, timeout_s=20)
    api.close()

    # Outage: the cloud broker goes away; the agent keeps publishing to its site broker.
    ingest.close()
    broker.stop()
    await agent.publish_many(
        [(topic(DEVICE, MessageKind.TELEMETRY), f"q{i}".encode()) for i in range(BACKLOG)]
    )
    broker.start()  # persistence brings back the observer's session and subscription
    ingest = Probe("cloud-ingest", service_passwords["cloud-ingest"], broker.port, "obs")
    await ingest.connect(session_expiry_s=3600)
    await wait_for(lambda: len(ingest.messages) >= BACKLOG, timeout_s=60)
    received = [payload for _, payload in ingest.messages]
    assert set(received) == {f"q{i}".encode() for i in range(BACKLOG)}
    agent.close()
    ingest.close()


async def test_a_device_behind_the_site_broker_is_ingested_and_acked_through_the_bridge(
    broker: Broker, edge: Broker, settings: Settings, pg: PgConnection
) -> None:
    await wait_for(lambda: f"as {DEVICE}" in broker.log_text(), timeout_s=20)
    # The agent talks only to its site broker on loopback; acks come back over the bridge.
    device = SimDevice(DEVICE, "", edge.port)
    device.queue(telemetry(DEVICE, seq, readings=50, first_index=seq * 100) for seq in range(1, 21))
    device.queue([auth_decision(DEVICE, 21, AuthorizationStatus.UNKNOWN)])  # the auth topic too
    async with open_ingest_worker(settings) as worker, asyncio.TaskGroup() as tg:
        run = tg.create_task(worker.run(), name="ingest")
        await device.connect()
        await device.drain(timeout_s=60, resend_every_s=5)
        run.cancel()
    device.disconnect()
    assert await pg.fetchval("SELECT count(*) FROM telemetry_batches") == 20
    assert await pg.fetchval("SELECT count(*) FROM telemetry") == 20 * 50 * 2
    assert await pg.fetchval("SELECT status FROM auth_decisions WHERE seq = 21") == "Unknown"
