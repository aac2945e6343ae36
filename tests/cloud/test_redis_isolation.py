"""Issue 20, item 5: test runs and benchmarks sharing one Redis never count each other's
attempts. Every key the cloud keeps in Redis starts with ``redis.key_prefix``; each test
run and benchmark process gets its own (tests/support/cloud_env.py ``REDIS_KEY_PREFIX``, which
bench/ builds its settings with), so a claim rate limit used up by an earlier ``make test``
or by a run beside this one does not answer 429 here.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from cloud import ratelimit
from cloud.errors import RateLimited
from cloud.settings import RedisSettings
from protocols.ids import new_ulid
from tests.support.cloud_env import REDIS_KEY_PREFIX, REDIS_URL
from tests.support.market import Api

pytestmark = pytest.mark.integration


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_rate_limit_counts_only_under_its_own_prefix(redis: Redis) -> None:
    mine, theirs = f"cm:t-{new_ulid()}:", f"cm:t-{new_ulid()}:"
    try:
        for _ in range(3):
            await ratelimit.hit(redis, "claim:127.0.0.1", limit=3, window_s=60, prefix=theirs)
        with pytest.raises(RateLimited):
            await ratelimit.hit(redis, "claim:127.0.0.1", limit=3, window_s=60, prefix=theirs)
        # The same client and key under another prefix starts from zero.
        await ratelimit.hit(redis, "claim:127.0.0.1", limit=3, window_s=60, prefix=mine)
        assert int(await redis.get(f"{mine}rl:claim:127.0.0.1") or 0) == 1
        assert int(await redis.get(f"{theirs}rl:claim:127.0.0.1") or 0) == 4
    finally:
        await redis.delete(f"{mine}rl:claim:127.0.0.1", f"{theirs}rl:claim:127.0.0.1")


async def test_a_claim_limit_used_up_by_another_run_does_not_refuse_this_one(
    market_api: Api, redis: Redis
) -> None:
    """What bench.unlock met after the test suite: the claim limit of 127.0.0.1 spent. Here it
    is spent under the shared default prefix and under another run's; this run's claim of a
    wrong code is refused as wrong (403), not as rate-limited (429)."""
    limit = market_api.settings.provisioning.claim_attempts_per_window
    window = market_api.settings.provisioning.claim_window_s
    assert market_api.settings.redis.key_prefix == REDIS_KEY_PREFIX
    others = ("cm:", f"cm:run-{new_ulid()}:")
    keys = [f"{p}rl:claim:{host}" for p in others for host in ("127.0.0.1", "testclient")]
    try:
        for key in keys:
            await redis.set(key, limit * 10, ex=window)
        answer = await market_api.client.post(
            "/devices/claim", json={"code": "ABCDE-12345", "agent_version": "0.1.0"}
        )
        assert answer.status_code == 400, answer.text
        assert answer.json()["type"].endswith("/pairing-code-invalid")
    finally:
        await redis.delete(*keys)


def test_every_run_draws_a_prefix_of_its_own() -> None:
    """48 random bits a process (tests/support/cloud_env.py): two runs, or a benchmark beside a
    test run, do not meet; the settings tests and benchmarks build carry it."""
    assert re.fullmatch(r"cm:run-[0-9a-f]{12}:", REDIS_KEY_PREFIX)
    assert RedisSettings().key_prefix != REDIS_KEY_PREFIX
