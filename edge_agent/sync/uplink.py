"""Draining the outbox: choosing what to publish next, and applying the cloud's acks.

Lanes, in order, each time there is room in the :class:`~edge_agent.sync.window.UplinkWindow`:

1. **resend** — rows whose ack timed out, that the broker dropped for want of a subscriber
   (PUBACK 0x10, after a short backoff: :mod:`edge_agent.sync.window`) or that were in flight
   when the link dropped;
2. **urgent** — session events, command results and authorization decisions, oldest first,
   whatever their age (one that times out comes back here, not to the paced resend lane);
3. **live** — anything queued after the link came up (the reading a driver is watching);
4. **backlog** — everything else queued before the link came up (telemetry, a status that
   was not acked), oldest first, rate-limited by a token bucket so hours of backlog neither
   starve live readings nor trip broker limits.

Resends and the backlog are also paced by how fast the cloud acks
(:class:`~protocols.pacing.AckPacer`, ``backlog_target_rtt_s``): after a broker restart the
whole fleet's backlogs arrive at once, and a cloud that queues them for longer than the ack
timeout gets each one again. Urgent and live rows are not paced.

Seq order is kept within each lane; the cloud de-duplicates by seq and applies session events
by their per-session ``event_seq``, so lanes interleaving is safe. A row is deleted only when
an :class:`~protocols.messages.Ack` covers it.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from edge_agent.store import outbox_lanes as q
from edge_agent.store.outbox import OutboxRow
from edge_agent.sync.window import TokenBucket, UplinkWindow
from protocols.backoff import Backoff
from protocols.messages import Ack
from protocols.pacing import AckPacer


@dataclass(frozen=True, slots=True)
class UplinkSettings:
    #: Rows handed to paho without PUBACK yet (paho holds them in memory; its own in-flight
    #: limit is off, so this is the only bound: `LinkSettings.max_inflight`).
    max_publishing: int = 200
    #: Rows published and not yet acked by the cloud.
    max_unacked: int = 10000
    #: Resend a row if the cloud has not acked it by then.
    ack_timeout_s: float = 30.0
    #: A row the broker PUBACKs with 0x10 "No matching subscribers" (it dropped it: no
    #: ingest subscription, e.g. just after a broker restart) is resent after 0.5-1 times
    #: this, doubling per consecutive 0x10 of that row, at most ``ack_timeout_s``.
    #: 0: it waits ``ack_timeout_s`` like any unacked row.
    no_subscribers_resend_s: float = 1.0
    #: Backlog lane rate; live and urgent rows are not limited.
    backlog_msgs_per_s: float = 500.0
    backlog_burst: float = 100.0
    #: The backlog and resends are paced to keep the cloud's ack within about this long
    #: (protocols/pacing.py), at most half of ``ack_timeout_s``; 0: not paced.
    backlog_target_rtt_s: float = 5.0

    def no_subscribers_backoff(self) -> Backoff | None:
        """The resend schedule of a row the broker dropped (None: the ack timeout's)."""
        if self.no_subscribers_resend_s <= 0:
            return None
        return Backoff(initial_s=self.no_subscribers_resend_s, max_s=self.ack_timeout_s, factor=2.0)

    def pacer(self) -> AckPacer | None:
        """The backlog's pacer (None: not paced)."""
        return AckPacer.for_timeout(
            self.backlog_target_rtt_s, self.ack_timeout_s, maximum=self.max_unacked
        )


class Uplink:
    """The drain state of one connection. Call :meth:`reset` when a connection comes up."""

    def __init__(self, conn: sqlite3.Connection, settings: UplinkSettings, now: float) -> None:
        self._conn = conn
        self.settings = settings
        self.window = UplinkWindow(
            max_publishing=settings.max_publishing,
            max_unacked=settings.max_unacked,
            ack_timeout_s=settings.ack_timeout_s,
            no_subscribers=settings.no_subscribers_backoff(),
            pacer=settings.pacer(),
        )
        self._bucket = TokenBucket(settings.backlog_msgs_per_s, settings.backlog_burst, now)
        self._resend: list[int] = []
        self._urgent: list[int] = []
        #: Urgent rows in flight: resent through the urgent lane, which is not paced.
        self._urgent_sent: set[int] = set()
        #: The resent and backlog rows :meth:`next_rows` last offered (paced when published).
        self._paced_offer: set[int] = set()
        self._acked: list[tuple[int, int]] = []
        self._mark = 0  # rows at or below it were queued before this connection
        self._live_cursor = 0
        self._backlog_cursor = 0
        self.reset(now)

    def reset(self, now: float) -> None:
        """A new connection: everything unacked is sent again, lanes start over."""
        self.flush_acks()
        self.window.reset()
        self._resend = []
        self._urgent_sent.clear()
        self._mark = q.high_water(self._conn)
        self._urgent = q.urgent_seqs(self._conn, self._mark)
        self._live_cursor = self._mark
        self._backlog_cursor = 0
        self._bucket = TokenBucket(
            self.settings.backlog_msgs_per_s, self.settings.backlog_burst, now
        )

    def next_rows(self, now: float) -> list[OutboxRow]:
        """Rows to publish now, at most the window's room. Marks nothing: call
        :meth:`published` for each row actually handed to the broker."""
        room = self.window.room()
        chosen = self._from_resend(self.window.paced_room())
        self._paced_offer = {r.seq for r in chosen}
        for lane in (self._from_urgent, self._from_live):
            if room - len(chosen) <= 0:
                return chosen
            chosen += lane(room - len(chosen))
        paced_room = min(room - len(chosen), self.window.paced_room(len(self._paced_offer)))
        wanted = min(paced_room, self._bucket.available(now))
        if wanted > 0 and self._backlog_cursor < self._mark:
            rows = q.backlog_between(self._conn, self._backlog_cursor, self._mark, wanted)
            # Nothing left below the mark: the backlog lane is done.
            self._backlog_cursor = rows[-1].seq if rows else self._mark
            rows = [r for r in rows if r.seq not in self.window]
            self._bucket.take(len(rows), now)
            self._paced_offer.update(r.seq for r in rows)
            chosen += rows
        return chosen

    def _from_resend(self, limit: int) -> list[OutboxRow]:
        take, self._resend = self._resend[:limit], self._resend[limit:]
        return [r for r in q.rows_by_seq(self._conn, take) if r.seq not in self.window]

    def _from_urgent(self, limit: int) -> list[OutboxRow]:
        take, self._urgent = self._urgent[:limit], self._urgent[limit:]
        return [r for r in q.rows_by_seq(self._conn, take) if r.seq not in self.window]

    def _from_live(self, limit: int) -> list[OutboxRow]:
        rows = q.rows_after(self._conn, self._live_cursor, limit)
        if rows:
            self._live_cursor = rows[-1].seq
        return [r for r in rows if r.seq not in self.window]

    def backlog_wait_s(self, now: float) -> float:
        """How long until the backlog lane may send again (0 when it may now)."""
        if self._backlog_cursor >= self._mark:
            return 0.0
        return self._bucket.wait_s(now)

    def published(self, seq: int, now: float, *, urgent: bool = False) -> None:
        """``seq`` handed to the broker; ``urgent``: a session event, command result or
        decision (if it times out it is resent unpaced, through the urgent lane)."""
        self.window.published(seq, now, paced=seq in self._paced_offer)
        if urgent:
            self._urgent_sent.add(seq)

    def puback(self, seq: int, now: float) -> None:
        self.window.puback(seq, now)

    def dropped(self, seq: int, now: float) -> float | None:
        """The broker dropped ``seq`` (PUBACK 0x10): it is due again after the returned
        seconds, through :meth:`expire` and the resend lane."""
        return self.window.dropped(seq, now)

    def acked(self, ack: Ack, now: float) -> None:
        """Note what the ack (arrived at ``now``) covers; :meth:`flush_acks` deletes it.

        Deletes are batched because each commit is an fsync (``synchronous=FULL``): one per
        ack message would cap the drain at the disk's fsync rate. Rows acked but not yet
        deleted when the agent dies are simply sent again; the cloud drops the duplicates.
        """
        done = self.window.acked(list(ack.ranges), now)
        if self._urgent_sent:
            self._urgent_sent.difference_update(done)
        self._acked.extend(ack.ranges)

    def flush_acks(self) -> int:
        """Delete the acknowledged rows (also rows sent by an earlier run of the agent)."""
        ranges = self.take_acks()
        return q.delete_ranges(self._conn, ranges) if ranges else 0

    def take_acks(self) -> list[tuple[int, int]]:
        """The acknowledged ranges not yet deleted, for a caller that deletes them itself
        (the agent's store writer, so the delete's fsync is off the event loop)."""
        ranges, self._acked = self._acked, []
        return ranges

    @property
    def acks_pending(self) -> int:
        return len(self._acked)

    def expire(self, now: float) -> list[int]:
        """Move due rows (timed out, or dropped by the broker and their backoff over) to the
        resend lane; return their seqs."""
        late = self.window.timed_out(now)
        if late:
            urgent = self._urgent_sent.intersection(late)
            self._urgent_sent -= urgent
            self._urgent = sorted(set(self._urgent) | urgent)
            self._resend = sorted(set(self._resend) | (set(late) - urgent))
        return late
