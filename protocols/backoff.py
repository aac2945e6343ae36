"""Retry backoff: exponential with "equal jitter" — the agent's reconnects
(:mod:`edge_agent.sync`) and the cloud's notification retries (:mod:`cloud.notifications`).

Jitter matters on a fleet: after a broker restart every agent reconnects at once, and without
it they all retry in lock step (the thundering herd the AWS Architecture Blog's "Exponential
Backoff And Jitter" measures). Half the delay is fixed so one agent never hammers a broker
that is still down.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    initial_s: float = 1.0
    max_s: float = 60.0
    factor: float = 2.0

    def delay_s(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        """Delay before retry number ``attempt`` (0 for the first retry)."""
        ceiling = min(self.max_s, self.initial_s * self.factor ** min(max(attempt, 0), 64))
        return ceiling / 2 + rand() * ceiling / 2
