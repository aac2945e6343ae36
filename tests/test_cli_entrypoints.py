"""The console scripts exist, point where pyproject.toml says, and answer ``--help``.

Each script runs through its real installed entry point (the wrapper pip/uv wrote into the
virtualenv's ``bin/``), so a missing ``[project.scripts]`` line, a wrong ``module:function``
or an import error at start-up fails here.
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

# Script name -> the "module:function" pyproject.toml declares for it.
SCRIPTS = {
    "chargemitra-agent": "edge_agent.cli:main",
    "chargemitra-cloud": "cloud.cli:main",
    "chargemitra-sim": "firmware_sim.cli:main",
}

# The interpreter running the tests lives in the virtualenv's bin/, beside the scripts.
VENV_BIN = Path(sys.executable).parent


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_console_script_is_registered_with_its_entry_point(script: str) -> None:
    """The installed distribution declares each script with the module:function we expect."""
    registered = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert registered.get(script) == SCRIPTS[script]


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_console_script_help_exits_zero(script: str, tmp_path: Path) -> None:
    """``<script> --help`` exits 0 and prints a usage line naming the script."""
    executable = VENV_BIN / script
    assert executable.is_file(), f"{executable} is missing: is the project installed?"
    # cwd outside the repository: the script must import from the installed project.
    result = subprocess.run(
        [str(executable), "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr
    assert f"Usage: {script}" in result.stdout


def test_the_daemon_does_not_load_the_technicians_commands() -> None:
    # `chargemitra-agent run` imports edge_agent.cli; the technician's command modules load
    # only when one of them is invoked, so the daemon does not carry them in memory.
    code = (
        "import sys, edge_agent.cli as cli\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('edge_agent.tech.cmd_'))\n"
        "assert not loaded, loaded\n"
        "assert cli.main.get_command(None, 'doctor') is not None\n"
        "assert 'edge_agent.tech.cmd_doctor' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
