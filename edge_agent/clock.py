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
