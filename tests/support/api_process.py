"""What the tests of a real API process (:func:`tests.support.bookings_fixtures.serve_api`)
read and reset around it: its JSON log lines and the per-address rate-limit counters."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from redis.asyncio import Redis

from tests.support.cloud_env import REDIS_KEY_PREFIX, REDIS_URL


def log_entries(log_file: Path) -> list[dict[str, Any]]:
    """The JSON lines of ``log_file`` (anything else, e.g. a crash before logging was set
    up, is returned as ``{"raw": line}`` so a test sees it too)."""
    entries: list[dict[str, Any]] = []
    for line in log_file.read_text().splitlines():
        try:
            entries.append(json.loads(line))
        except ValueError:
            entries.append({"raw": line})
    return entries


async def clear_rate_limits() -> None:
    """Every client of these tests is 127.0.0.1: start below the per-address limits."""
    redis = Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in redis.scan_iter(match=REDIS_KEY_PREFIX + "rl:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()
