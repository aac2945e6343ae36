"""Readiness checks: each dependency answers within a deadline or is reported down."""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from cloud.state import AppState

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0


async def _database(state: AppState) -> str | None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S), state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


async def _redis(state: AppState) -> str | None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await state.redis.ping()
    except (RedisError, OSError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


async def _broker(state: AppState) -> str | None:
    return None if state.broker.connected else "not connected"


async def readiness(state: AppState) -> dict[str, str]:
    """``{"database": "ok", "redis": "ok", "broker": "not connected"}`` and so on."""
    async with asyncio.TaskGroup() as tg:
        tasks = {
            "database": tg.create_task(_database(state), name="ready-database"),
            "redis": tg.create_task(_redis(state), name="ready-redis"),
            "broker": tg.create_task(_broker(state), name="ready-broker"),
        }
    return {name: task.result() or "ok" for name, task in tasks.items()}
