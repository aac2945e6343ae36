"""What a Raspberry Pi gets from ``pip install '.[edge]'``: the agent, and nothing of the cloud.

The ``edge`` extra must not pull the cloud's web framework, ORM, Postgres drivers, Redis
client or payment SDK (issue 2; ``docs/development.md``). The install test builds the project
from a copy of the source tree into a fresh virtualenv made with the project's own ``uv``,
constrained by ``requirements/edge.lock`` so the versions are the ones the lock pins.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# Distribution names (normalised as in PEP 503) that only the cloud may install.
CLOUD_ONLY = frozenset(
    {
        "fastapi",
        "sqlalchemy",
        "asyncpg",
        "psycopg",
        "psycopg-binary",
        "psycopg2",
        "psycopg2-binary",
        "redis",
        "razorpay",
        "uvicorn",
        "alembic",
    }
)

# Not cloud-only, but kept off the Pi: the agent's resident-memory budget (<= 40 MiB,
# bench.edge_footprint) has no room for pydantic's schema machinery or cryptography's
# OpenSSL bindings (docs/decisions.md, "The agent's memory budget").
AGENT_EXCLUDED = frozenset({"pydantic", "pydantic-core", "cryptography"})

# What the copy of the source tree leaves out: environments, caches and build output.
COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    # Bootstrap's and the tests' caches (a whole Debian root for tests/deploy/).
    ".cache",
    ".state",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".hypothesis",
)


def normalise(name: str) -> str:
    """PEP 503 normalised distribution name: ``Psycopg2_Binary`` -> ``psycopg2-binary``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; fail the test with its output if it exits non-zero."""
    # A VIRTUAL_ENV inherited from the caller must not redirect uv away from --python.
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    result = subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if result.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


@dataclass(frozen=True)
class EdgeVenv:
    """A fresh virtualenv holding only ``.[edge]``; ``workdir`` is outside the source tree."""

    root: Path
    python: Path
    workdir: Path


@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory: pytest.TempPathFactory) -> EdgeVenv:
    """Build the project from a copy of the tree and install ``.[edge]`` into a new venv."""
    uv = VENV_BIN / "uv"
    assert uv.is_file(), f"{uv} is missing: run make bootstrap"
    assert (REPO_ROOT / "pyproject.toml").is_file(), f"{REPO_ROOT} is not the project root"
    base = tmp_path_factory.mktemp("edge-install")
    source = base / "source"
    shutil.copytree(REPO_ROOT, source, ignore=COPY_IGNORE)
    venv = base / "venv"
    workdir = base / "work"
    workdir.mkdir()
    run([str(uv), "venv", "--quiet", "--python", sys.executable, str(venv)], cwd=workdir)
    python = venv / "bin" / "python"
    run(
        [
            str(uv),
            "pip",
            "install",
            "--quiet",
            "--python",
            str(python),
            "--constraint",
            str(source / "requirements" / "edge.lock"),
            f"{source}[edge]",
        ],
        cwd=workdir,
    )
    return EdgeVenv(root=venv, python=python, workdir=workdir)


def installed_distributions(venv: EdgeVenv) -> set[str]:
    """Normalised names of every distribution installed in ``venv``."""
    code = (
        "import importlib.metadata as m, json; "
        "print(json.dumps(sorted({d.metadata['Name'] for d in m.distributions()})))"
    )
    names: list[str] = json.loads(run([str(venv.python), "-c", code], venv.workdir).stdout)
    return {normalise(n) for n in names}


@pytest.mark.slow
def test_edge_install_has_no_cloud_only_packages(edge_venv: EdgeVenv) -> None:
    """``.[edge]`` installs the project and the Pi's drivers, and none of the cloud's stack."""
    installed = installed_distributions(edge_venv)
    # The check is only meaningful if the install really happened with its extra.
    assert {"chargemitra", "pymodbus", "paho-mqtt"} <= installed
    assert installed & CLOUD_ONLY == set()
    assert installed & AGENT_EXCLUDED == set()


@pytest.mark.slow
def test_edge_install_imports_every_agent_module(edge_venv: EdgeVenv) -> None:
    """Every module of ``edge_agent`` and ``protocols`` imports with only the edge extra.

    The venv has no pydantic or cryptography, so a module that reaches for either (directly
    or through a helper) fails here instead of on a Pi, or in its memory budget.
    """
    code = (
        "import importlib, pkgutil, edge_agent, protocols\n"
        "names = []\n"
        "for pkg in (edge_agent, protocols):\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "        names.append(info.name)\n"
        "print(len(names))\n"
    )
    imported = int(run([str(edge_venv.python), "-c", code], edge_venv.workdir).stdout)
    assert imported > 50, imported


@pytest.mark.slow
def test_edge_install_imports_agent_and_protocols_from_the_venv(edge_venv: EdgeVenv) -> None:
    """``edge_agent`` and ``protocols`` import in the edge venv, from the venv, not the tree."""
    code = "import edge_agent, protocols; print(edge_agent.__file__); print(protocols.__file__)"
    files = run([str(edge_venv.python), "-c", code], edge_venv.workdir).stdout.split()
    assert len(files) == 2
    for file in files:
        assert Path(file).is_relative_to(edge_venv.root), file


@pytest.mark.slow
def test_edge_install_agent_cli_starts(edge_venv: EdgeVenv) -> None:
    """The agent's console script runs with only the edge extra installed."""
    result = run([str(edge_venv.root / "bin" / "chargemitra-agent"), "--help"], edge_venv.workdir)
    assert "Usage: chargemitra-agent" in result.stdout


def test_edge_lock_pins_no_cloud_only_package() -> None:
    """``requirements/edge.lock`` (what a Pi installs reproducibly) lists no cloud-only package."""
    lock = (REPO_ROOT / "requirements" / "edge.lock").read_text(encoding="utf-8")
    pinned = {
        normalise(match.group(1))
        for match in re.finditer(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==", lock, re.M)
    }
    assert "pymodbus" in pinned, "edge.lock does not look like a lock of the edge extra"
    assert pinned & CLOUD_ONLY == set()
    assert pinned & AGENT_EXCLUDED == set()
