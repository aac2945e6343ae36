"""The fleet simulator paces a backlog as the agent does (protocols/pacing.py): a site back on
the broker publishes only as much of it as timely acks allow, while its live rows go at once.

The site's link is a recorder here: what is published, and when, is the site's own decision.
"""

from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta

from firmware_sim.fleet import FleetConfig, Site
from protocols.enums import MessageKind
from protocols.messages import Ack, encode_message
from protocols.pacing import INITIAL_WINDOW
from protocols.topics import topic


class RecordingLink:
    """What :class:`~firmware_sim.mqtt_wire.MqttLink` offers the pump, recording publishes."""

    closed = False

    def __init__(self) -> None:
        self.published: list[tuple[str, int]] = []
        self._next = 0

    def next_packet_id(self) -> int:
        self._next += 1
        return self._next

    def publish(self, name: str, payload: bytes, packet_id: int) -> None:
        self.published.append((name, packet_id))

    async def drain(self) -> None:
        return None


def _site(target_s: float) -> tuple[Site, RecordingLink]:
    config = FleetConfig(offline_fraction=0.0, session_every_s=0, backlog_target_rtt_s=target_s)
    site = Site("fleet-pace-1", "pw", config, random.Random(1))
    # 100 batches queued while offline (an outage's backlog), then back on a new connection.
    start = datetime.now(UTC) - timedelta(seconds=100)
    for i in range(100):
        site._telemetry(start + timedelta(seconds=i), live=False)
    link = RecordingLink()
    site.link = link  # type: ignore[assignment]
    site.gen = 1
    return site, link


async def _pump_once(site: Site) -> None:
    task = asyncio.create_task(site.pump())
    site._wake.set()
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()


def _ack(site: Site, first: int, last: int) -> None:
    ack = Ack(
        msg_id="01JAAAAAAAAAAAAAAAAAAAAAAA",
        device_id=site.device_id,
        seq=1,
        ts=datetime.now(UTC),
        clock_synced=True,
        ranges=[(first, last)],
    )
    site._on_ack(encode_message(ack))


async def test_a_paced_site_sends_its_backlog_as_fast_as_timely_acks_allow() -> None:
    site, link = _site(5.0)
    await _pump_once(site)
    assert len(link.published) == INITIAL_WINDOW  # slow start, not the whole backlog
    _ack(site, 1, INITIAL_WINDOW)  # acked at once: one more row for each
    await _pump_once(site)
    assert len(link.published) == INITIAL_WINDOW + 2 * INITIAL_WINDOW
    # A live reading goes out whatever the pacer says.
    site._telemetry(datetime.now(UTC), live=True)
    await _pump_once(site)
    assert len(link.published) == 3 * INITIAL_WINDOW + 1
    assert link.published[-1][0] == topic(site.device_id, MessageKind.TELEMETRY)
    assert site.awaiting == 2 * INITIAL_WINDOW  # the live reading is not paced


async def test_a_lost_flight_is_resent_within_the_halved_window() -> None:
    """No ack for the first flight (the broker took it and lost it): when it times out the
    pacer halves and half of it goes again — the rows due leave the pacer's count, as they
    leave the agent's window, instead of holding its room for ever."""
    site, link = _site(5.0)
    await _pump_once(site)
    assert len(link.published) == INITIAL_WINDOW
    for row in site.outbox.values():  # the ack timeout passes
        row.sent_at -= site.config.resend_after_s + 1
    await _pump_once(site)
    assert len(link.published) == INITIAL_WINDOW + INITIAL_WINDOW // 2
    assert site.pacer is not None
    assert site.pacer.window == INITIAL_WINDOW / 2
    assert site.awaiting == INITIAL_WINDOW // 2


async def test_an_unpaced_site_sends_its_whole_backlog_at_once() -> None:
    site, link = _site(0.0)
    await _pump_once(site)
    assert len(link.published) == 100  # the in-flight window (100) is the only bound
