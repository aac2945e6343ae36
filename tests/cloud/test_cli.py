"""``chargemitra-cloud db``: upgrade an empty database, downgrade to base, upgrade again."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cloud.devices.codes import normalize_code
from cloud.models import metadata
from cloud.pg import PgConnection, close, connect
from cloud.settings import DbSettings, Settings
from cloud.telemetry.storage import TelemetryBackend
from tests.support.mosquitto import Broker

CLI = Path(sys.executable).with_name("chargemitra-cloud")


def _run(settings_env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEMITRA_")}
    return subprocess.run(
        [str(CLI), *args],
        env=env | settings_env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return _run({"CHARGEMITRA_DB_URL": db_url}, *args)


async def _tables(db_url: str) -> set[str]:
    conn = await connect(DbSettings(url=db_url))
    try:
        # Tables, partitioned ones too, but not their partitions (the plain telemetry's).
        rows = await conn.fetch(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "AND c.relname <> 'alembic_version'"
        )
        return {str(r["relname"]) for r in rows}
    finally:
        await close(conn)


def _head_revision() -> str:
    from alembic.script import ScriptDirectory

    from cloud.migrate import alembic_config

    head = ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()
    assert head is not None
    return head


@pytest.mark.integration
async def test_db_downgrade_base_then_upgrade_head(
    db_url: str, telemetry_backend: TelemetryBackend
) -> None:
    down = _cli(db_url, "db", "downgrade", "base")
    assert down.returncode == 0, down.stderr
    assert await _tables(db_url) == set()
    up = _cli(db_url, "db", "upgrade")
    assert up.returncode == 0, up.stderr
    # Every modelled table, plus the telemetry rollup the plain backend creates as a table
    # (on Timescale it is a continuous aggregate, a view).
    rollup = {"telemetry_15m"} if telemetry_backend is TelemetryBackend.PLAIN else set()
    assert await _tables(db_url) == set(metadata.tables) | rollup
    current = _cli(db_url, "db", "current")
    assert _head_revision() in current.stdout


def test_a_bad_setting_stops_the_command_with_the_variable() -> None:
    result = _run({"CHARGEMITRA_DB_POOL_SIZE": "many"}, "db", "current")
    assert result.returncode == 2
    assert "CHARGEMITRA_DB_POOL_SIZE" in result.stderr


@pytest.mark.integration
async def test_operator_issues_a_code_and_revokes_a_device(
    settings: Settings, broker: Broker, pg: PgConnection, service_passwords: dict[str, str]
) -> None:
    await pg.execute("INSERT INTO users (id, name) VALUES ('U1', 'Asha')")
    await pg.execute("INSERT INTO hosts (id, user_id, display_name) VALUES ('H1', 'U1', 'A')")
    env = {
        "CHARGEMITRA_DB_URL": settings.db.url,
        # Device credentials are managed as the API's broker identity.
        "CHARGEMITRA_MQTT_PORT": str(broker.port),
        "CHARGEMITRA_MQTT_USERNAME": "cloud-api",
        "CHARGEMITRA_MQTT_PASSWORD": service_passwords["cloud-api"],
    }
    issued = _run(env, "device", "issue-code", "--host-id", "H1")
    assert issued.returncode == 0, issued.stderr
    assert normalize_code(issued.stdout.split()[0]) is not None
    assert await pg.fetchval("SELECT count(*) FROM pairing_codes WHERE host_id = 'H1'") == 1
    unknown = _run(env, "device", "issue-code", "--host-id", "nobody")
    assert unknown.returncode == 1
    assert "host 'nobody' not found" in unknown.stderr

    await pg.execute("INSERT INTO devices (id, host_id) VALUES ('dev-x', 'H1')")
    broker.add_device("dev-x", "pw")
    revoked = _run(env, "device", "revoke", "dev-x")
    assert revoked.returncode == 0, revoked.stderr
    assert await pg.fetchval("SELECT status FROM devices WHERE id = 'dev-x'") == "revoked"
    assert "dev-x" not in broker.admin().usernames()
