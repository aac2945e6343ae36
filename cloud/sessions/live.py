"""Live updates inside one API process: a :class:`LiveHub` fans channel messages out to the
WebSocket streams and unlock waiters of this process.

Ingest publishes on Redis channels (:mod:`cloud.ingest.live`); every API process holds **one**
Redis pub/sub connection (:class:`RedisLiveHub`), subscribes a channel while at least one local
subscriber wants it, and copies each message into the subscribers' bounded queues. Without
Redis (tests, a single-process setup) :class:`MemoryLiveHub` does the same for messages
published in-process. A slow subscriber loses its oldest messages, never blocks the others:
live values are superseded by the next one anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from cloud.errors import DependencyUnavailable
from cloud.jobs import supervise
from cloud.redis_errors import redis_unavailable
from protocols.backoff import Backoff

log = logging.getLogger(__name__)

#: Messages a subscriber may fall behind before its oldest are dropped.
QUEUE_MAX = 256
#: A channel nobody publishes to, subscribed at start so the pub/sub connection exists.
HUB_CHANNEL = "cm:live:hub"
#: The reader retries a failing Redis after about 0.1 s, doubling up to 5 s (equal jitter).
_RECONNECT = Backoff(initial_s=0.1, max_s=5.0)


def cmd_channel(cmd_id: str) -> str:
    """Where ingest announces the result of command ``cmd_id`` (mirrors cloud.ingest.live)."""
    return f"cm:live:cmd:{cmd_id}"


class Subscription:
    """What one subscriber receives: ``(channel, text)`` pairs, oldest first."""

    def __init__(self, channels: frozenset[str]) -> None:
        self.channels = channels
        self._queue: asyncio.Queue[tuple[str, str]] = asyncio.Queue(QUEUE_MAX)
        self.dropped = 0

    def deliver(self, channel: str, text: str) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self.dropped += 1
        self._queue.put_nowait((channel, text))

    async def get(self) -> tuple[str, str]:
        return await self._queue.get()


class LiveHub(Protocol):
    def subscribe(self, *channels: str) -> contextlib.AbstractAsyncContextManager[Subscription]:
        """Receive what is published on ``channels`` while the block runs."""
        ...

    async def publish(self, channel: str, text: str) -> None:
        """Publish ``text`` on ``channel`` (best effort)."""
        ...


class _Fanout:
    """Local subscribers by channel (shared by both hubs)."""

    def __init__(self) -> None:
        self.by_channel: dict[str, set[Subscription]] = {}

    def add(self, sub: Subscription) -> list[str]:
        """Register ``sub``; return the channels that had no subscriber before."""
        new = []
        for channel in sub.channels:
            subs = self.by_channel.setdefault(channel, set())
            if not subs:
                new.append(channel)
            subs.add(sub)
        return new

    def remove(self, sub: Subscription) -> list[str]:
        """Unregister ``sub``; return the channels left without a subscriber."""
        gone = []
        for channel in sub.channels:
            subs = self.by_channel.get(channel)
            if subs is None:
                continue
            subs.discard(sub)
            if not subs:
                del self.by_channel[channel]
                gone.append(channel)
        return gone

    def deliver(self, channel: str, text: str) -> None:
        for sub in list(self.by_channel.get(channel, ())):
            sub.deliver(channel, text)


class MemoryLiveHub:
    """In-process fan-out: what :meth:`publish` sends reaches this process's subscribers."""

    def __init__(self) -> None:
        self._fanout = _Fanout()

    @asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[Subscription]:
        sub = Subscription(frozenset(channels))
        self._fanout.add(sub)
        try:
            yield sub
        finally:
            self._fanout.remove(sub)

    async def publish(self, channel: str, text: str) -> None:
        self._fanout.deliver(channel, text)


class RedisLiveHub:
    """One Redis pub/sub connection per process, fanned out locally.

    Use as an async context manager (the reader task lives inside it). Redis being down
    never fails a subscriber: it logs once, reconnects with backoff, and redis-py subscribes
    the channels again on reconnect.
    """

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pubsub: PubSub | None = None
        self._fanout = _Fanout()
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._failing = False

    async def __aenter__(self) -> RedisLiveHub:
        self._pubsub = self._redis.pubsub()
        try:
            with redis_unavailable():
                await self._pubsub.subscribe(HUB_CHANNEL)
        except DependencyUnavailable as exc:
            # Not fatal: the reader keeps retrying; live streams start when Redis answers.
            log.error("live hub: Redis unavailable at start: %s", exc)
            self._failing = True
        # Supervised (cloud/jobs.py): a failure no handler below foresaw must not end the
        # reader, or every live stream of this process would go quiet for good.
        self._reader = asyncio.create_task(
            supervise("live-hub", self._read), name="live-hub-reader"
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(DependencyUnavailable), redis_unavailable():
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py

    async def _read(self) -> None:
        assert self._pubsub is not None
        failures = 0
        while True:
            try:
                with redis_unavailable():
                    if self._pubsub.connection is None:
                        await self._pubsub.subscribe(HUB_CHANNEL)
                    message = await self._pubsub.get_message(
                        ignore_subscribe_messages=True, timeout=1.0
                    )
            except DependencyUnavailable as exc:
                if not self._failing:
                    log.error("live hub: Redis pub/sub failing: %s", exc)
                    self._failing = True
                await asyncio.sleep(_RECONNECT.delay_s(failures))
                failures += 1
                continue
            if self._failing:
                log.info("live hub: Redis pub/sub recovered")
                self._failing = False
            failures = 0
            if message is None or message.get("type") != "message":
                continue
            channel, data = message["channel"], message["data"]
            self._fanout.deliver(
                channel.decode() if isinstance(channel, bytes) else str(channel),
                data.decode() if isinstance(data, bytes) else str(data),
            )

    @asynccontextmanager
    async def subscribe(self, *channels: str) -> AsyncIterator[Subscription]:
        assert self._pubsub is not None, "use RedisLiveHub as an async context manager"
        sub = Subscription(frozenset(channels))
        async with self._lock:
            new = self._fanout.add(sub)
            if new:
                await self._redis_call(self._pubsub.subscribe, new)
        try:
            yield sub
        finally:
            async with self._lock:
                gone = self._fanout.remove(sub)
                if gone:
                    await self._redis_call(self._pubsub.unsubscribe, gone)

    async def _redis_call(self, method: object, channels: list[str]) -> None:
        try:
            with redis_unavailable():
                await method(*channels)  # type: ignore[operator]  # redis-py's untyped pub/sub
        except DependencyUnavailable as exc:
            # The reader reconnects and redis-py re-subscribes what it holds; a subscriber
            # simply sees nothing until then (live values are best effort).
            log.warning("live hub: (un)subscribe failed: %s", exc)

    async def publish(self, channel: str, text: str) -> None:
        try:
            with redis_unavailable():
                await self._redis.publish(channel, text)
        except DependencyUnavailable as exc:
            log.warning("live hub: publish failed: %s", exc)
