"""`chargemitra-agent provision` against the real API over HTTP: the pairing code becomes
cloud.toml, a broker password and the token key, the agent's config merges them, and the
agent's sync link comes up on the broker with them (TLS, per-device credentials)."""

from __future__ import annotations

import asyncio
import stat
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from redis.asyncio import Redis

from cloud.app import create_app
from cloud.devices.service import issue_pairing_code
from cloud.pg import PgConnection
from edge_agent.config import load_config
from edge_agent.provision import (
    CLOUD_OVERLAY,
    PASSWORD_FILE,
    PIN_SECRET_FILE,
    ProvisionError,
    claim,
)
from edge_agent.store.db import connect
from edge_agent.sync.from_config import sync_settings
from edge_agent.sync.service import SyncService
from edge_agent.testing import RecordingHandler
from tests.support.certs import Certs
from tests.support.cloud_env import REDIS_KEY_PREFIX, REDIS_URL, make_settings
from tests.support.mosquitto import Broker, free_port
from tests.sync.rig import running, wait_until, wall_clock

pytestmark = pytest.mark.integration

AGENT = Path(sys.executable).with_name("chargemitra-agent")

SITE = """
[[meters]]
id = "m1"
model = "sdm630"
unit_id = 1
link = { transport = "tcp", host = "127.0.0.1", port = 5020 }

[[connectors]]
id = 1
meter = "m1"
max_current_a = 32

[connectors.relay]
driver = "none"
"""


async def test_pairing_code_to_a_working_broker_link(
    db_url: str,
    broker: Broker,
    certs: Certs,
    service_passwords: dict[str, str],
    pg: PgConnection,
    tmp_path: Path,
) -> None:
    redis = Redis.from_url(REDIS_URL)
    await redis.delete(REDIS_KEY_PREFIX + "rl:claim:127.0.0.1")
    await redis.aclose()
    await pg.execute("INSERT INTO users (id, name) VALUES ('U1', 'Asha')")
    await pg.execute("INSERT INTO hosts (id, user_id, display_name) VALUES ('H1', 'U1', 'A')")
    settings = make_settings(
        db_url,
        broker,
        service_passwords["cloud-api"],
        username="cloud-api",
        CHARGEMITRA_MQTT_PUBLIC_URL=f"mqtts://127.0.0.1:{broker.tls_port}",
    )
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    site = tmp_path / "etc"
    site.mkdir()
    (site / "agent.toml").write_text(f'device_id = "unprovisioned"\n{SITE}')
    async with asyncio.TaskGroup() as group:
        serving = group.create_task(server.serve(), name="api")
        try:
            await wait_until(lambda: server.started, 20, "the API")
            async with app.state.cloud.sessions() as db, db.begin():
                issued = await issue_pairing_code(
                    db,
                    app.state.cloud.settings,
                    host_id="H1",
                    charger_id=None,
                    now=datetime.now(UTC),
                )
            cloud_url = f"http://127.0.0.1:{port}"
            proc = await asyncio.create_subprocess_exec(
                str(AGENT),
                "provision",
                "--code",
                issued.code,
                "--cloud",
                cloud_url,
                "--config",
                str(site / "agent.toml"),
                "--ca-file",
                str(certs.ca),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            out, err = await proc.communicate()
            assert proc.returncode == 0, err.decode()
            assert b"provisioned as cm-" in out
            # The code is single use: a second claim is refused, with the cloud's reason.
            with pytest.raises(ProvisionError, match="HTTP 400"):
                await asyncio.to_thread(claim, cloud_url, issued.code)
            with pytest.raises(ProvisionError, match="only over https"):
                await asyncio.to_thread(claim, "http://cloud.example.in", issued.code)
        finally:
            server.should_exit = True
            await serving

    assert (site / CLOUD_OVERLAY).is_file()
    assert stat.S_IMODE((site / PASSWORD_FILE).stat().st_mode) == 0o600
    agent_settings = load_config(site / "agent.toml")  # merges cloud.toml
    assert agent_settings.device_id.startswith("cm-")
    mqtt = agent_settings.mqtt
    assert mqtt is not None
    assert (mqtt.port, mqtt.tls) == (broker.tls_port, True)
    assert agent_settings.auth.public_key_files
    # The booking-PIN secret: in a 0600 file the agent's config names, equal to the cloud's.
    pin_file = agent_settings.auth.pin_secret_file
    assert pin_file == site / PIN_SECRET_FILE
    assert stat.S_IMODE(pin_file.stat().st_mode) == 0o600
    stored = await pg.fetchval(
        "SELECT pin_secret FROM devices WHERE id = $1", agent_settings.device_id
    )
    assert stored == pin_file.read_bytes()
    assert len(stored) == 32

    # The agent's own sync settings, built from that configuration, connect with those
    # credentials.
    configured = sync_settings(agent_settings)
    assert configured is not None
    conn = connect(tmp_path / "agent.db")
    sync = SyncService(conn, configured, handler=RecordingHandler(), clock=wall_clock())
    async with running(sync):
        await wait_until(lambda: sync.stats.connected, 20, "the broker link")
    conn.close()
