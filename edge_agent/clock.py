"""Is the wall clock trustworthy? A Raspberry Pi has no RTC: until NTP syncs, the clock may
read 1970 or the last shutdown time (fake-hwclock). Readings carry this flag and time-bound
credentials (tokens, PINs) wait for it.

The kernel knows: ``adjtimex(2)`` returns TIME_ERROR while STA_UNSYNC is set, and NTP
daemons (chrony, ntpd, systemd-timesyncd) clear it once they discipline the clock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

#: adjtimex(2) return value "clock not synchronized".
TIME_ERROR = 5
#: struct timex is 208 bytes on 64-bit Linux; a larger zeroed buffer (modes = 0) reads only.
_TIMEX_BYTES = 512
#: Ask the kernel at most this often.
_CACHE_S = 5.0


class KernelClockState:
    """Caches the kernel's answer for a few seconds (it is asked on every reading)."""

    def __init__(self) -> None:
        name = ctypes.util.find_library("c")
        self._libc = ctypes.CDLL(name, use_errno=True) if name else None
        self._checked_at = float("-inf")
        self._synced = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if now - self._checked_at >= _CACHE_S:
            self._checked_at = now
            self._synced = self._ask()
        return self._synced

    def _ask(self) -> bool:
        if self._libc is None:
            return False
        buffer = ctypes.create_string_buffer(_TIMEX_BYTES)
        state = int(self._libc.adjtimex(buffer))
        return 0 <= state < TIME_ERROR


def always_synced() -> bool:
    return True


class SteppedWallClock:
    """The wall clock plus an offset read from ``offset_file`` (seconds, may be negative).

    A drill for what an NTP step or an RTC restored late does to a running agent: writing the
    file steps every wall-clock reading of the agent (readings, session times, messages) at
    once, as a step of the system clock would, without touching the host's clock or the
    monotonic clock (which a real step never moves either). TLS certificate checks still use
    the host's clock. The file is re-read when its modification time changes, so a reading
    costs one ``stat``; a missing or unreadable file means no offset.
    """

    def __init__(self, offset_file: Path) -> None:
        self._path = offset_file
        self._stamp: int | None = None
        self._offset = timedelta(0)

    def __call__(self) -> datetime:
        try:
            stamp = self._path.stat().st_mtime_ns
        except OSError:
            stamp = None
        if stamp != self._stamp:
            self._stamp = stamp
            self._offset = timedelta(seconds=self._read())
        return datetime.now(UTC) + self._offset

    def _read(self) -> float:
        try:
            return float(self._path.read_text().strip() or 0)
        except (OSError, ValueError):
            return 0.0


def wall_clock(offset_file: Path | None) -> Callable[[], datetime]:
    """The agent's wall clock: the system's, or stepped by ``[clock] offset_file``."""
    if offset_file is None:
        return lambda: datetime.now(UTC)
    return SteppedWallClock(offset_file)
