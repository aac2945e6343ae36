"""The deploy tests provision through the real API: the cloud tests' fixtures (test database,
broker with TLS, service passwords) are theirs too."""

from tests.support.cloud_fixtures import (  # noqa: F401 -- fixtures, found by pytest by name
    broker,
    certs,
    db_url,
    migrated_db,
    pg,
    pytest_runtest_makereport,
    service_passwords,
)
