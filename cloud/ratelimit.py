"""Fixed-window rate limits in Redis, shared by every API instance."""

from __future__ import annotations

from redis.asyncio import Redis

from cloud.errors import RateLimited
from cloud.redis_errors import redis_unavailable


async def hit(redis: Redis, key: str, *, limit: int, window_s: int, prefix: str) -> None:
    """Count one attempt under ``key``; raise :class:`RateLimited` past ``limit`` per window.
    ``prefix``: the deployment's ``redis.key_prefix``.

    Fails closed: without Redis the attempt is refused (a limiter that opens when its store
    is down protects nothing).
    """
    name = f"{prefix}rl:{key}"
    with redis_unavailable():
        async with redis.pipeline(transaction=True) as pipe:
            pipe.incr(name)
            pipe.expire(name, window_s, nx=True)
            pipe.ttl(name)
            count, _, ttl = await pipe.execute()
    if int(count) > limit:
        raise RateLimited(
            f"too many attempts; try again in {max(int(ttl), 1)} s", retry_after_s=max(int(ttl), 1)
        )
