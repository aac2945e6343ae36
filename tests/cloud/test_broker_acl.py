"""Issue 13, items 2 and 3: the broker refuses a device's foreign subscriptions and client ids.

Against the project's own broker config (deploy/mosquitto/cloud) and, for the shared
subscription, the real ingest worker process writing to PostgreSQL. Also: the starting file
an operator writes with ``chargemitra-cloud broker init-config`` runs that broker, and the
devices the cloud provisions survive a broker restart (the plugin saves its own file).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloud.pg import PgConnection
from protocols.enums import MessageKind
from protocols.testing import status, telemetry
from protocols.topics import UPLINK_KINDS, ingest_filter, topic
from tests.support.certs import Certs
from tests.support.cloud_env import add_device
from tests.support.mosquitto import Broker, cloud_broker
from tests.support.probe import Probe
from tests.support.sim_device import SimDevice, wait_for
from tests.support.workers import Workers

pytestmark = pytest.mark.integration

CLI = Path(sys.executable).with_name("chargemitra-cloud")

#: The MQTT 5 reason code for a refused SUBSCRIBE or CONNECT (0x87, Not authorized).
NOT_AUTHORIZED = 135


async def seed_devices(pg: PgConnection, *device_ids: str) -> None:
    await pg.execute("INSERT INTO users (id, name) VALUES ('U1', 'Host') ON CONFLICT DO NOTHING")
    await pg.execute(
        "INSERT INTO hosts (id, user_id, display_name) VALUES ('H1', 'U1', 'H') "
        "ON CONFLICT DO NOTHING"
    )
    for device_id in device_ids:
        await pg.execute("INSERT INTO devices (id, host_id) VALUES ($1, 'H1')", device_id)


async def test_a_device_cannot_join_the_ingest_share_group_and_nothing_is_lost(
    broker: Broker, workers: Workers, pg: PgConnection
) -> None:
    await seed_devices(pg, "dev-good")
    good = SimDevice("dev-good", add_device(broker, "dev-good"), broker.port)
    thief = Probe("dev-thief", add_device(broker, "dev-thief"), broker.port, "dev-thief")
    workers.start(0)
    await good.connect()
    # The worker's ack of this status proves its shared subscription is in place.
    good.queue([status("dev-good", 1)])
    await good.drain(timeout_s=60, resend_every_s=2)

    assert not (await thief.connect()).is_failure
    # The SUBACKs are checked after the traffic, so that on a broker granting them the
    # loss itself shows: the drain below then never completes.
    answers = [(await thief.subscribe(ingest_filter(kind))).value for kind in sorted(UPLINK_KINDS)]

    # Published once, never resent: had the thief been let into the group, the broker
    # would route a share of these to it and drop them on its read ACL.
    batches = [telemetry("dev-good", seq, readings=5, first_index=seq * 5) for seq in range(2, 42)]
    good.queue(batches)
    await good.drain(timeout_s=60, resend_every_s=10**6)
    assert answers == [NOT_AUTHORIZED] * len(UPLINK_KINDS)
    good.disconnect()
    assert thief.messages == []
    thief.close()
    rows = await pg.fetchval("SELECT count(*) FROM telemetry WHERE device_id = 'dev-good'")
    distinct = await pg.fetchval(
        "SELECT count(DISTINCT (seq, ts, quantity)) FROM telemetry WHERE device_id = 'dev-good'"
    )
    assert rows == distinct == 40 * 5 * 2


async def test_a_device_cannot_take_another_devices_client_id_session_or_queue(
    broker: Broker, service_passwords: dict[str, str]
) -> None:
    b_password = add_device(broker, "dev-b")
    a_password = add_device(broker, "dev-a")
    api = Probe("cloud-api", service_passwords["cloud-api"], broker.port, "api")
    assert not (await api.connect()).is_failure
    b = Probe("dev-b", b_password, broker.port, "dev-b")
    assert not (await b.connect(session_expiry_s=3600)).is_failure
    assert not (await b.subscribe(topic("dev-b", MessageKind.CMD))).is_failure

    # A, with its own valid credentials and B's client id: refused, and B stays connected.
    for session_expiry_s in (0, 3600):
        thief = Probe("dev-a", a_password, broker.port, "dev-b")
        refused = await thief.connect(session_expiry_s=session_expiry_s)
        assert refused.value == NOT_AUTHORIZED, refused
        thief.close()
    await api.publish(topic("dev-b", MessageKind.CMD), b"cmd-live")
    await wait_for(lambda: len(b.messages) == 1, timeout_s=10)
    assert not b.disconnected.is_set()

    # B goes offline; commands queue in its session; A tries to resume or wipe it.
    b.close()
    for n in range(3):
        await api.publish(topic("dev-b", MessageKind.CMD), f"cmd-queued-{n}".encode())
    for session_expiry_s in (3600, 0):  # resume (steal) the session, then clean start (wipe)
        thief = Probe("dev-a", a_password, broker.port, "dev-b")
        refused = await thief.connect(session_expiry_s=session_expiry_s)
        assert refused.value == NOT_AUTHORIZED, refused
        assert thief.messages == []
        thief.close()

    back = Probe("dev-b", b_password, broker.port, "dev-b")
    assert not (await back.connect(session_expiry_s=3600)).is_failure
    assert back.session_present
    await wait_for(lambda: len(back.messages) == 3, timeout_s=10)
    assert back.messages == [
        (topic("dev-b", MessageKind.CMD), f"cmd-queued-{n}".encode()) for n in range(3)
    ]
    back.close()
    api.close()


async def test_the_operators_starting_file_runs_the_broker_and_devices_survive_a_restart(
    tmp_path: Path, certs: Certs
) -> None:
    ingest_password, api_password = "ingest-secret-1", "api-secret-2"
    start_file = tmp_path / "dynamic-security.json"
    answers = f"{ingest_password}\n{ingest_password}\n{api_password}\n{api_password}\n"
    written = _cli(["broker", "init-config", str(start_file)], answers)
    assert written.returncode == 0, written.stderr
    again = _cli(["broker", "init-config", str(start_file)], answers)
    assert again.returncode == 1
    assert "exists" in again.stderr

    broker = cloud_broker(tmp_path / "broker", certs, {})
    assert broker.dynsec_file is not None
    broker.dynsec_file.write_bytes(start_file.read_bytes())
    broker.users = {"cloud-ingest": ingest_password, "cloud-api": api_password}
    broker.start()
    try:
        device_password = add_device(broker, "dev-r")
        broker.stop()
        broker.start()
        ingest = Probe("cloud-ingest", ingest_password, broker.port, "ingest-1")
        device = Probe("dev-r", device_password, broker.port, "dev-r")
        for probe in (ingest, device):
            assert not (await probe.connect()).is_failure
        assert not (await ingest.subscribe(ingest_filter(MessageKind.TELEMETRY))).is_failure
        assert not (await device.subscribe(topic("dev-r", MessageKind.CMD))).is_failure
        assert (await device.subscribe("#")).value == NOT_AUTHORIZED
        await device.publish(topic("dev-r", MessageKind.TELEMETRY), b"after restart")
        await wait_for(lambda: len(ingest.messages) == 1, timeout_s=10)
        ingest.close()
        device.close()
    finally:
        broker.stop()


def _cli(args: list[str], stdin: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEMITRA_")}
    return subprocess.run(
        [str(CLI), *args], input=stdin, env=env, capture_output=True, text=True, check=False
    )
