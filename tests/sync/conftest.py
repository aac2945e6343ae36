"""Fixtures for sync tests: the project's cloud broker config on free ports, TLS, a store."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from edge_agent.store.db import connect
from tests.cloud.certs import Certs, make_certs
from tests.cloud.mosquitto import Broker, cloud_broker
from tests.sync.acker import Acker
from tests.sync.rig import INGEST_PASSWORD, USERS


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


@pytest.fixture
def store(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = connect(tmp_path / "agent.sqlite")
    try:
        yield conn
    finally:
        conn.close()
