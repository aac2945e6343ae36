"""The simulator's clock seam: physical time (EV charging, energy, fault expiry) is read from
a :class:`Clock`, so tests can step ten simulated minutes in a microsecond.

Line timing on the RTU bus is *not* simulated time: it is the wall time a real bus would take,
and always uses the event loop's clock.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic seconds since an arbitrary origin."""

    def now_s(self) -> float: ...


class SystemClock:
    """Real time: :func:`time.monotonic` (never jumps with NTP or a wrong RTC)."""

    def now_s(self) -> float:
        return time.monotonic()


class ManualClock:
    """Time that moves only when told to; for tests and ``POST /clock/advance``."""

    def __init__(self, start_s: float = 0.0) -> None:
        self._now_s = start_s

    def now_s(self) -> float:
        return self._now_s

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("a monotonic clock cannot go back")
        self._now_s += seconds
