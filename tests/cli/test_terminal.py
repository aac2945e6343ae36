"""A scripted terminal session in tmux (send-keys, capture-pane): what a technician sees of
``meter watch`` and ``doctor`` on a real terminal is a readable, refreshing table."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from firmware_sim.site import MeterSpec
from tests.cli.rig import CLI, sim_site, write_config


class Tmux:
    """A private tmux server (its own socket) with one 150x45 window running bash."""

    def __init__(self, socket: Path) -> None:
        tmux = shutil.which("tmux")
        assert tmux is not None, "tmux is installed by deploy/dev/bootstrap.sh"
        self.base = [tmux, "-S", str(socket)]

    async def run(self, *args: str) -> str:
        done = await asyncio.to_thread(
            subprocess.run,
            [*self.base, *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return done.stdout

    async def start(self, env: dict[str, str]) -> None:
        pairs = [x for k, v in env.items() for x in ("-e", f"{k}={v}")]
        await self.run(
            "new-session",
            "-d",
            "-s",
            "cli",
            "-x",
            "150",
            "-y",
            "45",
            *pairs,
            "bash --norc --noprofile",
        )

    async def send(self, *keys: str) -> None:
        await self.run("send-keys", "-t", "cli", *keys)

    async def screen(self) -> str:
        return await self.run("capture-pane", "-p", "-t", "cli")

    async def wait_for(self, *texts: str, timeout_s: float = 20.0) -> str:
        """The screen once it shows every one of ``texts``."""
        screen = ""
        async with asyncio.timeout(timeout_s):
            while True:
                screen = await self.screen()
                if all(t in screen for t in texts):
                    return screen
                await asyncio.sleep(0.2)

    async def stop(self) -> None:
        await self.run("kill-server")


@pytest.mark.integration
async def test_meter_watch_and_doctor_render_readable_tables_in_tmux(tmp_path: Path) -> None:
    tmux = Tmux(tmp_path / "tmux.sock")
    async with sim_site(MeterSpec("sdm630", 1)) as sim:
        config = write_config(tmp_path, sim)
        await tmux.start(
            {
                "CHARGEMITRA_AGENT_CONFIG": str(config),
                "CHARGEMITRA_CLOCK_SYNCED": "1",
                "TERM": "xterm-256color",
            }
        )
        try:
            await tmux.send(f"{CLI} meter watch --interval 0.3", "Enter")
            watch = await tmux.wait_for(
                "meter watch (via bus", "voltage_l1", "frequency", "kWh", "Ctrl-C"
            )
            # Box-drawn table, one quantity per row, value and unit right-aligned.
            assert "┏" in watch
            assert "┃ quantity" in watch
            row = next(line for line in watch.splitlines() if "voltage_l1 " in line)
            assert row.rstrip().endswith("V │")
            # It refreshes in place: the table is drawn once, not scrolled down the screen.
            await asyncio.sleep(1.0)
            assert (await tmux.screen()).count("┃ quantity") == 1
            await tmux.send("C-c")
            await tmux.send("clear", "Enter")
            await tmux.send(f"{CLI} doctor", "Enter")
            doctor = await tmux.wait_for("chargemitra-agent doctor", "result: FAIL")
            # A check's row is the one whose check cell names it: a wrapped remedy can start a
            # continuation line with the same word ("agent creates it ...") in another cell.
            rows = {
                cells[2].strip(): cells
                for line in doctor.splitlines()
                if len(cells := line.split("│")) > 3 and cells[2].strip()
            }
            for name in ("config", "store", "meter m1", "relay 1", "clock", "agent"):
                assert name in rows, name
            assert "FAIL" in rows["agent"][1]  # the agent is not running in this session
            assert "PASS" in rows["meter m1"][1]
            assert "Traceback" not in doctor
            print(watch, doctor, sep="\n")  # shown by pytest -s: what the technician sees
        finally:
            await tmux.stop()
