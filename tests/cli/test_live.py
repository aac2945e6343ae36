"""Every live command beside the running agent (``chargemitra-agent run`` as a process)
against the simulator and the project's broker with TLS: live actions go through the
control socket, reads come from the store opened read-only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_agent.testing import Acker
from firmware_sim.site import MeterSpec
from protocols.ids import new_ulid
from protocols.tokens import PrivateKey, UnlockClaims, sign_unlock_token
from tests.cli.rig import (
    DEVICE,
    TAG,
    agent_process,
    cli,
    mqtt_table,
    one_line_error,
    sim_site,
    write_config,
)
from tests.edge.agent_rig import control, seed_local_list, wait_until
from tests.support.certs import Certs
from tests.support.mosquitto import Broker, free_port


async def _connected(config: Path) -> bool:
    return (await cli("sync", "status", "--json", config=config)).json().get("connected") is True


@pytest.mark.integration
@pytest.mark.slow
async def test_every_command_beside_a_running_connected_agent(
    tmp_path: Path, broker: Broker, certs: Certs, acker: Acker
) -> None:
    assert broker.tls_port is not None
    mqtt = mqtt_table(tmp_path, port=broker.tls_port, ca=certs.ca)
    seed_local_list(tmp_path / "agent.db", (TAG,))
    async with sim_site(MeterSpec("sdm630", 1)) as sim:
        config = write_config(tmp_path, sim, mqtt=mqtt)
        async with agent_process(config, tmp_path):
            await wait_until(lambda: _connected(config), timeout_s=20, every_s=0.3)

            doctor = await cli("doctor", "--json", config=config)
            assert doctor.code == 0, doctor.stdout
            assert {c["level"] for c in doctor.json()["checks"]} == {"PASS"}
            assert "is connected" in doctor.check("cloud link")["detail"]
            assert (
                "in use by the agent" in doctor.check(f"port {sim.endpoints()['serial']}")["detail"]
            )
            assert doctor.json()["notes"] == []

            read = await cli("meter", "read", "--json", config=config)
            assert read.code == 0, read
            assert read.json()["via"] == "agent"
            assert 200 < read.json()["meters"][0]["values"]["voltage_l1_v"] < 260
            raw = await cli(
                "meter",
                "raw",
                "--unit",
                "1",
                "--fc",
                "4",
                "--addr",
                "0",
                "--count",
                "2",
                "--json",
                config=config,
            )
            assert raw.code == 0, raw
            assert raw.json()["via"] == "agent"
            assert 200 < raw.json()["quantities"]["voltage_l1_v"] < 260
            # The agent holds the line: scanning it would garble both.
            busy = await cli("meter", "scan", "--port", sim.endpoints()["serial"], config=config)
            assert "busy" in one_line_error(busy)

            test = await cli("relay", "test", "--json", config=config)
            assert test.code == 0, test
            assert test.json()["verdict"] == "pass"
            assert test.json()["power_closed_w"] > 5000
            assert test.json()["power_open_w"] < 50
            on = await cli("relay", "on", "--json", config=config)
            assert (on.code, on.json()["read_closed"]) == (0, True)
            off = await cli("relay", "off", "--json", config=config)
            assert (off.code, off.json()["read_closed"]) == (0, False)

            check = await cli("auth", "check", TAG, "--json", config=config)
            assert (check.code, check.json()["status"]) == (0, "Accepted")
            assert check.json()["recorded"] is False
            unknown = await cli("auth", "check", "FFFFFFFFFF", "--json", config=config)
            assert (unknown.code, unknown.json()["status"]) == (1, "Unknown")
            listed = await cli("auth", "list", "--json", config=config)
            assert listed.json()["version"] == 1
            assert len(listed.json()["entries"]) == 1
            version = await cli("auth", "list", "--version", "--json", config=config)
            assert "entries" not in version.json()

            started = await control(tmp_path / "agent.sock", cmd="start", connector=1, id_tag=TAG)
            assert started["ok"], started
            session_id = started["session_id"]
            sessions = await cli("session", "list", "--open", "--json", config=config)
            assert [s["session_id"] for s in sessions.json()["sessions"]] == [session_id]
            # A session is charging: the relay test would cut it off.
            refused = await cli("relay", "test", config=config)
            assert "active" in one_line_error(refused)
            busy_check = await cli("auth", "check", TAG, "--json", config=config)
            assert busy_check.json()["status"] == "ConcurrentTx"
            stop = await cli("session", "stop", session_id, "--json", config=config)
            assert stop.code == 0, stop
            shown = await cli("session", "show", session_id, "--json", config=config)
            assert shown.json()["stop_reason"] == "Local"
            assert [e["event"] for e in shown.json()["events"]][-1] == "stopped"
            missing = await cli("session", "show", "no-such-session", config=config)
            assert "no session" in one_line_error(missing)

            flush = await cli("sync", "flush", "--timeout", "20", "--json", config=config)
            assert flush.code == 0, flush
            assert flush.json()["rows_left"] == 0
            status = await cli("sync", "status", "--json", config=config)
            assert status.code == 0
            assert status.json()["connected"] is True
            assert status.json()["last_ack_at"] is not None
            assert status.json()["backlog"]["rows"] >= 0

            shown_config = await cli("config", "show", "--json", config=config)
            assert shown_config.json()["device_id"] == DEVICE
            assert shown_config.json()["mqtt"]["password_file"].endswith("mqtt.password")
            log = await cli(
                "logs", "--file", str(tmp_path / "agent.log"), "-n", "5", "--json", config=config
            )
            assert log.code == 0
            assert len(log.stdout.splitlines()) <= 5


@pytest.mark.integration
async def test_doctor_beside_the_agent_reports_its_broken_cloud_link(
    tmp_path: Path, certs: Certs
) -> None:
    mqtt = mqtt_table(tmp_path, port=free_port(), ca=certs.ca)  # nobody listens there
    async with sim_site(MeterSpec("sdm630", 1)) as sim:
        config = write_config(tmp_path, sim, mqtt=mqtt)
        async with agent_process(config, tmp_path):

            async def link_failed() -> bool:
                result = await cli("doctor", "--json", config=config)
                return "cannot reach broker" in result.check("cloud link")["detail"]

            await wait_until(link_failed, timeout_s=20, every_s=0.5)
            doctor = await cli("doctor", "--json", config=config)
            assert doctor.code == 2
            link = doctor.check("cloud link")
            assert link["level"] == "FAIL"
            assert "broker unreachable" in link["remedy"]
            assert doctor.check("agent")["level"] == "PASS"
            status = await cli("sync", "status", "--json", config=config)
            assert (status.code, status.json()["connected"]) == (1, False)
            flush = await cli("sync", "flush", config=config)
            assert "link is down" in one_line_error(flush)


@pytest.mark.integration
async def test_auth_check_of_a_token_beside_the_agent_uses_nothing_up(tmp_path: Path) -> None:
    """``auth check`` answers Accepted for a valid unused token and leaves it unused: the
    agent then accepts the same token when it is presented, and ``auth check`` of the used
    token answers Replayed, as the agent does."""
    key = PrivateKey.generate()
    public = tmp_path / "cloud.pub"
    public.write_bytes(key.public_key().to_pem())
    now = datetime.now(UTC)
    token = sign_unlock_token(
        key,
        UnlockClaims(
            charger_id=DEVICE,
            connector=1,
            user_ref="u-1",
            jti=new_ulid(),
            nbf=now - timedelta(minutes=1),
            exp=now + timedelta(hours=1),
            booking_id="bk-1",
        ),
    )
    sock = tmp_path / "agent.sock"
    async with sim_site(MeterSpec("sdm630", 1)) as sim:
        tables = f'[auth]\npublic_key_files = ["{public}"]'
        config = write_config(tmp_path, sim, tables=tables)
        async with agent_process(config, tmp_path):
            for _ in range(2):  # the first check used nothing up
                check = await cli("auth", "check", token, "--json", config=config)
                assert (check.code, check.json()["status"]) == (0, "Accepted"), check
                assert (check.json()["kind"], check.json()["recorded"]) == ("Token", False)

            started = await control(sock, cmd="start", connector=1, token=token)
            assert (started["ok"], started["status"]) == (True, "Accepted"), started
            assert (await control(sock, cmd="stop", connector=1))["ok"]

            async def available() -> bool:
                status = await control(sock, cmd="status")
                return bool(status["connectors"][0]["status"] == "Available")

            await wait_until(available)
            replay = await cli("auth", "check", token, "--json", config=config)
            assert (replay.code, replay.json()["status"]) == (1, "Replayed"), replay
            again = await control(sock, cmd="start", connector=1, token=token)
            assert (again["ok"], again["status"]) == (False, "Replayed"), again
