"""``[clock] offset_file``: the agent's wall clock stepped by a file, re-read when it changes."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

from edge_agent.clock import SteppedWallClock, wall_clock


def _close(a: datetime, b: datetime) -> bool:
    return abs(a - b) < timedelta(seconds=5)


def test_the_offset_steps_the_clock_both_ways_when_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "offset"
    clock = SteppedWallClock(path)
    assert _close(clock(), datetime.now(UTC))  # no file: no offset
    path.write_text("-3600\n")
    assert _close(clock(), datetime.now(UTC) - timedelta(hours=1))
    path.write_text("1800")
    os.utime(path, ns=(1, 1))  # a new mtime even within the filesystem's resolution
    assert _close(clock(), datetime.now(UTC) + timedelta(minutes=30))
    path.write_text("not a number")
    os.utime(path, ns=(2, 2))
    assert _close(clock(), datetime.now(UTC))  # unreadable: no offset, never a crash


def test_without_a_file_the_wall_clock_is_the_systems() -> None:
    assert _close(wall_clock(None)(), datetime.now(UTC))
