"""The cloud test run's services and settings, shared by tests/cloud, tests/e2e, tests/deploy
and bench/: the test database and Redis (``CHARGEMITRA_TEST_DATABASE_URL``,
``CHARGEMITRA_REDIS_URL``), this run's Redis key prefix, the tables a test empties, the
database migrated once per run, and :func:`make_settings` (a cloud ``Settings`` for a test
broker). The pytest fixtures built on these are in :mod:`tests.support.cloud_fixtures`.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import secrets
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from cloud import migrate
from cloud.pg import close, connect
from cloud.settings import DbSettings, Settings, load_settings
from protocols.tokens import PrivateKey
from tests.support.mosquitto import Broker


def worker_database(url: str, worker: str | None) -> str:
    """The database of one pytest-xdist worker (``worker`` is its id, ``gw0``, ``gw1`` ...;
    None outside xdist): the first uses ``url`` itself, the others the same name with
    ``_2``, ``_3`` ... after it. Every test empties the tables it may fill, so two workers on
    one database would empty each other's rows mid-test."""
    index = int(worker.removeprefix("gw")) if worker else 0
    if index == 0:
        return url
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"{parts.path}_{index + 1}"))


DATABASE_URL = worker_database(
    os.environ.get(
        "CHARGEMITRA_TEST_DATABASE_URL",
        "postgresql://chargemitra:chargemitra@127.0.0.1:5432/chargemitra_test",
    ),
    os.environ.get("PYTEST_XDIST_WORKER"),
)
REDIS_URL = os.environ.get("CHARGEMITRA_REDIS_URL", "redis://127.0.0.1:6379/0")
#: This run's own Redis key prefix (issue 20): rate limits, one-time codes and the SMS outbox
#: of a test run, a benchmark (bench/ builds its settings here too) or another run beside it
#: never meet in a shared Redis, so `make test` and `make bench` pass in any order and at once.
REDIS_KEY_PREFIX = f"cm:run-{secrets.token_hex(6)}:"


def own_redis_prefix(label: str) -> str:
    """A key prefix inside this run's that no other test shares, for a child process such as
    the demo: it claims agents from 127.0.0.1, and the claims of the tests run before it in
    this worker must not count against its rate limit (a 429 in CI)."""
    return f"{REDIS_KEY_PREFIX}{label}-{secrets.token_hex(4)}:"


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


async def _check_exists(url: str) -> None:
    """A clear error for a worker whose database the bootstrap did not make (it makes one per
    worker of ``make test``: deploy/dev/bootstrap.sh). The superuser makes them because the
    earthdistance extension needs one; the tests' role cannot."""
    name = urlsplit(url).path.lstrip("/")
    admin = await connect(DbSettings(url=urlunsplit(urlsplit(url)._replace(path="/postgres"))))
    try:
        if not await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            raise RuntimeError(
                f"the test database {name} does not exist: deploy/dev/bootstrap.sh makes one "
                "per make test worker (PG_DATABASES); add it there, or run fewer workers"
            )
    finally:
        await close(admin)


@functools.cache
def migrate_once() -> str:
    """The test database, taken down to ``base`` and migrated to ``head`` once per run
    (tests/cloud and tests/e2e share it)."""

    def cycle() -> None:
        asyncio.run(_check_exists(DATABASE_URL))
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


def add_device(broker: Broker, device_id: str) -> str:
    """Give ``device_id`` broker credentials (live at once, through the API's identity)."""
    from cloud.devices.broker_auth import new_password

    password = new_password()
    broker.add_device(device_id, password)
    return password
