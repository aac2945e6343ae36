"""The cloud tests' pytest fixtures (the test database migrated once and emptied per test, a
connection to it, certificates, a real Mosquitto with TLS, service passwords, the settings),
registered by tests/cloud/conftest.py and tests/deploy/conftest.py, which import them --
with :func:`pytest_runtest_makereport`, which adds the broker's log to a failed test's report.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest

from cloud.pg import PgConnection, close, connect
from cloud.settings import DbSettings, Settings
from cloud.telemetry.storage import INSTALLED_SQL, TelemetryBackend
from tests.support.certs import Certs, make_certs
from tests.support.cloud_env import TABLES, make_settings, migrate_once
from tests.support.mosquitto import Broker, cloud_broker


@pytest.fixture(scope="session")
def migrated_db() -> str:
    return migrate_once()


@pytest.fixture
async def db_url(migrated_db: str) -> str:
    """The migrated test database, emptied."""
    conn = await connect(DbSettings(url=migrated_db))
    try:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
    finally:
        await close(conn)
    return migrated_db


@pytest.fixture
async def pg(db_url: str) -> AsyncIterator[PgConnection]:
    conn = await connect(DbSettings(url=db_url))
    try:
        yield conn
    finally:
        await close(conn)


@pytest.fixture
async def telemetry_backend(pg: PgConnection) -> TelemetryBackend:
    """The telemetry storage the test server's migration chose (issue 21): tests that depend
    on it follow it, so the suite passes against plain PostgreSQL and TimescaleDB alike."""
    installed = await pg.fetchval(INSTALLED_SQL)
    return TelemetryBackend.TIMESCALE if installed else TelemetryBackend.PLAIN


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def service_passwords() -> dict[str, str]:
    return {"cloud-ingest": secrets.token_urlsafe(16), "cloud-api": secrets.token_urlsafe(16)}


#: How much of the broker's log a failed test's report shows (its last lines).
BROKER_LOG_LINES = 80


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A test that failed with a broker running gets the end of the broker's log in its
    report: why Mosquitto closed a connection (a keep-alive, a takeover, a protocol error)
    is there and nowhere else, and a once-in-a-while CI failure cannot be rerun to see it."""
    report = yield
    running = (getattr(item, "funcargs", None) or {}).get("broker")
    if report.failed and isinstance(running, Broker) and running.log.exists():
        tail = running.log_text().splitlines()[-BROKER_LOG_LINES:]
        report.sections.append((f"broker log ({call.when}, last lines)", "\n".join(tail)))
    return report


@pytest.fixture
def broker(tmp_path: Path, certs: Certs, service_passwords: dict[str, str]) -> Iterator[Broker]:
    running = cloud_broker(tmp_path / "broker", certs, service_passwords)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def settings(db_url: str, broker: Broker, service_passwords: dict[str, str]) -> Settings:
    return make_settings(db_url, broker, service_passwords["cloud-ingest"])
