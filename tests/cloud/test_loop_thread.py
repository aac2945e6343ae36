"""cloud/workers/loop_thread.py: a coroutine on its own thread's loop, run from another loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest

from cloud.workers.loop_thread import LoopThread


class Opened:
    """What a main opened and closed, and on which thread."""

    def __init__(self) -> None:
        self.thread: int | None = None
        self.closed = threading.Event()


async def _serving(opened: Opened, ready: Callable[[str], None]) -> None:
    opened.thread = threading.get_ident()
    try:
        ready("open")
        await asyncio.Event().wait()  # until cancelled
    finally:
        await asyncio.sleep(0.05)  # closing takes a moment, on this loop
        opened.closed.set()


async def test_main_runs_on_its_own_thread_and_stop_waits_for_it_to_close() -> None:
    opened = Opened()
    runner = LoopThread[str]("t-serving")
    assert await runner.start(lambda ready: _serving(opened, ready)) == "open"
    assert opened.thread not in (None, threading.get_ident())
    assert not opened.closed.is_set()  # running until stopped
    await runner.stop()
    assert opened.closed.is_set()
    await runner.stop()  # idempotent
    await runner.wait()  # ended: returns at once


async def test_a_failure_before_ready_is_raised_by_start() -> None:
    async def failing(_ready: Callable[[str], None]) -> None:
        raise ConnectionRefusedError("database down")

    runner = LoopThread[str]("t-failing")
    with pytest.raises(ConnectionRefusedError, match="database down"):
        await runner.start(failing)


async def test_a_main_that_ends_before_ready_is_refused() -> None:
    async def quits(_ready: Callable[[str], None]) -> None:
        return

    runner = LoopThread[str]("t-quits")
    with pytest.raises(RuntimeError, match="ended before it was ready"):
        await runner.start(quits)


async def test_a_failure_after_ready_is_raised_by_wait() -> None:
    go = threading.Event()

    async def breaks(ready: Callable[[str], None]) -> None:
        ready("open")
        await asyncio.to_thread(go.wait)
        raise ValueError("lane broke")

    runner = LoopThread[str]("t-breaks")
    await runner.start(breaks)
    go.set()
    with pytest.raises(ValueError, match="lane broke"):
        await runner.wait()
    await runner.stop()


async def test_cancelling_the_waiter_stops_main() -> None:
    opened = Opened()
    runner = LoopThread[str]("t-waited")
    await runner.start(lambda ready: _serving(opened, ready))
    waiter = asyncio.create_task(runner.wait())
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert opened.closed.is_set()
