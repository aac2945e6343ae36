"""The one place :mod:`cloud` catches SQLAlchemy's errors (the translation boundary for
PostgreSQL through SQLAlchemy; asyncpg's own, on the COPY paths, are named in cloud/pg.py).

A refusal with an SQLSTATE (a unique or exclusion violation, a deadlock) becomes
:class:`~cloud.errors.DatabaseRefused`, which services turn into their own errors
(``Conflict``, ``BookingOverlap``, a retry). Anything else SQLAlchemy raises (a lost
connection, a bug in a query) passes through untranslated to the app's 500 handler, as it
does from every query outside such a block. ``tests/cloud/test_error_boundaries.py`` fails
when a module elsewhere names a SQLAlchemy error.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from cloud.errors import DatabaseRefused

log = logging.getLogger(__name__)

#: SQLSTATEs (PostgreSQL appendix A) the services act on.
UNIQUE_VIOLATION = "23505"
EXCLUSION_VIOLATION = "23P01"
DEADLOCK_DETECTED = "40P01"
SERIALIZATION_FAILURE = "40001"
RETRYABLE_STATES = frozenset({DEADLOCK_DETECTED, SERIALIZATION_FAILURE})

#: The database's failures, for a job supervisor's ``expected`` (cloud/jobs.py): logged
#: without a traceback, and backed off.
DATABASE_ERRORS: tuple[type[Exception], ...] = (SQLAlchemyError, DatabaseRefused)


def _sqlstate(exc: DBAPIError) -> str | None:
    # SQLAlchemy's asyncpg adapter copies asyncpg's sqlstate onto the error it raises.
    state = getattr(exc.orig, "sqlstate", None)
    return state if isinstance(state, str) else None


def _constraint(exc: DBAPIError) -> str | None:
    # The adapter raises its error from asyncpg's, which carries the constraint's name.
    name = getattr(exc.orig, "constraint_name", None) or getattr(
        getattr(exc.orig, "__cause__", None), "constraint_name", None
    )
    return name if isinstance(name, str) else None


@contextmanager
def refusals() -> Iterator[None]:
    """Run statements (awaited inside the block); PostgreSQL's refusal of one is raised as
    :class:`DatabaseRefused` with the original as its cause."""
    try:
        yield
    except DBAPIError as exc:
        state = _sqlstate(exc)
        if state is None:
            raise
        raise DatabaseRefused(state, _constraint(exc), str(exc.orig)) from exc


_T = TypeVar("_T")


async def once_more_if_disconnected(read: Callable[[], Awaitable[_T]]) -> _T:
    """Run ``read``; if it failed because its pooled connection was dead (the server
    restarted, or ended that backend), run it once more: SQLAlchemy has dropped that
    connection, so the second try opens or takes another. For reads only (engines without a
    ping on checkout, cloud/db.py ``open_reader``): a write may have happened before the
    connection went. A second failure, or any other, is raised."""
    try:
        return await read()
    except DBAPIError as exc:
        if not exc.connection_invalidated:
            raise
        log.warning("a read's connection was gone, reading again on another: %s", exc.orig)
    return await read()


def is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` is the database's failure rather than the caller's (a job that also
    runs other work keeps the two apart: the database's fails the round)."""
    return isinstance(exc, DATABASE_ERRORS)
