"""The edge's one backoff: exponential with "equal jitter", for every reconnect and retry loop
(the cloud link, a Modbus bus that cannot be opened, a credential device unplugged).

Jitter matters on a fleet: after a broker restart every agent reconnects at once, and without
it they all retry in lock step (the thundering herd the AWS Architecture Blog's "Exponential
Backoff And Jitter" measures). Half the delay is fixed so one agent never hammers a broker,
or a USB adapter, that is still gone.

:class:`Backoff` is the policy (pure: the delay before retry ``n``); :class:`Retries` counts
the failures of one loop and gives the next delay, and forgets them on a success.
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


class Retries:
    """One loop's failures in a row under a :class:`Backoff`."""

    def __init__(self, policy: Backoff, rand: Callable[[], float] = random.random) -> None:
        self.policy = policy
        self._rand = rand
        self._attempt = 0

    @property
    def failures(self) -> int:
        """Failures since the last success."""
        return self._attempt

    def failed(self) -> float:
        """One more failure: the delay before the next try."""
        delay = self.policy.delay_s(self._attempt, self._rand)
        self._attempt += 1
        return delay

    def succeeded(self) -> None:
        self._attempt = 0
