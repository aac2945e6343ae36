"""asyncpg, for the paths that need COPY (ingest, benchmarks): a typed view and the pool.

asyncpg ships no type information; :class:`PgConnection` is the part of
``asyncpg.Connection`` we use, so the rest of the code is checked by mypy. asyncpg errors
that mean "try again" are named here once (:data:`RETRYABLE`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, Protocol

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no stubs or py.typed

from cloud.settings import DbSettings, asyncpg_dsn


class PgRecord(Protocol):
    def __getitem__(self, key: int | str, /) -> Any: ...


class PgConnection(Protocol):
    async def execute(self, query: str, *args: object) -> str: ...

    async def fetch(self, query: str, *args: object) -> list[PgRecord]: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...

    async def copy_records_to_table(
        self,
        table_name: str,
        *,
        records: Iterable[Sequence[object]],
        columns: Sequence[str],
    ) -> str: ...

    def transaction(self) -> AbstractAsyncContextManager[Any]: ...


class PgPool(Protocol):
    def acquire(self) -> AbstractAsyncContextManager[PgConnection]: ...


#: Errors after which the same transaction may succeed if simply run again.
RETRYABLE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.CannotConnectNowError,
    ConnectionError,
    OSError,
)


async def connect(
    settings: DbSettings, *, server_settings: Mapping[str, str] | None = None
) -> PgConnection:
    """A connection; ``server_settings`` are set on it at connect (no round trip)."""
    conn: PgConnection = await asyncpg.connect(
        asyncpg_dsn(settings.url),
        timeout=settings.connect_timeout_s,
        server_settings=None if server_settings is None else dict(server_settings),
    )
    return conn


async def close(conn: PgConnection) -> None:
    await conn.close()  # type: ignore[attr-defined]  # not part of the Protocol on purpose


@asynccontextmanager
async def open_pool(
    settings: DbSettings,
    *,
    max_size: int,
    init: Callable[[PgConnection], Awaitable[None]] | None = None,
) -> AsyncIterator[PgPool]:
    pool = await asyncpg.create_pool(
        asyncpg_dsn(settings.url),
        min_size=1,
        max_size=max_size,
        init=init,
        timeout=settings.connect_timeout_s,
    )
    try:
        yield pool
    finally:
        await pool.close()


#: Constraint violations callers translate into CloudErrors (e.g. BookingOverlap).
ExclusionViolation: type[Exception] = asyncpg.exceptions.ExclusionViolationError
CheckViolation: type[Exception] = asyncpg.exceptions.CheckViolationError
UniqueViolation: type[Exception] = asyncpg.exceptions.UniqueViolationError
#: Concurrent inserts into an exclusion constraint can abort one side with a deadlock
#: instead of a violation (each waits on the other's tentative row): retry, then it conflicts.
DeadlockDetected: type[Exception] = asyncpg.exceptions.DeadlockDetectedError
#: Errors that writing the same data again can never fix (a value PostgreSQL cannot store,
#: such as a NUL character in text or an out-of-range integer): the message is at fault.
UNWRITABLE: tuple[type[BaseException], ...] = (
    asyncpg.exceptions.DataError,
    asyncpg.exceptions.IntegrityConstraintViolationError,
    asyncpg.exceptions.ProgramLimitExceededError,
)
