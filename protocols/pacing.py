"""How much of a backlog a device keeps waiting for the cloud's ack: an adaptive window.

A device back from an outage holds a backlog (an agent's outbox: up to 10,000 rows awaiting
the cloud's :class:`~protocols.messages.Ack` at once). One device alone drains it in seconds.
After a broker restart, though, a whole fleet comes back at once: in ``bench.fleet``'s storm
2,000 sites sent 1.2 million backlog messages within seconds; the broker queued 200,000 per
ingest worker and dropped the rest, every dropped message was resent after the 30 s ack
timeout, and so were the ones still waiting in the queue — 14.5 million publishes for 1.5
million messages (docs/fleet.md). The cloud's capacity is shared; no device can know its
share in advance.

So each device paces its backlog the way TCP paces a connection, on the only signals it
has: how long the cloud takes to ack (a queue building up somewhere between it and the
database) and acks that never come (a message dropped on the way).

* **Slow start**: after each connect the window starts at :data:`INITIAL_WINDOW` rows and
  grows by one for every row acked within the target time (doubling per round trip) until it
  first has to shrink.
* **Congestion avoidance**: above that threshold it grows by one row per window's worth of
  timely acks.
* **Multiplicative decrease**: an ack slower than the target, or a row whose ack timed out,
  halves the window (never below :data:`MIN_WINDOW`) — once per round trip: the acks still
  on their way were sent into the same queue and would otherwise halve it again and again.

The window holds back, and counts, only the backlog and resends (the caller decides which
rows it paces): live readings and urgent messages (session events, command results) always
go — they are what a driver is waiting for, and there are few of them — and do not take its
room, so even a window pinned at its minimum by a slow cloud still moves the backlog. Every
ack feeds it, except the ack of a row that was resent after a timeout: that may be the
first copy's ack, long after the timeout, and its round trip says nothing (Karn's rule).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: Rows awaiting ack the window allows at a connect (slow start begins here).
INITIAL_WINDOW = 16
#: The window never shrinks below this: a device always makes progress.
MIN_WINDOW = 2


@dataclass(slots=True)
class AckPacer:
    """The window of rows a device lets await the cloud's ack (pure: the caller's clock)."""

    #: An ack slower than this (first publish → ack, seconds) means the cloud is queueing.
    target_rtt_s: float
    #: The largest window (the device's own bound on rows awaiting ack).
    maximum: int
    window: float = field(init=False)
    #: Slow start below it, one row per window of acks above it.
    threshold: float = field(init=False)
    #: No further decrease before this (monotonic seconds): one per round trip.
    _hold_until: float = field(init=False, default=-math.inf)

    def __post_init__(self) -> None:
        if not self.target_rtt_s > 0:
            raise ValueError("target_rtt_s must be positive")
        if self.maximum < MIN_WINDOW:
            raise ValueError(f"maximum must be at least {MIN_WINDOW}")
        self.restart()

    @classmethod
    def for_timeout(
        cls, target_rtt_s: float, ack_timeout_s: float, maximum: int
    ) -> AckPacer | None:
        """The pacer of a device whose acks time out after ``ack_timeout_s`` (None: the
        target is 0, not paced). Its target is at most half the timeout: an ack it still
        calls timely must not be one that was already resent."""
        if target_rtt_s <= 0:
            return None
        return cls(target_rtt_s=min(target_rtt_s, ack_timeout_s / 2), maximum=maximum)

    def restart(self) -> None:
        """A new connection: slow start again from :data:`INITIAL_WINDOW`.

        A reconnect is exactly when the whole fleet may be coming back at once.
        """
        self.window = float(min(INITIAL_WINDOW, self.maximum))
        self.threshold = float(self.maximum)
        self._hold_until = -math.inf

    def room(self, awaiting_ack: int) -> int:
        """How many more paced rows may be published with ``awaiting_ack`` rows unacked."""
        return max(0, int(self.window) - awaiting_ack)

    def acked(self, rtt_s: float, now: float) -> None:
        """One row acked ``rtt_s`` seconds after it was published."""
        if rtt_s > self.target_rtt_s:
            self._decrease(now, hold_s=rtt_s)
        elif self.window < self.threshold:
            self.window = min(self.window + 1.0, float(self.maximum))
        else:
            self.window = min(self.window + 1.0 / self.window, float(self.maximum))

    def timed_out(self, now: float, ack_timeout_s: float) -> None:
        """Rows published ``ack_timeout_s`` ago were never acked (one call per expiry scan)."""
        self._decrease(now, hold_s=ack_timeout_s)

    def _decrease(self, now: float, *, hold_s: float) -> None:
        if now < self._hold_until:
            return
        self.window = max(float(MIN_WINDOW), self.window / 2)
        self.threshold = self.window
        # The rows in flight now went into the same queue: their slow acks say nothing new.
        self._hold_until = now + hold_s
