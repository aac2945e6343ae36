"""The uplink's lanes under the pacer (edge_agent/sync/uplink.py, protocols/pacing.py), on a
real outbox: the backlog and resends wait for the pacer's room, urgent rows never do — not
even when they time out."""

from __future__ import annotations

import sqlite3

from edge_agent.sync.uplink import Uplink, UplinkSettings
from protocols.pacing import INITIAL_WINDOW
from protocols.topics import URGENT_KINDS
from tests.sync.rig import queue_readings, queue_session


def _publish(uplink: Uplink, now: float) -> tuple[int, int]:
    """Publish what the uplink offers now; (urgent rows, other rows)."""
    rows = uplink.next_rows(now)
    for row in rows:
        uplink.published(row.seq, now, urgent=row.kind in URGENT_KINDS)
    urgent = sum(row.kind in URGENT_KINDS for row in rows)
    return urgent, len(rows) - urgent


def test_urgent_rows_pass_the_pacer_and_come_back_unpaced(store: sqlite3.Connection) -> None:
    queue_readings(store, 100)
    queue_session(store, events=3)
    settings = UplinkSettings(ack_timeout_s=10.0, backlog_msgs_per_s=1000, backlog_burst=1000)
    uplink = Uplink(store, settings, now=0.0)
    assert _publish(uplink, 0.0) == (3, INITIAL_WINDOW)  # the events are not paced
    assert _publish(uplink, 0.1) == (0, 0)  # no ack yet: nothing more of the backlog
    late = uplink.expire(10.5)  # nothing acked within the timeout
    assert len(late) == 3 + INITIAL_WINDOW
    # The pacer halved; the events come back through the urgent lane whatever it says.
    assert _publish(uplink, 10.5) == (3, INITIAL_WINDOW // 2)


def test_without_pacing_the_backlog_goes_as_fast_as_the_window_allows(
    store: sqlite3.Connection,
) -> None:
    queue_readings(store, 100)
    settings = UplinkSettings(
        ack_timeout_s=10.0, backlog_msgs_per_s=1000, backlog_burst=1000, backlog_target_rtt_s=0
    )
    uplink = Uplink(store, settings, now=0.0)
    assert _publish(uplink, 0.0) == (0, 100)
