"""Fixtures for sync tests: the project's cloud broker config on free ports, TLS, a store.

``certs``, ``broker`` and ``acker`` are shared with tests/cli (its conftest imports them and
overrides ``broker_users``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_agent.store.db import connect
from edge_agent.testing import Acker, close_threaded
from tests.support.certs import Certs, make_certs
from tests.support.mosquitto import Broker, cloud_broker
from tests.sync.rig import API_PASSWORD, USERS


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    (tmp_path / "certs").mkdir()
    return make_certs(tmp_path / "certs")


@pytest.fixture
def broker_users() -> dict[str, str]:
    """Broker username -> password; a test module may override it for its own device."""
    return USERS


@pytest.fixture
def broker(tmp_path: Path, certs: Certs, broker_users: dict[str, str]) -> Iterator[Broker]:
    b = cloud_broker(tmp_path / "broker", certs, broker_users)
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def acker(broker: Broker, broker_users: dict[str, str]) -> Iterator[Acker]:
    """Cloud ingest's stand-in, logged in with whatever password ``broker_users`` gives it."""
    a = Acker(broker.port, username="cloud-ingest", password=broker_users["cloud-ingest"])
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


@pytest.fixture
def api(broker: Broker) -> Iterator[paho.Client]:
    """The cloud API's broker identity, for sending commands."""
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    client.username_pw_set("cloud-api", API_PASSWORD)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    yield client
    close_threaded(client)
