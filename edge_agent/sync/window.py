"""The uplink's bookkeeping, with no I/O: what is in flight, what is acknowledged, what to resend.

A row moves: *queued* (in the outbox only) → *publishing* (handed to the broker) →
*awaiting ack* (the broker's PUBACK came: it has the message, which is not durability —
Mosquitto may hold it in memory, DESIGN.md §8) → deleted when the cloud's application
:class:`~protocols.messages.Ack` names its seq. A row whose ack does not come within
``ack_timeout_s``, and every row in flight when the link drops, goes back to be resent; the
cloud de-duplicates by seq.

The window bounds both stages, so neither paho's queue (scanned on every PUBACK) nor the
cloud's backlog grows without limit.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Stage(enum.Enum):
    PUBLISHING = "publishing"
    AWAITING_ACK = "awaiting_ack"


@dataclass(slots=True)
class InFlight:
    seq: int
    stage: Stage
    since: float  # monotonic seconds


class UplinkWindow:
    """Which seqs are in flight, and how much room is left."""

    def __init__(self, *, max_publishing: int, max_unacked: int, ack_timeout_s: float) -> None:
        if not 1 <= max_publishing <= max_unacked:
            raise ValueError("need 1 <= max_publishing <= max_unacked")
        self.max_publishing = max_publishing
        self.max_unacked = max_unacked
        self.ack_timeout_s = ack_timeout_s
        self._rows: dict[int, InFlight] = {}
        self._publishing = 0

    def __contains__(self, seq: object) -> bool:
        return seq in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def publishing(self) -> int:
        return self._publishing

    def room(self) -> int:
        """How many more rows may be published now."""
        return max(
            0, min(self.max_publishing - self._publishing, self.max_unacked - len(self._rows))
        )

    def published(self, seq: int, now: float) -> None:
        if seq in self._rows:
            raise ValueError(f"seq {seq} is already in flight")
        self._rows[seq] = InFlight(seq, Stage.PUBLISHING, now)
        self._publishing += 1

    def puback(self, seq: int, now: float) -> bool:
        """The broker has ``seq``; return False if it was not publishing (late or unknown)."""
        row = self._rows.get(seq)
        if row is None or row.stage is not Stage.PUBLISHING:
            return False
        row.stage, row.since = Stage.AWAITING_ACK, now
        self._publishing -= 1
        return True

    def acked(self, ranges: list[tuple[int, int]]) -> list[int]:
        """Forget every in-flight seq the ack covers; return them (for logging)."""
        done: list[int] = []
        for first, last in ranges:
            # Walk whichever is shorter: the range or the window.
            if last - first < len(self._rows):
                done += [s for s in range(first, last + 1) if s in self._rows]
            else:
                done += [s for s in self._rows if first <= s <= last]
        for seq in done:
            self._forget(seq)
        return done

    def timed_out(self, now: float) -> list[int]:
        """Seqs with no PUBACK or ack within the timeout, oldest first; they leave the window."""
        late = sorted(s for s, r in self._rows.items() if now - r.since >= self.ack_timeout_s)
        for seq in late:
            self._forget(seq)
        return late

    def reset(self) -> list[int]:
        """The link dropped: everything in flight must be resent. Return it, oldest first."""
        seqs = sorted(self._rows)
        self._rows.clear()
        self._publishing = 0
        return seqs

    def _forget(self, seq: int) -> None:
        row = self._rows.pop(seq)
        if row.stage is Stage.PUBLISHING:
            self._publishing -= 1


class TokenBucket:
    """A rate limit for the backlog lane: ``rate`` per second, bursts up to ``burst``."""

    def __init__(self, rate_per_s: float, burst: float, now: float) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._tokens = burst
        self._at = now

    def available(self, now: float) -> int:
        """Whole tokens available now."""
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        self._at = now
        return int(self._tokens)

    def take(self, count: int, now: float) -> None:
        """Spend ``count`` tokens (at most what :meth:`available` said)."""
        if count > self.available(now):
            raise ValueError("taking more tokens than are available")
        self._tokens -= count

    def wait_s(self, now: float) -> float:
        """Seconds until one token is available."""
        missing = 1 - min(self.burst, self._tokens + (now - self._at) * self.rate_per_s)
        return max(0.0, missing / self.rate_per_s)
