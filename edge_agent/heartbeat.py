"""The daemon's heartbeat: a small JSON file beside the control socket, rewritten every few
seconds by a task on the agent's event loop, so ``doctor`` can tell a running, responsive
agent from a dead or a hung one.

It lives beside the socket (``/run/chargemitra/agent.heartbeat`` by default): ``/run`` is a
tmpfs, so beating every 5 s costs no SD-card writes (a row in the store would be an fsync).
Ages are measured on ``CLOCK_MONOTONIC``, shared by every process of the machine and immune
to the wall clock jumping when NTP syncs a Pi without an RTC.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

#: How often the agent rewrites the file.
HEARTBEAT_INTERVAL_S = 5.0
#: Older than this (three missed beats) and the agent's loop counts as stalled.
HEARTBEAT_STALE_S = 3 * HEARTBEAT_INTERVAL_S


def heartbeat_path(socket_path: Path) -> Path:
    """Where the agent with this control socket keeps its heartbeat."""
    return socket_path.with_name(socket_path.stem + ".heartbeat")


@dataclass(frozen=True, slots=True)
class Heartbeat:
    pid: int
    version: str
    #: ``time.monotonic()`` of the agent when it wrote the file.
    mono: float
    started_mono: float


def write_heartbeat(path: Path, beat: Heartbeat) -> None:
    """Replace the file atomically (a reader never sees half a file)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(
        json.dumps(
            {
                "pid": beat.pid,
                "version": beat.version,
                "mono": beat.mono,
                "started_mono": beat.started_mono,
            }
        ),
        "utf-8",
    )
    tmp.replace(path)


def read_heartbeat(path: Path) -> Heartbeat | None:
    """The last heartbeat, or None when there is none (or it cannot be read)."""
    try:
        data = json.loads(path.read_text("utf-8"))
        return Heartbeat(
            int(data["pid"]),
            str(data["version"]),
            float(data["mono"]),
            float(data["started_mono"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    return True


async def beat(path: Path, *, version: str, stop: asyncio.Event) -> None:
    """Rewrite the heartbeat until ``stop`` is set, then remove it (a clean stop leaves no
    stale heartbeat behind; a crash does, and its dead pid says so)."""
    started = time.monotonic()
    try:
        while not stop.is_set():
            # /run full or gone: doctor will report the agent as unresponsive.
            with contextlib.suppress(OSError):
                write_heartbeat(path, Heartbeat(os.getpid(), version, time.monotonic(), started))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(HEARTBEAT_INTERVAL_S):
                    await stop.wait()
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # noqa: ASYNC240 -- one unlink on tmpfs at shutdown
