"""deploy/edge/install.sh in a Debian bookworm root made by debootstrap (Raspberry Pi OS is
bookworm): it installs the agent, provisions it with a pairing code through the real API,
and a second run changes nothing on disk; systemd accepts the units as installed; a real
systemd booted in the root runs the agent under the installed unit and restarts it when its
event loop is frozen (SIGSTOP) and the watchdog starves; the uninstaller keeps the store
unless told to purge it.

The root is cached under .cache/deploy/ (tests/deploy/bookworm.py): a cold run spends about
a minute on debootstrap and the wheels, a warm one none.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import uvicorn
from redis.asyncio import Redis

from cloud.app import create_app
from cloud.devices.service import issue_pairing_code
from cloud.pg import PgConnection
from tests.edge.test_daemon import site
from tests.support.certs import Certs
from tests.support.cloud_env import REDIS_URL, make_settings
from tests.support.mosquitto import Broker, free_port
from tests.sync.rig import wait_until

from .bookworm import (
    REPO_ROOT,
    bookworm_root,
    edge_wheelhouse,
    in_root,
    manifest,
    overlay_root,
    project_wheel,
)
from .systemd_boot import Booted, booted

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SRC = "/root/chargemitra"  # where the release is unpacked on the Pi


def _owner(root: Path, path: str) -> tuple[str, str, int]:
    """(user, group, mode) of ``path`` as the root's own /etc/passwd names them."""
    out = in_root(root, "stat", "-c", "%U %G %a", path).stdout.split()
    return out[0], out[1], int(out[2], 8)


SITE = """
[[meters]]
id = "m1"
model = "sdm630"
unit_id = 1
poll_interval_s = 0.25
link = {{ transport = "tcp", host = "127.0.0.1", port = {port} }}

[[connectors]]
id = 1
meter = "m1"
max_current_a = 32

[connectors.relay]
driver = "modbus-coil"
unit_id = 2
coil = 0
link = {{ transport = "tcp", host = "127.0.0.1", port = {port} }}

[clock]
trust = "always"
"""
#: The shipped WatchdogSec=30 would make the test wait a minute: an administrator's drop-in.
DROP_IN = "[Service]\nWatchdogSec=2\nRestartSec=0.5\n"


def _wait(booted: Booted, what: str, ok: Callable[[dict[str, str]], bool]) -> dict[str, str]:
    deadline = time.monotonic() + 60
    while True:
        state = booted.show(
            "chargemitra-agent.service",
            "ActiveState",
            "SubState",
            "MainPID",
            "NRestarts",
            "StatusText",
            "Result",
        )
        if ok(state):
            return state
        if time.monotonic() > deadline:
            journal = booted.run("journalctl", "-u", "chargemitra-agent", "--no-pager").stdout
            raise AssertionError(f"timed out waiting for {what}: {state}\n{journal[-3000:]}")
        time.sleep(0.1)


def _run_under_systemd(root: Path, sim_port: int, log_path: Path) -> None:
    """The site's configuration (the simulator's meter and relay coil), then boot."""
    conf = root / "etc/chargemitra/agent.toml"
    conf.write_text('device_id = "unprovisioned"\n' + SITE.format(port=sim_port))
    drop_in = root / "etc/systemd/system/chargemitra-agent.service.d/test-watchdog.conf"
    drop_in.parent.mkdir()
    drop_in.write_text(DROP_IN)
    with booted(root, log_path) as systemd:
        first = _wait(
            systemd, "the agent to report healthy", lambda s: s["StatusText"].startswith("healthy")
        )
        assert (first["ActiveState"], first["NRestarts"]) == ("active", "0")
        stop = systemd.run(
            "systemctl", "kill", "--kill-whom=main", "--signal=SIGSTOP", "chargemitra-agent.service"
        )
        assert stop.returncode == 0, stop.stderr
        again = _wait(
            systemd,
            "the watchdog's restart",
            lambda s: (
                s["NRestarts"] == "1"
                and s["ActiveState"] == "active"
                and s["StatusText"].startswith("healthy")
            ),
        )
        assert again["MainPID"] != first["MainPID"]
        # systemd's own account, in its journal beside the agent's lines.
        journal = systemd.run("journalctl", "-u", "chargemitra-agent", "--no-pager").stdout
        assert "chargemitra-agent.service: Watchdog timeout" in journal, journal[-3000:]


