"""The uplink's bookkeeping, with no I/O: what is in flight, what is acknowledged, what to resend.

A row moves: *queued* (in the outbox only) → *publishing* (handed to the broker) →
*awaiting ack* (the broker's PUBACK came: it has the message, which is not durability —
Mosquitto may hold it in memory, DESIGN.md §8) → deleted when the cloud's application
:class:`~protocols.messages.Ack` names its seq. A row whose ack does not come within
``ack_timeout_s``, and every row in flight when the link drops, goes back to be resent; the
cloud de-duplicates by seq.

A PUBACK with reason 0x10 "No matching subscribers" is the broker saying it dropped the
message: nobody (no ingest worker) was subscribed, as in the seconds after a broker restart
before ingest's shared subscription is back (docs/fleet.md). No ack will come for it, so it is
due again after a short backoff (:attr:`UplinkWindow.no_subscribers`: 0.5-1 s first, doubling
per consecutive 0x10 of the same seq, at most ``ack_timeout_s``) instead of the full timeout.

The window bounds both stages, so neither paho's queue (scanned on every PUBACK) nor the
cloud's backlog grows without limit. Within it, an :class:`~protocols.pacing.AckPacer` (when
given) paces the backlog and resends by how fast the cloud acks (:meth:`UplinkWindow.paced_room`):
each ack's round trip and each timeout feed it, a new connection restarts it.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

from edge_agent.backoff import JITTER
from protocols.backoff import Backoff
from protocols.pacing import AckPacer


class Stage(enum.Enum):
    PUBLISHING = "publishing"
    AWAITING_ACK = "awaiting_ack"


@dataclass(slots=True)
class InFlight:
    seq: int
    stage: Stage
    #: Monotonic seconds at which it is resent unless acked (or PUBACKed, while publishing).
    due: float
    #: Monotonic seconds at which it was published (its ack's round trip, for the pacer).
    sent: float
    #: Counted against the pacer's window (a resent or backlog row).
    paced: bool = False
    #: Due early: the broker dropped it for want of a subscriber.
    dropped: bool = False


class UplinkWindow:
    """Which seqs are in flight, and how much room is left."""

    def __init__(
        self,
        *,
        max_publishing: int,
        max_unacked: int,
        ack_timeout_s: float,
        no_subscribers: Backoff | None = None,
        pacer: AckPacer | None = None,
        rand: Callable[[], float] = JITTER,
    ) -> None:
        if not 1 <= max_publishing <= max_unacked:
            raise ValueError("need 1 <= max_publishing <= max_unacked")
        self.max_publishing = max_publishing
        self.max_unacked = max_unacked
        self.ack_timeout_s = ack_timeout_s
        #: When a row the broker dropped (PUBACK 0x10) is due again; None: after
        #: ``ack_timeout_s`` like any unacked row.
        self.no_subscribers = no_subscribers
        #: Paces the backlog and resends by the cloud's ack times; None: only the bounds.
        self.pacer = pacer
        self._rand = rand
        self._rows: dict[int, InFlight] = {}
        self._publishing = 0
        #: Rows in flight that the pacer paces (only those count against its window: live
        #: and urgent rows must never leave the backlog no room).
        self._paced = 0
        #: Seqs whose ack timed out and that were not acked since: the ack of a resent row
        #: may be the first copy's, so its round trip says nothing (Karn's rule).
        self._late: set[int] = set()
        #: Consecutive 0x10 PUBACKs per seq (the backoff's attempt). Kept while the seq waits
        #: in the resend lane, out of the window; ended by a routed PUBACK, an ack or a reset.
        self._drops: dict[int, int] = {}
        #: The earliest ``due`` of a dropped row (inf: none), so the drain looks for it then
        #: rather than at its once-a-second timeout check.
        self.next_drop_due = math.inf
        #: How many seqs of the last :meth:`timed_out` were dropped rows, not timeouts.
        self.last_dropped_due = 0

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

    def paced_room(self, extra: int = 0) -> int:
        """How many more backlog or resent rows may be published now, with ``extra`` of them
        chosen but not yet published: :meth:`room`, and the pacer's window (which counts only
        the rows it paces)."""
        room = self.room() - extra
        if self.pacer is not None:
            room = min(room, self.pacer.room(self._paced + extra))
        return max(0, room)

    def published(self, seq: int, now: float, *, paced: bool = False) -> None:
        """``seq`` handed to the broker; ``paced``: it came through :meth:`paced_room`."""
        if seq in self._rows:
            raise ValueError(f"seq {seq} is already in flight")
        self._rows[seq] = InFlight(seq, Stage.PUBLISHING, now + self.ack_timeout_s, now, paced)
        self._publishing += 1
        if paced:
            self._paced += 1

    def puback(self, seq: int, now: float) -> bool:
        """The broker has ``seq``; return False if it was not publishing (late or unknown)."""
        row = self._rows.get(seq)
        if row is None or row.stage is not Stage.PUBLISHING:
            return False
        row.stage, row.due = Stage.AWAITING_ACK, now + self.ack_timeout_s
        self._publishing -= 1
        if self._drops:
            self._drops.pop(seq, None)  # routed: a later drop starts the backoff over
        return True

    def dropped(self, seq: int, now: float) -> float | None:
        """The broker PUBACKed ``seq`` with 0x10 "No matching subscribers" and dropped it.

        Return the seconds until it is due again (None if it was not publishing). Without a
        :attr:`no_subscribers` backoff it waits ``ack_timeout_s`` like a routed row.
        """
        row = self._rows.get(seq)
        if row is None or row.stage is not Stage.PUBLISHING:
            return None
        self._publishing -= 1
        row.stage = Stage.AWAITING_ACK
        if self.no_subscribers is None:
            row.due = now + self.ack_timeout_s
            return self.ack_timeout_s
        attempt = self._drops.get(seq, 0)
        self._drops[seq] = attempt + 1
        # Never later than the ack timeout would have resent it.
        delay_s = min(self.no_subscribers.delay_s(attempt, self._rand), self.ack_timeout_s)
        row.due, row.dropped = now + delay_s, True
        self.next_drop_due = min(self.next_drop_due, row.due)
        return delay_s

    def acked(self, ranges: list[tuple[int, int]], now: float) -> list[int]:
        """Forget every in-flight seq the ack covers (arrived at ``now``); return them."""
        done: list[int] = []
        for first, last in ranges:
            # Walk whichever is shorter: the range or the window.
            if last - first < len(self._rows):
                done += [s for s in range(first, last + 1) if s in self._rows]
            else:
                done += [s for s in self._rows if first <= s <= last]
        pacer = self.pacer
        late = self._late
        for seq in done:
            row = self._forget(seq)
            if pacer is not None and seq not in late:
                pacer.acked(now - row.sent, now)
        for first, last in ranges if late else ():
            # Walk whichever is shorter, as above: an ack names a few seqs, and a storm's
            # timeouts may leave thousands in ``late``.
            if last - first < len(late):
                late.difference_update(range(first, last + 1))
            else:
                late.difference_update([s for s in late if first <= s <= last])
        if self._drops:
            for seq in done:
                self._drops.pop(seq, None)
        return done

    def timed_out(self, now: float) -> list[int]:
        """Seqs that are due (no PUBACK or ack within the timeout, or dropped by the broker
        and their backoff over), oldest first; they leave the window."""
        late: list[int] = []
        dropped = 0
        pacer = self.pacer
        next_drop_due = math.inf
        for seq, row in self._rows.items():
            if row.due <= now:
                late.append(seq)
                if row.dropped:
                    dropped += 1
            elif row.dropped and row.due < next_drop_due:
                next_drop_due = row.due
        self.next_drop_due = next_drop_due
        self.last_dropped_due = dropped
        late.sort()
        for seq in late:
            self._forget(seq)
        # A drop (no subscriber) is not congestion: only a real timeout shrinks the pacer.
        if pacer is not None and len(late) > dropped:
            pacer.timed_out(now, self.ack_timeout_s)
            self._late.update(late)
        return late

    def reset(self) -> list[int]:
        """The link dropped: everything in flight must be resent. Return it, oldest first.
        A new connection is a new situation: the drops' backoff starts over, the pacer
        slow-starts again (a reconnect may be the whole fleet's, after a broker restart)."""
        seqs = sorted(self._rows)
        self._rows.clear()
        self._publishing = 0
        self._paced = 0
        self._late.clear()
        self._drops.clear()
        self.next_drop_due = math.inf
        self.last_dropped_due = 0
        if self.pacer is not None:
            self.pacer.restart()
        return seqs

    def _forget(self, seq: int) -> InFlight:
        row = self._rows.pop(seq)
        if row.stage is Stage.PUBLISHING:
            self._publishing -= 1
        if row.paced:
            self._paced -= 1
        return row


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
