"""Readiness checks: each dependency answers within a deadline or is reported down."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import text

from cloud.db_errors import is_database_error
from cloud.errors import DependencyUnavailable
from cloud.redis_errors import redis_unavailable
from cloud.state import AppState

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 2.0


async def _database(state: AppState) -> str | None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S), state.engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
    except Exception as exc:
        if not (is_database_error(exc) or isinstance(exc, OSError | TimeoutError)):
            raise
        return f"{type(exc).__name__}: {exc}"[:200]
    return None


async def _redis(state: AppState) -> str | None:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            with redis_unavailable():
                await state.redis.ping()
    except (DependencyUnavailable, TimeoutError) as exc:
        # The report names redis-py's error, as the database's names SQLAlchemy's.
        cause = exc.__cause__ if isinstance(exc, DependencyUnavailable) else exc
        return f"{type(cause).__name__}: {cause}"[:200]
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