def _unpack_release(root: Path, scratch: Path) -> list[str]:
    """Copy what a release gives a Pi into the root; return the installer's arguments."""
    src = root / SRC.lstrip("/")
    shutil.copytree(REPO_ROOT / "deploy", src / "deploy")
    shutil.copytree(REPO_ROOT / "requirements", src / "requirements")
    shutil.copytree(edge_wheelhouse(), src / "wheels")
    wheel = project_wheel(scratch / "dist")
    shutil.copy(wheel, src / wheel.name)
    return [
        "bash",
        f"{SRC}/deploy/edge/install.sh",
        "--wheel",
        f"{SRC}/{wheel.name}",
        "--lock",
        f"{SRC}/requirements/edge.lock",
        "--find-links",
        f"{SRC}/wheels",
    ]


async def test_install_provision_reinstall_unchanged_uninstall_keeps_the_store(
    db_url: str,
    broker: Broker,
    certs: Certs,
    service_passwords: dict[str, str],
    pg: PgConnection,
    tmp_path: Path,
) -> None:
    lower = await asyncio.to_thread(bookworm_root)
    redis = Redis.from_url(REDIS_URL)
    await redis.delete("cm:rl:claim:127.0.0.1")
    await redis.aclose()
    await pg.execute("INSERT INTO users (id, name) VALUES ('U1', 'Asha')")
    await pg.execute("INSERT INTO hosts (id, user_id, display_name) VALUES ('H1', 'U1', 'A')")
    settings = make_settings(
        db_url,
        broker,
        service_passwords["cloud-api"],
        username="cloud-api",
        CHARGEMITRA_MQTT_PUBLIC_URL=f"mqtts://127.0.0.1:{broker.tls_port}",
    )
    app = create_app(settings)
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    with overlay_root(lower, tmp_path / "overlay") as root:
        install = await asyncio.to_thread(_unpack_release, root, tmp_path)
        shutil.copy(certs.ca, root / "root" / "broker-ca.pem")
        async with asyncio.TaskGroup() as group:
            serving = group.create_task(server.serve(), name="api")
            try:
                await wait_until(lambda: server.started, 20, "the API")
                async with app.state.cloud.sessions() as db, db.begin():
                    issued = await issue_pairing_code(
                        db,
                        app.state.cloud.settings,
                        host_id="H1",
                        charger_id=None,
                        now=datetime.now(UTC),
                    )
                # The chroot shares this machine's network: the API is on its loopback.
                install += [
                    "--code",
                    issued.code,
                    "--cloud",
                    f"http://127.0.0.1:{port}",
                    "--ca-file",
                    "/root/broker-ca.pem",
                ]
                first = await asyncio.to_thread(in_root, root, *install)
            finally:
                server.should_exit = True
                await serving
        log = first.stderr
        assert "[install] provision: claimed as cm-" in log, log
        assert "[install] done: chargemitra-agent, version" in log, log

        # The agent's user, its groups, and who owns what.
        groups = in_root(root, "id", "-nG", "chargemitra").stdout.split()
        assert {"chargemitra", "dialout", "gpio"} <= set(groups)
        assert (
            in_root(root, "getent", "passwd", "chargemitra")
            .stdout.strip()
            .endswith(":/var/lib/chargemitra:/usr/sbin/nologin")
        )
        # 0750, not group-writable: the agent's user cannot rename or delete agent.toml.
        assert _owner(root, "/etc/chargemitra") == ("root", "chargemitra", 0o750)
        assert _owner(root, "/etc/chargemitra/agent.toml") == ("root", "chargemitra", 0o640)
        assert _owner(root, "/etc/chargemitra/cloud.toml") == ("root", "chargemitra", 0o640)
        assert _owner(root, "/var/lib/chargemitra") == ("chargemitra", "chargemitra", 0o750)
        # The claim's secrets belong to the agent's user, readable by nobody else.
        claim = "/etc/chargemitra/cloud"
        assert _owner(root, claim) == ("chargemitra",) * 2 + (0o700,)
        assert _owner(root, f"{claim}/mqtt.password") == ("chargemitra",) * 2 + (0o600,)
        assert _owner(root, f"{claim}/pin.secret") == ("chargemitra",) * 2 + (0o600,)
        move = ["mv", "/etc/chargemitra/agent.toml", "/etc/chargemitra/x"]
        refused = in_root(root, "runuser", "-u", "chargemitra", "--", *move, check=False)
        assert refused.returncode != 0, "the agent's user moved agent.toml"
        assert (root / "etc/udev/rules.d/70-chargemitra-rs485.rules").is_file()
        wants = root / "etc/systemd/system/multi-user.target.wants/chargemitra-agent.service"
        assert wants.is_symlink()
        # The site's file plus the claim, as the daemon will load them, as its user.
        valid = in_root(
            root,
            "runuser",
            "-u",
            "chargemitra",
            "--",
            "/opt/chargemitra/venv/bin/chargemitra-agent",
            "config",
            "validate",
        )
        assert "valid (device cm-" in valid.stdout, valid.stdout
        # The edge extra only: nothing of the cloud in the Pi's venv.
        frozen = in_root(root, "/opt/chargemitra/venv/bin/pip", "freeze", "--local").stdout
        assert "fastapi" not in frozen.lower()
        assert "sqlalchemy" not in frozen.lower()

        # Units as installed, checked by systemd against this root (its binaries, paths).
        for unit in ("chargemitra-agent.service", "chargemitra-bridge.service"):
            verify = await asyncio.to_thread(
                subprocess.run,
                ["systemd-analyze", "verify", f"--root={root}", f"/etc/systemd/system/{unit}"],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
            assert (verify.returncode, verify.stderr) == (0, ""), verify.stderr

        # A second run with the same arguments (the code is spent) changes nothing at all.
        before = manifest(root)
        second = await asyncio.to_thread(in_root, root, *install)
        assert "already provisioned as cm-" in second.stderr, second.stderr
        after = manifest(root)
        changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
        assert changed == [], f"the second run changed {changed[:20]}"

        # Under a real systemd: the installed unit, hardening and all, runs the agent against
        # the simulator; frozen by SIGSTOP, the agent stops petting and the watchdog restarts it.
        async with site(tmp_path / "sim") as (_sim, sim_port):
            await asyncio.to_thread(_run_under_systemd, root, sim_port, tmp_path / "systemd.log")
        assert (root / "var/lib/chargemitra/agent.db").is_file()  # the running agent's store
        removed = in_root(root, "bash", f"{SRC}/deploy/edge/uninstall.sh")
        assert "kept /var/lib/chargemitra" in removed.stderr
        assert not (root / "opt/chargemitra").exists()
        assert not (root / "etc/systemd/system/chargemitra-agent.service").exists()
        assert not wants.is_symlink()
        assert not (root / "etc/udev/rules.d/70-chargemitra-rs485.rules").exists()
        assert (root / "var/lib/chargemitra/agent.db").is_file()
        assert (root / "etc/chargemitra/cloud.toml").is_file()
        assert in_root(root, "id", "chargemitra", check=False).returncode == 0
        purged = in_root(root, "bash", f"{SRC}/deploy/edge/uninstall.sh", "--purge")
        assert "purged" in purged.stderr
        assert not (root / "var/lib/chargemitra").exists()
        assert not (root / "etc/chargemitra").exists()
        assert in_root(root, "id", "chargemitra", check=False).returncode != 0
