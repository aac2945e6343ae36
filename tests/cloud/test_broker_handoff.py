"""The hand-off from paho's network thread to the event loop (cloud/broker.py, ``_Handoff``):
every delivery arrives once and in order, the thread waits while the queue is full (never
more than ``queue_max`` in hand), and a closing link lets a waiting thread go."""

from __future__ import annotations

import asyncio
import threading

from cloud.broker import Delivery, _Handoff
from tests.support.sim_device import wait_for

QUEUE_MAX = 8


def _delivery(n: int) -> Delivery:
    return Delivery(topic="t", payload=str(n).encode(), qos=1, mid=n, connection=1)


async def test_every_delivery_arrives_once_in_order_and_the_bound_holds() -> None:
    handoff = _Handoff(asyncio.get_running_loop(), QUEUE_MAX)
    closing = threading.Event()
    count = 3000
    in_hand: list[int] = []

    def produce() -> None:
        for n in range(count):
            handoff.put(_delivery(n), closing)
            # What the thread has handed over and the loop not yet taken.
            in_hand.append(len(handoff._pending) + handoff.queue.qsize())

    thread = threading.Thread(target=produce)
    thread.start()
    got = []
    for n in range(count):
        got.append((await asyncio.wait_for(handoff.queue.get(), 10)).mid)
        if n % 97 == 0:
            await asyncio.sleep(0.01)  # a slow consumer now and then: the thread must wait
    await asyncio.to_thread(thread.join, 10)
    assert got == list(range(count))
    assert max(in_hand) <= QUEUE_MAX
    assert max(in_hand) == QUEUE_MAX  # it did fill up, so the waiting was exercised


async def test_a_thread_waiting_on_a_full_queue_goes_when_the_link_closes() -> None:
    handoff = _Handoff(asyncio.get_running_loop(), 2)
    closing = threading.Event()
    handed: list[int] = []

    def produce() -> None:
        for n in range(5):
            handoff.put(_delivery(n), closing)
            handed.append(n)

    thread = threading.Thread(target=produce)
    thread.start()
    # The loop moves the first two in; the third put waits.
    await wait_for(lambda: len(handed) >= 2 and handoff.queue.qsize() >= 2, timeout_s=10)
    await asyncio.sleep(0.2)
    assert handed == [0, 1]
    closing.set()
    await asyncio.to_thread(thread.join, 10)
    assert not thread.is_alive()
    # The rest were dropped, not queued: unacknowledged, the broker redelivers them.
    assert [handoff.queue.get_nowait().mid for _ in range(handoff.queue.qsize())] == [0, 1]
