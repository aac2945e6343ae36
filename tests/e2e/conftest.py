"""The chaos rig (tests/e2e/rig.py), started once per module and shared by its scenarios:
each scenario charges its own session through the same processes, so what one leaves behind
(a resent row, a redelivered stop) is checked again by every later scenario's books.

Services come from ``CHARGEMITRA_TEST_DATABASE_URL`` / ``CHARGEMITRA_REDIS_URL`` as for the
cloud tests; a missing service or a machine without network namespaces fails: nothing skips.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tomllib
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
import pytest_asyncio

from cloud.accounts.models import Role
from cloud.pg import close, connect
from cloud.settings import DbSettings, env_name
from firmware_sim.simsite import SimConfig, SimSite
from firmware_sim.site import MeterSpec
from protocols.ids import new_ulid
from tests.e2e.netns import agent_namespace
from tests.e2e.rig import BIN, Rig, agent_config
from tests.support.api_process import clear_rate_limits
from tests.support.bookings_fixtures import serve_api
from tests.support.certs import make_certs
from tests.support.cloud_env import REDIS_KEY_PREFIX, REDIS_URL, TABLES, make_settings, migrate_once
from tests.support.flow_rig import list_charger, wait_for
from tests.support.market import add_user
from tests.support.mosquitto import cloud_broker
from tests.support.workers import Workers

INGEST_WORKERS = 2


def _worker_env(db_url: str, broker_port: int, password: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEMITRA_")}
    return env | {
        env_name("app", "env"): "test",
        env_name("app", "secret_key"): new_ulid() + new_ulid(),
        env_name("db", "url"): db_url,
        env_name("redis", "url"): REDIS_URL,
        env_name("redis", "key_prefix"): REDIS_KEY_PREFIX,
        env_name("mqtt", "port"): str(broker_port),
        env_name("mqtt", "username"): "cloud-ingest",
        env_name("mqtt", "password"): password,
        # Small batches, so a kill lands inside a batch's transaction or between two.
        env_name("ingest", "batch_max"): "8",
        env_name("app", "log_level"): "WARNING",
    }


async def _provision(ca: Path, config: Path, api_url: str, code: str) -> None:
    """``chargemitra-agent provision`` as the installer runs it (writes cloud.toml)."""
    proc = await asyncio.create_subprocess_exec(
        str(BIN / "chargemitra-agent"),
        "provision",
        "--code",
        code,
        "--cloud",
        api_url,
        "--ca-file",
        str(ca),
        "--config",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def rig(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Rig]:
    db_url = migrate_once()
    tmp = tmp_path_factory.mktemp("e2e")
    async with AsyncExitStack() as stack:
        pg = await connect(DbSettings(url=db_url))
        stack.push_async_callback(close, pg)
        await pg.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        await clear_rate_limits()

        ns = stack.enter_context(agent_namespace())
        (tmp / "certs").mkdir()
        certs = make_certs(tmp / "certs", addresses=(ns.host_address,))
        passwords = {
            "cloud-ingest": secrets.token_urlsafe(16),
            "cloud-api": secrets.token_urlsafe(16),
        }
        broker = cloud_broker(tmp / "broker", certs, passwords, tls_host=ns.host_address)
        broker.start()
        stack.callback(broker.stop)
        assert broker.tls_port is not None

        workers = Workers(_worker_env(db_url, broker.port, passwords["cloud-ingest"]), tmp)
        stack.callback(workers.stop_all)
        for index in range(INGEST_WORKERS):
            workers.start(index)

        settings = make_settings(
            db_url,
            broker,
            passwords["cloud-api"],
            username="cloud-api",
        )
        api_url = await stack.enter_async_context(
            serve_api(
                settings,
                tmp / "api.log",
                CHARGEMITRA_MQTT_PUBLIC_URL=f"mqtts://{ns.host_address}:{broker.tls_port}",
                CHARGEMITRA_BILLING_SETTLE_INTERVAL_S="0.2",
            )
        )
        http = await stack.enter_async_context(httpx.AsyncClient(base_url=api_url, timeout=30))

        host = await add_user(pg, settings, Role.HOST)
        driver = await add_user(pg, settings, Role.DRIVER)
        admin = await add_user(pg, settings, Role.ADMIN)
        charger_id, _ = await list_charger(pg, host, admin)

        sim = await stack.enter_async_context(
            SimSite(
                SimConfig(
                    meters=(MeterSpec("sdm630", 1),),
                    relay_unit=2,
                    serial=True,
                    baud=115200,
                    turnaround_s=0.0,
                    keys=True,
                    control=None,
                    state_path=None,
                )
            )
        )
        # A car that takes 7.4 kW for longer than the suite runs.
        sim.plug("7.4kw", soc=0.05, capacity_wh=200_000.0)
        ends = sim.endpoints()
        site = tmp / "site"
        site.mkdir()
        config = agent_config(site, pty=ends["serial"], keys=ends["keys"])

        issued = await http.post(f"/chargers/{charger_id}/pairing-code", headers=host.headers)
        assert issued.status_code == 201, issued.text
        await _provision(certs.ca, config, api_url, issued.json()["code"])
        device_id = tomllib.loads((site / "cloud.toml").read_text())["device_id"]

        rig = Rig(
            tmp=tmp,
            ns=ns,
            broker=broker,
            workers=workers,
            settings=settings,
            api_url=api_url,
            http=http,
            pg=pg,
            sim=sim,
            site=site,
            config=config,
            device_id=device_id,
            charger_id=charger_id,
            host=host,
            driver=driver,
        )
        stack.push_async_callback(rig.stop_agent)
        rig.step_clock(0)
        await rig.start_agent()
        await wait_for(rig.device_online, "the device online in the cloud")
        print(f"\ne2e rig up at {datetime.now(UTC).isoformat()}: logs in {tmp}")
        yield rig


@pytest_asyncio.fixture(loop_scope="module")
async def recovered(rig: Rig) -> None:
    """Each scenario starts from a whole rig, whatever the previous one left."""
    await rig.recover()
