"""The one place :mod:`cloud` catches redis-py's errors (the translation boundary for Redis).

redis-py raises :class:`~redis.exceptions.RedisError` subclasses for protocol and server
failures, and the socket's :class:`OSError` (a refused or reset connection) passes through it
unwrapped. Both mean the same to a caller — Redis did not do what was asked — so both become
:class:`~cloud.errors.DependencyUnavailable` ("redis"), a 503 when it reaches a request.
Callers for whom Redis is best effort (live streams) catch that, not redis-py's types;
``tests/cloud/test_error_boundaries.py`` fails when a module elsewhere names a redis-py error.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import RedisError

from cloud.errors import DependencyUnavailable

#: What the boundary translates: every redis-py error, and the socket's own.
TRANSLATED: tuple[type[Exception], ...] = (RedisError, OSError)


@contextmanager
def redis_unavailable() -> Iterator[None]:
    """Run Redis calls (awaited inside the block); their failure is raised as
    :class:`DependencyUnavailable` with the original as its cause."""
    try:
        yield
    except (RedisError, OSError) as exc:
        raise DependencyUnavailable("redis", str(exc)) from exc
