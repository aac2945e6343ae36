"""Fixtures for the cloud tests: the test database (migrated once), Redis, a real broker.

Services are found through ``CHARGEMITRA_TEST_DATABASE_URL`` and ``CHARGEMITRA_REDIS_URL``.
A missing service fails the tests: nothing here skips. The fixtures live in
tests/support/cloud_fixtures.py (tests/deploy uses them too), the settings and helpers they
build on in tests/support/cloud_env.py; importing them here registers them for tests/cloud.
"""

from tests.support.cloud_fixtures import (  # noqa: F401 -- fixtures, found by pytest by name
    broker,
    certs,
    db_url,
    migrated_db,
    pg,
    pytest_runtest_makereport,
    service_passwords,
    settings,
    telemetry_backend,
)
from tests.support.market import market_api  # noqa: F401 -- a fixture for every cloud test
from tests.support.workers import workers  # noqa: F401 -- a fixture for every cloud test
