"""A coroutine in an event loop of its own thread, started, awaited and stopped from another.

Why a thread and not a task: an event loop runs one callback at a time, so a job sharing it
waits for every synchronous stretch of its neighbours. In the ingest worker the telemetry
lane plans, acks and publishes a batch of up to ``ingest.batch_max`` messages in stretches
that, on a busy 2-core box, held the loop for 100-360 ms (bench.fleet at 3,000 sites,
measured with a probe sleeping 5 ms on that loop: p99 50-270 ms late); the urgent lane's
command result waited for several of them, one per hop (arrival, each database round trip,
the acks). In a thread of its own it waits only for the interpreter lock, which a waiting
thread gets within the switch interval (5 ms).

The thread's loop owns whatever ``main`` opens (broker link, database pool, Redis client):
those objects belong to the loop that made them, so ``main`` opens and closes them itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def _resolve(
    future: asyncio.Future[Any], value: object = None, error: BaseException | None = None
) -> None:
    """On the caller's loop: settle ``future`` once (a cancelled main is a plain end)."""
    if future.done():
        return
    if error is None or isinstance(error, asyncio.CancelledError):
        future.set_result(value)
    else:
        future.set_exception(error)


class LoopThread(Generic[T]):
    """``main(ready)`` in a new event loop on a thread named ``name``.

    :meth:`start` returns the value ``main`` passes to ``ready`` (or raises what ``main``
    raised before calling it); :meth:`wait` returns when ``main`` ends (raising what it
    raised); :meth:`stop` cancels ``main``, lets it close what it opened, and joins the
    thread. Every call comes from the one loop that called :meth:`start`.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop = asyncio.new_event_loop()
        self._thread: threading.Thread | None = None
        self._task: asyncio.Task[None] | None = None
        self._ended: asyncio.Future[None] | None = None

    async def start(self, main: Callable[[Callable[[T], None]], Coroutine[Any, Any, None]]) -> T:
        caller = asyncio.get_running_loop()
        started: asyncio.Future[T] = caller.create_future()
        ended: asyncio.Future[None] = caller.create_future()
        self._ended = ended

        def tell(future: asyncio.Future[Any], value: object, error: BaseException | None) -> None:
            with contextlib.suppress(RuntimeError):  # the caller's loop is closed: nobody waits
                caller.call_soon_threadsafe(_resolve, future, value, error)

        async def body() -> None:
            try:
                await main(lambda value: tell(started, value, None))
            # Before ready, start() raises what ended main (a failure to open: the database
            # down); after, these settle nothing (started is already done).
            except asyncio.CancelledError:
                tell(started, None, RuntimeError(f"{self._name} was cancelled before it was ready"))
                raise
            except BaseException as exc:
                tell(started, None, exc)
                raise
            else:
                tell(started, None, RuntimeError(f"{self._name} ended before it was ready"))

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            outcome: BaseException | None = None
            try:
                assert self._task is not None
                self._loop.run_until_complete(self._task)
            except BaseException as exc:  # noqa: BLE001 -- handed to the caller's loop
                outcome = exc
            finally:
                # As asyncio.run ends a loop (its async generators, its default executor).
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
                self._loop.run_until_complete(self._loop.shutdown_default_executor())
                self._loop.close()
                tell(ended, None, outcome)

        # Made before the loop runs, so stop() always has a task to cancel.
        self._task = self._loop.create_task(body(), name=self._name)
        self._thread = threading.Thread(target=run, name=self._name, daemon=True)
        self._thread.start()
        try:
            return await asyncio.shield(started)
        except BaseException:
            await self.stop()
            raise

    async def wait(self) -> None:
        """Until ``main`` ends; cancelling the waiter stops it."""
        assert self._ended is not None, "start() first"
        try:
            await asyncio.shield(self._ended)
        except asyncio.CancelledError:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Cancel ``main`` and wait until it has closed what it opened (idempotent)."""
        if self._task is None or self._ended is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop already closed: main has ended
            self._loop.call_soon_threadsafe(self._task.cancel)
        with contextlib.suppress(Exception):  # its failure is wait()'s to report, not stop's
            await asyncio.shield(self._ended)
        if self._thread is not None:
            # The thread settles `ended` as its last act: the join is immediate.
            await asyncio.to_thread(self._thread.join)
