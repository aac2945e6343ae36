"""The edge's one retry schedule: every reconnect and retry loop of the agent (the cloud link,
a Modbus bus that cannot be opened, a credential device unplugged) waits by :class:`Retries`
over the one exponential-with-equal-jitter rule, :class:`protocols.backoff.Backoff` (shared
with the cloud's retrying jobs).

Jitter matters on a fleet: after a broker restart every agent reconnects at once, and a site's
USB hub coming back brings every adapter back at once; half of each delay is fixed so nothing
that is still gone is hammered.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from protocols.backoff import Backoff

__all__ = ["JITTER", "Backoff", "Retries"]

#: The edge's one source of jitter, for schedules that keep their own attempt counts (the
#: uplink window's per-message resends, edge_agent/sync/window.py); tests pass their own.
JITTER: Callable[[], float] = random.random


class Retries:
    """One loop's failures in a row under a :class:`Backoff`: :meth:`failed` gives the delay
    before the next try, :meth:`succeeded` starts over."""

    def __init__(self, policy: Backoff, rand: Callable[[], float] = JITTER) -> None:
        self.policy = policy
        self._rand = rand
        self._attempt = 0

    @property
    def failures(self) -> int:
        """Failures since the last success."""
        return self._attempt

    def failed(self) -> float:
        delay = self.policy.delay_s(self._attempt, self._rand)
        self._attempt += 1
        return delay

    def succeeded(self) -> None:
        self._attempt = 0
