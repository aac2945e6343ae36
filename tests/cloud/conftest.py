"""Fixtures for the cloud tests: the test database (migrated once), Redis, a real broker.

Services are found through ``CHARGEMITRA_TEST_DATABASE_URL`` and ``CHARGEMITRA_REDIS_URL``.
A missing service fails the tests: nothing here skips.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import secrets
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cloud import migrate
from cloud.pg import PgConnection, close, connect
from cloud.settings import DbSettings, Settings, load_settings
from cloud.telemetry.storage import INSTALLED_SQL, TelemetryBackend
from protocols.tokens import PrivateKey
from tests.cloud.certs import Certs, make_certs
from tests.cloud.market import market_api  # noqa: F401 -- a fixture for every cloud test
from tests.cloud.mosquitto import Broker, cloud_broker
from tests.cloud.workers import workers  # noqa: F401 -- a fixture for every cloud test

DATABASE_URL = os.environ.get(
    "CHARGEMITRA_TEST_DATABASE_URL",
    "postgresql://chargemitra:chargemitra@127.0.0.1:5432/chargemitra_test",
)
REDIS_URL = os.environ.get("CHARGEMITRA_REDIS_URL", "redis://127.0.0.1:6379/0")
#: This run's own Redis key prefix (issue 20): rate limits, one-time codes and the SMS outbox
#: of a test run, a benchmark (bench/ builds its settings here too) or another run beside it
#: never meet in a shared Redis, so `make test` and `make bench` pass in any order and at once.
REDIS_KEY_PREFIX = f"cm:run-{secrets.token_hex(6)}:"

#: Everything the migration creates that a test may fill; emptied before each test.
TABLES = (
    "audit_log, auth_decisions, availability_windows, blocked_periods, bookings, "
    "charger_photos, chargers, dispute_photos, driver_ratings, "
    "connectors, dead_letters, device_commands, device_meters, devices, disputes, "
    "downlink_sequences, hosts, "
    "invoice_counters, invoices, kyc_documents, kyc_submissions, "
    "ledger_entries, notification_deliveries, notification_events, notification_preferences, "
    "pairing_codes, payments, payout_accounts, payouts, provider_events, push_subscriptions, "
    "refresh_tokens, refunds, reviews, session_events, sessions, telemetry, telemetry_15m, "
    "telemetry_batches, telemetry_rollup_pending, "
    "unlock_requests, user_roles, users"
)


async def _empty_every_table(url: str) -> None:
    conn = await connect(DbSettings(url=url))
    try:
        await conn.execute(
            "DO $$ DECLARE t text; BEGIN "
            "SELECT string_agg(format('%I.%I', schemaname, tablename), ', ') INTO t "
            "FROM pg_tables WHERE schemaname = 'public' AND tablename <> 'alembic_version'; "
            "IF t IS NOT NULL THEN EXECUTE 'TRUNCATE ' || t || ' CASCADE'; END IF; END $$"
        )
    finally:
        await close(conn)


@functools.cache
def migrate_once() -> str:
    """The test database, taken down to ``base`` and migrated to ``head`` once per run
    (tests/cloud and tests/e2e share it)."""

    def cycle() -> None:
        # Emptied first: rows a previous run left can need more than the schema to go down
        # (migration 0020 opens sealed payout account numbers with that run's KYC key).
        asyncio.run(_empty_every_table(DATABASE_URL))
        migrate.downgrade(DATABASE_URL, "base")
        migrate.upgrade(DATABASE_URL, "head")

    # Alembic's env runs asyncio.run(), which resets the calling thread's event loop; in a
    # thread of its own it cannot disturb the loop pytest-asyncio set up for this thread.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(cycle).result()
    return DATABASE_URL


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


@pytest.fixture
def broker(tmp_path: Path, certs: Certs, service_passwords: dict[str, str]) -> Iterator[Broker]:
    running = cloud_broker(tmp_path / "broker", certs, service_passwords)
    running.start()
    try:
        yield running
    finally:
        running.stop()


def token_public_key(directory: Path) -> Path:
    """An unlock-token key pair in ``directory``; returns the public key's PEM file (the
    private key is beside it, see :func:`token_private_key`)."""
    path = directory / "unlock-token.pub.pem"
    if not path.exists():
        key = PrivateKey.generate()
        token_private_key(directory).write_bytes(key.to_pem())
        path.write_bytes(key.public_key().to_pem())
    return path


def token_private_key(directory: Path) -> Path:
    return directory / "unlock-token.pem"


def kyc_key_file(directory: Path) -> Path:
    """A KYC document key (32 random bytes, base64) in ``directory``."""
    path = directory / "kyc-key.b64"
    if not path.exists():
        path.write_text(base64.b64encode(secrets.token_bytes(32)).decode())
    return path


def make_settings(
    db_url: str, broker: Broker, password: str, *, username: str = "cloud-ingest", **extra: str
) -> Settings:
    env = {
        "CHARGEMITRA_APP_ENV": "test",
        "CHARGEMITRA_APP_SECRET_KEY": secrets.token_urlsafe(32),
        "CHARGEMITRA_DB_URL": db_url,
        "CHARGEMITRA_REDIS_URL": REDIS_URL,
        "CHARGEMITRA_REDIS_KEY_PREFIX": REDIS_KEY_PREFIX,
        "CHARGEMITRA_MQTT_HOST": "127.0.0.1",
        "CHARGEMITRA_MQTT_PORT": str(broker.port),
        "CHARGEMITRA_MQTT_USERNAME": username,
        "CHARGEMITRA_MQTT_PASSWORD": password,
        "CHARGEMITRA_MQTT_KEEPALIVE_S": "10",
        "CHARGEMITRA_PROVISIONING_TOKEN_PUBLIC_KEY_FILE": str(token_public_key(broker.directory)),
        "CHARGEMITRA_PROVISIONING_TOKEN_PRIVATE_KEY_FILE": str(token_private_key(broker.directory)),
        "CHARGEMITRA_MARKETPLACE_PHOTO_DIR": str(broker.directory / "photos"),
        "CHARGEMITRA_KYC_KEY_FILE": str(kyc_key_file(broker.directory)),
        "CHARGEMITRA_KYC_DOCUMENT_DIR": str(broker.directory / "kyc"),
    }
    env |= extra
    return load_settings(env)


@pytest.fixture
def settings(db_url: str, broker: Broker, service_passwords: dict[str, str]) -> Settings:
    return make_settings(db_url, broker, service_passwords["cloud-ingest"])


def add_device(broker: Broker, device_id: str) -> str:
    """Give ``device_id`` broker credentials (live at once, through the API's identity)."""
    from cloud.devices.broker_auth import new_password

    password = new_password()
    broker.add_device(device_id, password)
    return password
