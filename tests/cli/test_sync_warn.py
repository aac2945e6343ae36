"""A cloud that never acknowledges: the broker takes every message (the link is up) but
cloud ingest confirms none, so nothing leaves the outbox. ``sync status`` and ``doctor``
beside the running agent (``chargemitra-agent run`` as a process, the project's broker with
TLS, the simulator on RTU) turn to WARN once messages have waited and nothing was acked for
``mqtt.ack_warn_after_s``, and back to PASS when acks flow again."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.testing import Acker
from firmware_sim.site import MeterSpec
from tests.cli.rig import DEVICE, Result, agent_process, cli, mqtt_table, sim_site, write_config
from tests.edge.agent_rig import wait_until
from tests.support.certs import Certs
from tests.support.mosquitto import Broker

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WARN_AFTER_S = 2


async def test_a_never_acking_cloud_turns_sync_status_and_doctor_to_warn(
    tmp_path: Path, broker: Broker, certs: Certs, acker: Acker
) -> None:
    assert broker.tls_port is not None
    acker.drop_acks = True  # receives everything, acknowledges nothing
    mqtt = mqtt_table(tmp_path, port=broker.tls_port, ca=certs.ca)
    mqtt += f"ack_warn_after_s = {WARN_AFTER_S}\n"
    async with sim_site(MeterSpec("sdm630", 1)) as sim:
        config = write_config(tmp_path, sim, mqtt=mqtt)
        async with agent_process(config, tmp_path):
            last: list[Result] = []

            async def sync_status_is(code: int) -> bool:
                result = await cli("sync", "status", "--json", config=config)
                last[:] = [result]
                return result.code == code and result.json()["ack_stalled"] is (code != 0)

            await wait_until(lambda: sync_status_is(1), timeout_s=60, every_s=0.3)
            stalled = last[0].json()
            # The link itself is up: the warning is about acks, not the connection.
            assert stalled["connected"] is True, stalled
            assert stalled["last_ack_at"] is None
            assert stalled["backlog"]["rows"] > 0
            assert stalled["ack_silence_s"] >= WARN_AFTER_S
            assert acker.received[DEVICE].deliveries > 0  # the cloud did receive them

            human = await cli("sync", "status", config=config)
            assert human.code == 1, human
            assert "WARN" in human.stdout
            assert "nothing acknowledged" in human.stdout

            doctor = await cli("doctor", "--json", config=config)
            assert doctor.code == 1, doctor.stdout
            acks = doctor.check("cloud acks")
            assert acks["level"] == "WARN", acks
            assert "nothing acknowledged" in acks["detail"]
            assert "is connected" in doctor.check("cloud link")["detail"]

            # The cloud comes back: new messages are acked, the warning clears.
            acker.drop_acks = False
            await wait_until(lambda: sync_status_is(0), timeout_s=60, every_s=0.3)
            assert last[0].json()["last_ack_at"] is not None
            doctor = await cli("doctor", "--json", config=config)
            assert doctor.check("cloud acks")["level"] == "PASS", doctor.stdout


async def test_uplink_dropped_for_want_of_a_cloud_subscriber_shows_in_sync_status(
    tmp_path: Path, broker: Broker, certs: Certs
) -> None:
    """No cloud ingest subscribed (no acker here): the broker PUBACKs every uplink message
    0x10 "No matching subscribers" and drops it. The agent resends them, and ``sync status``
    counts them and says what it likely means."""
    assert broker.tls_port is not None
    mqtt = mqtt_table(tmp_path, port=broker.tls_port, ca=certs.ca)
    async with sim_site(MeterSpec("sdm630", 1)) as sim:
        config = write_config(tmp_path, sim, mqtt=mqtt)
        async with agent_process(config, tmp_path):
            last: list[Result] = []

            async def dropped() -> bool:
                result = await cli("sync", "status", "--json", config=config)
                last[:] = [result]
                return bool(result.json().get("dropped_no_subscribers"))

            await wait_until(dropped, timeout_s=60, every_s=0.3)
            status = last[0].json()
            assert status["connected"] is True, status
            assert status["backlog"]["rows"] > 0  # dropped, so still in the outbox
            human = await cli("sync", "status", config=config)
            assert "dropped by the broker, no cloud subscriber" in human.stdout, human.stdout
