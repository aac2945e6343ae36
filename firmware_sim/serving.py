"""What the simulator's TCP servers (Modbus TCP, control HTTP) share: their connection tasks.

``asyncio.Server.wait_closed`` on Python 3.11 does not stop the handlers of connections still
open, so a server that must shut down (tests start and stop dozens) cancels its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class ConnectionTasks:
    """The handler tasks of one ``asyncio.Server``."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[object]] = set()
        self._closing = False

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        """Wrap a connection handler's body: the current task is cancelled at close."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            yield
        except asyncio.CancelledError:
            # Our own close() cancelled it: end the handler normally. asyncio.start_server's
            # done-callback on Python 3.11 calls task.exception() on a cancelled handler and
            # logs the CancelledError as "Exception in callback" at every shutdown (3.12 checks
            # task.cancelled() first). Any other cancellation propagates.
            if not self._closing:
                raise
        finally:
            self._tasks.discard(task)

    async def close(self, server: asyncio.Server | None) -> None:
        """Stop listening, cancel every open connection's handler, wait for all of it."""
        self._closing = True
        if server is not None:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if server is not None:
            await server.wait_closed()
