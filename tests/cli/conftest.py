"""Fixtures of the technician CLI tests: the project's cloud broker config with TLS on free
ports (tests/cloud/mosquitto.py), and a stand-in for cloud ingest that acks (tests/sync)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.rig import INGEST_PASSWORD, USERS
from tests.cloud.certs import Certs, make_certs
from tests.cloud.mosquitto import Broker, cloud_broker
from tests.sync.acker import Acker


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    (tmp_path / "certs").mkdir()
    return make_certs(tmp_path / "certs")


@pytest.fixture
def broker(tmp_path: Path, certs: Certs) -> Iterator[Broker]:
    b = cloud_broker(tmp_path / "broker", certs, USERS)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def acker(broker: Broker) -> Iterator[Acker]:
    a = Acker(broker.port, username="cloud-ingest", password=INGEST_PASSWORD)
    try:
        yield a
    finally:
        a.close()
