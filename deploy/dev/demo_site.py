"""Prepare a demo site for ``deploy/dev/demo.sh``: broker config and credentials, TLS, the
agent's configuration, the cloud's environment. Prints shell assignments for demo.sh to eval.

The broker config is the project's own (``deploy/mosquitto/cloud``) with only ports and file
paths replaced — the same rendering the tests use (``tests/cloud/mosquitto.py``), so the demo
runs exactly what is tested.
"""

from __future__ import annotations

import secrets
import shlex
import sys
from pathlib import Path

from protocols.tokens import PrivateKey
from tests.cloud.certs import make_certs
from tests.cloud.mosquitto import cloud_broker, free_port

DEVICE = "demo-site-1"


def main(state: Path) -> None:
    state.mkdir(parents=True, exist_ok=True)
    (state / "certs").mkdir(exist_ok=True)
    certs = make_certs(state / "certs")
    passwords = {name: secrets.token_urlsafe(16) for name in (DEVICE, "cloud-ingest", "cloud-api")}
    broker = cloud_broker(state / "broker", certs, passwords)
    assert broker.tls_port is not None

    key = PrivateKey.generate()
    (state / "unlock-token.key.pem").write_bytes(key.to_pem())
    public = state / "unlock-token.pub.pem"
    public.write_bytes(key.public_key().to_pem())
    (state / "device.password").write_text(passwords[DEVICE] + "\n")
    # The booking-PIN secret the cloud and the agent share (a claim would hand it over; the
    # demo device is seeded instead, by `seed-demo --device`).
    pin_secret = state / "pin.secret"
    pin_secret.write_bytes(secrets.token_bytes(32))
    pin_secret.chmod(0o600)
    sim_port, sim_control, api_port = free_port(), free_port(), free_port()
    agent_conf = state / "agent.toml"
    agent_conf.write_text(
        f"""# The demo site's agent (written by deploy/dev/demo_site.py).
device_id = "{DEVICE}"

[[meters]]
id = "m1"
model = "sdm630"
unit_id = 1
poll_interval_s = 1.0
link = {{ transport = "tcp", host = "127.0.0.1", port = {sim_port} }}

[[connectors]]
id = 1
meter = "m1"
max_current_a = 32

[connectors.relay]
driver = "modbus-coil"
unit_id = 2
coil = 0
link = {{ transport = "tcp", host = "127.0.0.1", port = {sim_port} }}

[store]
path = "{state / "agent.db"}"

[clock]
trust = "always"

[auth]
public_key_files = ["{public}"]
pin_secret_file = "{pin_secret}"

[control]
socket_path = "{state / "agent.sock"}"

[mqtt]
host = "127.0.0.1"
port = {broker.tls_port}
ca_file = "{certs.ca}"
password_file = "{state / "device.password"}"
"""
    )
    env = {
        "CHARGEMITRA_APP_ENV": "development",
        "CHARGEMITRA_APP_SECRET_KEY": secrets.token_urlsafe(32),
        "CHARGEMITRA_DB_URL": "postgresql://chargemitra:chargemitra@127.0.0.1:5432/chargemitra",
        "CHARGEMITRA_MQTT_PORT": str(broker.port),
        "CHARGEMITRA_MQTT_USERNAME": "cloud-ingest",
        "CHARGEMITRA_MQTT_PASSWORD": passwords["cloud-ingest"],
        "CHARGEMITRA_PROVISIONING_TOKEN_PUBLIC_KEY_FILE": str(public),
        # The API signs unlock tokens with the private half (without it unlocks answer 503).
        "CHARGEMITRA_PROVISIONING_TOKEN_PRIVATE_KEY_FILE": str(state / "unlock-token.key.pem"),
    }
    cloud_env = state / "cloud.env"
    cloud_env.write_text("".join(f"{k}={shlex.quote(v)}\n" for k, v in env.items()))
    out = {
        "BROKER_CONF": broker.conf, "BROKER_PORT": broker.port, "SIM_PORT": sim_port,
        "SIM_CONTROL": f"127.0.0.1:{sim_control}", "API_PORT": api_port,
        "AGENT_CONF": agent_conf, "CLOUD_ENV": cloud_env, "DEVICE_ID": DEVICE,
        "PIN_SECRET_FILE": pin_secret,
        # The API sends commands (unlock, stop): the broker's ACL allows that to cloud-api.
        "API_MQTT_PASSWORD": passwords["cloud-api"],
    }  # fmt: skip
    for name, value in out.items():
        print(f"{name}={shlex.quote(str(value))}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
