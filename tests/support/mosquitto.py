"""Start the project's own Mosquitto configs (deploy/mosquitto) on free ports in a temp dir.

Only listener ports and file paths are replaced; every other directive (authentication,
ACL, persistence, queue sizes, bridge settings) is the project's file as shipped — for the
cloud broker, as its installer renders it (deploy/mosquitto/cloud/render-conf.sh: the
dynamic-security plugin's path on this machine). The cloud
broker's dynamic-security file is the shipped template (deploy/mosquitto/cloud/
dynamic-security.json) with the given service passwords and devices filled in by the
project's own code (:func:`cloud.devices.broker_auth.initial_config`).
"""

from __future__ import annotations

import getpass
import json
import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.certs import Certs

if TYPE_CHECKING:
    from cloud.devices.broker_auth import DynsecAdmin

MOSQUITTO = "/usr/sbin/mosquitto"
DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"
CLOUD_CONF = DEPLOY / "cloud" / "mosquitto.conf"
#: Prints CLOUD_CONF with this machine's dynamic-security plugin path (the install step).
CLOUD_RENDER = DEPLOY / "cloud" / "render-conf.sh"
#: The services whose identities the shipped dynamic-security template defines; every other
#: user given to :func:`cloud_broker` is a device.
SERVICES = ("cloud-ingest", "cloud-api")
EDGE_CONF = DEPLOY / "edge" / "mosquitto.conf"


#: Where test servers' ports come from: below the kernel's ephemeral range, one block per
#: pytest-xdist worker. A port found by binding to 0 is an ephemeral one, and between the
#: pick and the server's own bind any outgoing connection of the run (database, Redis, HTTP:
#: thousands) may take it — "address already in use", seen with two workers. Below the range
#: no outgoing connection gets it, and the workers' blocks do not overlap.
FIRST_PORT = 10_000
PORT_BLOCKS = 8


