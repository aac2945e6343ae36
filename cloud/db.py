"""Database plumbing: the declarative base and the async engine as a context manager.

Nothing is built at import time; the composition roots (:mod:`cloud.app`, the workers)
open the engine with :func:`open_engine` and close it on the way out.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime

from sqlalchemy import DateTime, MetaData, func
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cloud.settings import DbSettings, sqlalchemy_url

# Deterministic constraint names, so Alembic migrations can drop what they created.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Timestamped:
    """``created_at``/``updated_at`` set by the database, in UTC."""

    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), onupdate=func.now()
    )


@asynccontextmanager
async def open_engine(settings: DbSettings) -> AsyncIterator[AsyncEngine]:
    """An async engine on asyncpg for the lifetime of the block."""
    engine = create_async_engine(
        sqlalchemy_url(settings.url),
        pool_size=settings.pool_size,
        pool_pre_ping=True,
        connect_args={"timeout": settings.connect_timeout_s},
    )
    try:
        yield engine
    finally:
        await engine.dispose()


@asynccontextmanager
async def open_reader(
    settings: DbSettings, *, server_settings: Mapping[str, str]
) -> AsyncIterator[AsyncEngine]:
    """An engine for reads of one statement each, at one round trip per read.

    A one-statement request on :func:`open_engine`'s sessions costs seven: the ping when the
    connection leaves the pool (BEGIN, ``;`` prepared and run, ROLLBACK), then BEGIN, the
    statement and COMMIT — and on a busy box every round trip waits for the server and then
    the caller to be scheduled again (issue 21: searches while a fleet ingests). Here
    the connections are in autocommit (no BEGIN or COMMIT) and not pinged: a connection the
    server has closed fails the read itself, and the caller runs it once more
    (:func:`cloud.db_errors.once_more_if_disconnected`). ``server_settings`` are set on every
    connection (asyncpg sends them at connect: no round trip either), so the engine's pool
    must serve nothing but the reads they were chosen for.
    """
    engine = create_async_engine(
        sqlalchemy_url(settings.url),
        pool_size=settings.pool_size,
        max_overflow=10,  # SQLAlchemy's default, as open_engine's: a peak, closed after use
        isolation_level="AUTOCOMMIT",
        connect_args={
            "timeout": settings.connect_timeout_s,
            "server_settings": dict(server_settings),
        },
    )
    try:
        yield engine
    finally:
        await engine.dispose()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
