"""``chargemitra-cloud serve`` as a real process with extra settings, and its log.

:func:`tests.cloud.bookings_fixtures.serve_api` runs the API with the settings of a test;
the hardening tests also need settings it does not pass (trusted proxies, the log level)
and the process's log lines, so this launcher takes extra ``CHARGEMITRA_*`` variables.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from redis.asyncio import Redis

from cloud.settings import Settings
from tests.cloud.bookings_fixtures import api_env
from tests.cloud.conftest import REDIS_URL
from tests.cloud.mosquitto import free_port


@asynccontextmanager
async def api_process(settings: Settings, log_file: Path, **extra_env: str) -> AsyncIterator[str]:
    """The API on a free loopback port (its stdout and stderr into ``log_file``); yields its
    base URL once ``/healthz`` answers, and stops it on exit."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHARGEMITRA_")}
    env |= api_env(settings) | extra_env
    cli = Path(sys.executable).with_name("chargemitra-cloud")
    base_url = f"http://127.0.0.1:{port}"
    with log_file.open("ab") as log:
        proc = await asyncio.create_subprocess_exec(
            str(cli), "serve", "--host", "127.0.0.1", "--port", str(port),
            env=env, stdout=log, stderr=log,
        )  # fmt: skip
    try:
        async with httpx.AsyncClient(base_url=base_url) as probe, asyncio.timeout(30):
            while True:
                if proc.returncode is not None:
                    raise RuntimeError(f"the API exited with {proc.returncode}: see {log_file}")
                try:
                    if (await probe.get("/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        yield base_url
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


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
        keys = [key async for key in redis.scan_iter(match="cm:rl:*")]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()