def _port_block() -> range:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        ephemeral_low = int(text.split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral_low = 32_768
    worker = os.environ.get("PYTEST_XDIST_WORKER") or "gw0"
    size = (ephemeral_low - FIRST_PORT) // PORT_BLOCKS
    if size < 100:  # a machine whose ephemeral range starts low: fall back to the kernel's pick
        return range(1)
    start = FIRST_PORT + (int(worker.removeprefix("gw")) % PORT_BLOCKS) * size
    return range(start, start + size)


def _bind_free(sock: socket.socket) -> int:
    """Bind ``sock`` to a free loopback port of this worker's block, starting at a random
    one (two runs side by side, or a port still closing, are stepped over)."""
    block = _port_block()
    offset = secrets.randbelow(len(block))
    for step in range(len(block)):
        port = block[(offset + step) % len(block)]
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return int(sock.getsockname()[1])
    raise RuntimeError(f"no free port in {block.start}-{block.stop - 1}")


def free_port() -> int:
    with socket.socket() as s:
        return _bind_free(s)


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: each socket stays bound until all are chosen (two
    free_port() calls in a row may return the same port, and the broker's second listener
    then fails with "Address already in use")."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        return [_bind_free(s) for s in sockets]
    finally:
        for s in sockets:
            s.close()


def render(text: str, values: dict[str, str], listeners: list[str]) -> str:
    """Replace the values of the named directives and the ``listener`` lines, in order."""
    out = []
    pending = list(listeners)
    for line in text.splitlines():
        key = line.split(" ", 1)[0]
        if key == "listener":
            out.append(f"listener {pending.pop(0)}")
        elif key in values:
            out.append(f"{key} {values[key]}")
        else:
            out.append(line)
    assert not pending, "more listeners given than the config has"
    return "\n".join(out) + "\n"


def rendered_cloud_conf(env: dict[str, str] | None = None) -> str:
    """The cloud config as installed on this machine: the output of render-conf.sh."""
    result = subprocess.run(
        ["/bin/sh", str(CLOUD_RENDER)],
        capture_output=True,
        text=True,
        check=False,
        env=None if env is None else {**os.environ, **env},
    )
    if result.returncode != 0:
        raise RuntimeError(f"render-conf.sh failed: {result.stderr.strip()}")
    return result.stdout


def wait_for_port(
    port: int, proc: subprocess.Popen[bytes], timeout_s: float = 10.0, host: str = "127.0.0.1"
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited with {proc.returncode}")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"mosquitto did not listen on {port}")


@dataclass
class Broker:
    """A running Mosquitto, started from one of the project's config files."""

    directory: Path
    conf: Path
    port: int
    tls_port: int | None = None
    pid_file: Path | None = None
    #: The cloud broker's dynamic-security file (the plugin rewrites it on every change).
    dynsec_file: Path | None = None
    #: The identities the broker was started with (username -> password).
    users: dict[str, str] = field(default_factory=dict)
    #: The address the devices' TLS listener binds.
    tls_host: str = "127.0.0.1"
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log = self.directory / "mosquitto.log"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT
            )
        wait_for_port(self.port, self.proc)
        if self.tls_port is not None:
            wait_for_port(self.tls_port, self.proc, host=self.tls_host)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def reload(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGHUP)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def admin(self) -> DynsecAdmin:
        """The dynamic-security admin, logged in as the API's identity (as the cloud does)."""
        from cloud.broker import BrokerLogin
        from cloud.devices.broker_auth import DynsecAdmin

        assert "cloud-api" in self.users, "start the broker with a cloud-api password"
        return DynsecAdmin(
            BrokerLogin("127.0.0.1", self.port, "cloud-api", self.users["cloud-api"])
        )

    def add_device(self, device_id: str, password: str) -> None:
        """Provision ``device_id`` on the running broker (live at once)."""
        self.admin().set_device(device_id, password)


def cloud_broker(
    directory: Path, certs: Certs, users: dict[str, str], *, tls_host: str = "127.0.0.1"
) -> Broker:
    """The cloud broker (deploy/mosquitto/cloud) with ``users`` as its identities: the
    services of :data:`SERVICES` get their shipped roles, every other user is a device (its
    client bound to its client id, its role limited to its own topics). The devices' TLS
    listener binds ``tls_host`` (tests/e2e: the host end of the agent's veth pair)."""
    from cloud.devices.broker_auth import initial_config

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    dynsec_file = directory / "dynamic-security.json"
    pid_file = directory / "mosquitto.pid"
    services = {u: p for u, p in users.items() if u in SERVICES}
    devices = {u: p for u, p in users.items() if u not in SERVICES}
    dynsec_file.write_text(json.dumps(initial_config(services, devices), indent=1))
    dynsec_file.chmod(0o600)
    port, tls_port = free_ports(2)
    conf = directory / "mosquitto.conf"
    conf.write_text(
        render(
            rendered_cloud_conf(),
            {
                "user": getpass.getuser(),
                "plugin_opt_config_file": str(dynsec_file),
                "pid_file": str(pid_file),
                "persistence_location": f"{directory / 'data'}/",
                "cafile": str(certs.ca),
                "certfile": str(certs.cert),
                "keyfile": str(certs.key),
            },
            [f"{port} 127.0.0.1", f"{tls_port} {tls_host}"],
        )
    )
    return Broker(
        directory,
        conf,
        port,
        tls_port,
        pid_file=pid_file,
        dynsec_file=dynsec_file,
        users=dict(users),
        tls_host=tls_host,
    )


def edge_broker(
    directory: Path, *, device_id: str, password: str, cloud_tls_port: int, ca: Path
) -> Broker:
    """The site broker (deploy/mosquitto/edge) bridging ``device_id`` to the cloud broker."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    port = free_port()
    text = EDGE_CONF.read_text().replace("DEVICE_ID", device_id)
    text = text.replace("DEVICE_PASSWORD", password)
    conf = directory / "mosquitto.conf"
    conf.write_text(
        render(
            text,
            {
                "user": getpass.getuser(),
                "persistence_location": f"{directory / 'data'}/",
                "address": f"127.0.0.1:{cloud_tls_port}",
                "bridge_cafile": str(ca),
            },
            [f"{port} 127.0.0.1"],
        )
    )
    return Broker(directory, conf, port)
