"""Real ``chargemitra-cloud ingest`` processes for fault tests: start one per index, kill -9.

The ``workers`` fixture is registered for every cloud test by tests/cloud/conftest.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.settings import env_name
from protocols.ids import new_ulid
from tests.support.cloud_env import REDIS_KEY_PREFIX, REDIS_URL
from tests.support.mosquitto import Broker

CLI = Path(sys.executable).with_name("chargemitra-cloud")


class Workers:
    """``chargemitra-cloud ingest`` processes, one per index, that can be killed -9."""

    def __init__(self, env: dict[str, str], log_dir: Path) -> None:
        self.env = env
        self.log_dir = log_dir
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    def start(self, index: int) -> None:
        with (self.log_dir / f"ingest-{index}.log").open("ab") as log:
            self.procs[index] = subprocess.Popen(
                [str(CLI), "ingest", "--index", str(index)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @staticmethod
    def joined(broker: Broker, *indexes: int) -> bool:
        """Whether workers ``indexes`` have both their broker sessions up (the bulk and the
        urgent lane, cloud/workers/ingest.py): until then the broker drops what is published to
        a shared subscription with no member."""
        log = broker.log_text()
        return all(
            f"as {client_id} " in log
            for i in indexes
            for client_id in (f"ingest-{i}", f"ingest-events-{i}")
        )

    def kill9(self, index: int) -> None:
        proc = self.procs[index]
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


@pytest.fixture
def workers(
    db_url: str, broker: Broker, service_passwords: dict[str, str], tmp_path: Path
) -> Iterator[Workers]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEMITRA_")}
    env |= {
        env_name("app", "env"): "test",
        env_name("app", "secret_key"): new_ulid() + new_ulid(),
        env_name("db", "url"): db_url,
        env_name("redis", "url"): REDIS_URL,
        env_name("redis", "key_prefix"): REDIS_KEY_PREFIX,
        env_name("mqtt", "port"): str(broker.port),
        env_name("mqtt", "username"): "cloud-ingest",
        env_name("mqtt", "password"): service_passwords["cloud-ingest"],
        # Small batches so a kill lands mid-stream, between and inside transactions.
        env_name("ingest", "batch_max"): "8",
        env_name("app", "log_level"): "WARNING",
    }
    running = Workers(env, tmp_path)
    try:
        yield running
    finally:
        running.stop_all()
