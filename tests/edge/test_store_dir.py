"""The agent's first start on a fresh system: ``chargemitra-agent run`` as a process, with
its store in directories that do not exist yet, creates them owner-only (0700) and starts;
a directory it cannot create stops it with one line naming that directory (exit 1, as
``run`` does on any error but a bad configuration)."""

from __future__ import annotations

import asyncio
import sqlite3
import stat
from pathlib import Path

import pytest

from .agent_rig import control, wait_for_socket, write_config
from .test_daemon import site, spawn, terminate

pytestmark = pytest.mark.integration


def _with_store(config: Path, store: Path) -> Path:
    text = config.read_text()
    default = f'path = "{config.parent / "agent.db"}"'
    assert default in text
    config.write_text(text.replace(default, f'path = "{store}"'))
    return config


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_missing_store_directory_is_created_owner_only(tmp_path: Path) -> None:
    before = _mode(tmp_path)
    store = tmp_path / "var" / "lib" / "chargemitra" / "agent.db"
    async with site(tmp_path) as (_sim, port):
        config = _with_store(write_config(tmp_path, port=port), store)
        proc = await spawn(config)
        try:
            await wait_for_socket(tmp_path / "agent.sock")
            status = await control(tmp_path / "agent.sock", cmd="status")
            assert status["ok"], status
        finally:
            stderr = await terminate(proc)
    assert proc.returncode == 0, stderr.decode()
    for directory in (store.parent, store.parent.parent, store.parent.parent.parent):
        assert directory.is_dir()
        assert _mode(directory) == 0o700, directory
    # A directory that was there is the operator's: left as it was.
    assert _mode(tmp_path) == before
    conn = sqlite3.connect(store)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] >= 1
    finally:
        conn.close()


async def test_a_store_directory_that_cannot_be_created_is_named(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the store's directory should be")
    store = blocker / "chargemitra" / "agent.db"
    async with site(tmp_path) as (_sim, port):
        config = _with_store(write_config(tmp_path, port=port), store)
        proc = await spawn(config)
        async with asyncio.timeout(60):
            _, err = await proc.communicate()
    stderr = err.decode()
    assert proc.returncode == 1, stderr  # `run`: 2 is a bad configuration, 1 any other error
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert f"cannot create the store's directory {blocker / 'chargemitra'}" in lines[0]
    assert "unable to open database file" not in stderr
