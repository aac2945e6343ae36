"""Alembic environment: runs migrations over the async engine (asyncpg).

The URL comes from the Alembic config (``chargemitra-cloud db`` sets it from the settings);
there is no alembic.ini: the CLI builds the config in code (:mod:`cloud.migrate`).
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from cloud.models import metadata
from cloud.settings import sqlalchemy_url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("sqlalchemy.url is not set on the Alembic config")
    engine = create_async_engine(sqlalchemy_url(url))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise RuntimeError(
        "offline (--sql) migrations are not supported: the telemetry "
        "storage depends on what the server has installed"
    )
asyncio.run(_run_async())
