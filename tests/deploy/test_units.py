"""`systemd-analyze verify` accepts every unit file under deploy/ (warnings count as failures:
systemd ignores an unknown key or a bad value with only a warning, and the unit then runs
without it).

systemd checks the units against a root holding what they refer to: systemd's own units
(this machine's), and each ExecStart binary at its path (copies of this machine's
mosquitto and of the project's console scripts). The edge units are also checked inside the
bookworm root the installer fills (tests/deploy/test_edge_install.py).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted(p for p in (REPO_ROOT / "deploy").rglob("*") if p.suffix in {".service", ".timer"})
SYSTEMD_UNITS = Path("/usr/lib/systemd/system")


def _executables(unit: Path) -> set[str]:
    found = set()
    for line in unit.read_text().splitlines():
        if line.startswith(("ExecStart=", "ExecStartPre=", "ExecStop=", "ExecReload=")):
            command = line.split("=", 1)[1].lstrip("-+!@:")
            found.add(command.split()[0])
    return found


def _root(tmp: Path) -> Path:
    root = tmp / "root"
    shutil.copytree(SYSTEMD_UNITS, root / SYSTEMD_UNITS.relative_to("/"), symlinks=True)
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(unit, units / unit.name)
        for exe in _executables(unit):
            target = root / exe.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            # The venvs' console scripts are this checkout's; the rest this machine's.
            source = (
                Path(exe) if Path(exe).exists() else Path(sys.executable).with_name(Path(exe).name)
            )
            assert source.is_file(), f"{unit.name}: {exe} is neither on this machine nor ours"
            shutil.copy(source, target)
    return root


def test_systemd_accepts_every_unit_file(tmp_path: Path) -> None:
    assert {u.name for u in UNITS} >= {
        "chargemitra-agent.service",
        "chargemitra-bridge.service",
        "chargemitra-api@.service",
        "chargemitra-ingest@.service",
        "chargemitra-migrate.service",
        "chargemitra-broker.service",
        "chargemitra-payouts.service",
        "chargemitra-payouts.timer",
    }
    root = _root(tmp_path)
    # A template is checked through an instance of it.
    names = [u.name.replace("@.", "@1.") for u in UNITS]
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *names],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert (result.returncode, result.stderr) == (0, ""), result.stderr


def test_a_unit_file_error_is_caught(tmp_path: Path) -> None:
    """The check above can fail: a misspelt key is reported."""
    root = _root(tmp_path)
    unit = root / "etc/systemd/system/chargemitra-agent.service"
    unit.write_text(unit.read_text().replace("WatchdogSec=", "WatchdogSecs="))
    result = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "chargemitra-agent.service"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert "Unknown key 'WatchdogSecs'" in result.stderr
