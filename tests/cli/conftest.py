"""Fixtures of the technician CLI tests: the project's cloud broker config with TLS on free
ports and a stand-in for cloud ingest that acks — the sync tests' fixtures, with this
suite's broker users."""

from __future__ import annotations

import pytest

from tests.cli.rig import USERS
from tests.sync.conftest import acker, broker, certs

__all__ = ["acker", "broker", "broker_users", "certs"]


@pytest.fixture
def broker_users() -> dict[str, str]:
    """The CLI site's device and cloud ingest (tests/cli/rig.py)."""
    return USERS
