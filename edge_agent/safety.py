"""The daemon's safety tick: the fail-safe rules run every :data:`SAFETY_TICK_S` even without
a poll (a bus stuck behind its lock is silence), and how late the tick woke is kept.

Each tick is :meth:`ConnectorController.on_tick
<edge_agent.sessions.controller.ConnectorController.on_tick>`: a session's fail-safe rules and,
for a relay a technician closed by hand, :mod:`edge_agent.relay.manual_close`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from edge_agent.sessions.controller import ConnectorController

#: How often the fail-safe rules run without a poll.
SAFETY_TICK_S = 0.5
#: Safety ticks whose lateness is kept for ``status`` (one hour at 0.5 s).
TICKS_KEPT = 7200


@dataclass(frozen=True, slots=True)
class Lateness:
    ticks: int
    late_p50_ms: float | None
    late_p99_ms: float | None
    late_max_ms: float | None


class TickLateness:
    """How late the safety tick woke, over the last :data:`TICKS_KEPT` ticks: the event
    loop's responsiveness, which nothing (an fsync, a slow poll) may take away."""

    def __init__(self) -> None:
        self._late_s: deque[float] = deque(maxlen=TICKS_KEPT)
        #: Monotonic time the last tick *finished* (every controller's rules ran): systemd's
        #: watchdog stops being fed when it grows (edge_agent/watchdog.py) — a hung tick means
        #: no fail-safe rule opens a relay. None before the first.
        self.last_done_mono: float | None = None

    def note(self, late_s: float) -> None:
        self._late_s.append(max(0.0, late_s))

    def summary(self) -> Lateness:
        late = sorted(self._late_s)
        if not late:
            return Lateness(0, None, None, None)
        return Lateness(
            ticks=len(late),
            late_p50_ms=round(late[len(late) // 2] * 1000, 3),
            late_p99_ms=round(late[min(len(late) - 1, int(len(late) * 0.99))] * 1000, 3),
            late_max_ms=round(late[-1] * 1000, 3),
        )


async def safety_loop(
    controllers: Iterable[ConnectorController], ticks: TickLateness, stop: asyncio.Event
) -> None:
    """Tick every controller every :data:`SAFETY_TICK_S` until ``stop`` is set."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        due = loop.time() + SAFETY_TICK_S
        await asyncio.sleep(SAFETY_TICK_S)
        ticks.note(loop.time() - due)
        for controller in controllers:
            await controller.on_tick()
        ticks.last_done_mono = loop.time()  # the loop's clock is time.monotonic
