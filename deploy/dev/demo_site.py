"""Prepare ``make demo``'s state directory: the cloud broker's config and identities, TLS, the
unlock-token key pair and the cloud's environment. Prints one JSON object (the demo's
``site.json``) that ``python -m cloud.demo`` reads (cloud/demo/runner.py).

The broker config is the project's own (``deploy/mosquitto/cloud``) with only ports and file
paths replaced — the same rendering the tests use (``tests/support/mosquitto.py``), so the demo
runs exactly what is tested.

A second run reuses the directory (the broker's dynamic-security file keeps the credentials
the paired agents were given, so they need no new pairing) unless one of its broker ports is
taken now; then everything is made afresh and the agents are paired again.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import sys
from pathlib import Path

from protocols.tokens import PrivateKey
from tests.support.certs import make_certs
from tests.support.mosquitto import cloud_broker

SITE_FILE = "site.json"
DEFAULT_DB = "postgresql://chargemitra:chargemitra@127.0.0.1:5432/chargemitra"


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        # As a server binds: a port whose last connections linger in TIME_WAIT is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _reusable(state: Path) -> dict[str, object] | None:
    try:
        site: dict[str, object] = json.loads((state / SITE_FILE).read_text())
    except (OSError, ValueError):
        return None
    ports = (site.get("broker_port"), site.get("broker_tls_port"))
    if not all(isinstance(p, int) and _port_free(p) for p in ports):
        return None
    if not Path(str(site.get("broker_conf"))).exists():
        return None
    return site


def prepare(state: Path, db_url: str) -> dict[str, object]:
    state.mkdir(parents=True, exist_ok=True)
    site = _reusable(state)
    if site is not None and site.get("db_url") == db_url:
        return site
    for leftover in ("broker", "certs", "sites"):
        shutil.rmtree(state / leftover, ignore_errors=True)
    (state / "certs").mkdir()
    certs = make_certs(state / "certs")
    passwords = {name: secrets.token_urlsafe(16) for name in ("cloud-ingest", "cloud-api")}
    broker = cloud_broker(state / "broker", certs, passwords)
    assert broker.tls_port is not None
    key = PrivateKey.generate()
    private, public = state / "unlock-token.key.pem", state / "unlock-token.pub.pem"
    private.write_bytes(key.to_pem())
    private.chmod(0o600)
    public.write_bytes(key.public_key().to_pem())
    secret_file = state / "app-secret"
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(32))
        secret_file.chmod(0o600)
    site = {
        "state": str(state),
        "db_url": db_url,
        "broker_conf": str(broker.conf),
        "broker_port": broker.port,
        "broker_tls_port": broker.tls_port,
        "ca_file": str(certs.ca),
        "api_mqtt_password": passwords["cloud-api"],
        "cloud_env": {
            "CHARGEMITRA_APP_ENV": "development",
            "CHARGEMITRA_APP_SECRET_KEY": secret_file.read_text().strip(),
            "CHARGEMITRA_DB_URL": db_url,
            "CHARGEMITRA_MQTT_PORT": str(broker.port),
            "CHARGEMITRA_MQTT_USERNAME": "cloud-ingest",
            "CHARGEMITRA_MQTT_PASSWORD": passwords["cloud-ingest"],
            "CHARGEMITRA_PROVISIONING_TOKEN_PUBLIC_KEY_FILE": str(public),
            # The API signs unlock tokens with the private half (without it unlocks are 503).
            "CHARGEMITRA_PROVISIONING_TOKEN_PRIVATE_KEY_FILE": str(private),
        },
    }
    (state / SITE_FILE).write_text(json.dumps(site, indent=1))
    (state / SITE_FILE).chmod(0o600)
    return site


if __name__ == "__main__":
    db = sys.argv[2] if len(sys.argv) > 2 else DEFAULT_DB
    print(json.dumps(prepare(Path(sys.argv[1]), db)))
