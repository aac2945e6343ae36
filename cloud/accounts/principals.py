"""Who the caller is *now*: an access token is admitted against the account's current state.

A JWT proves only what was true when it was issued. Before any route sees a caller, the
token's claims are checked against the account as it is now (:func:`admit`, a pure
function): the account must still exist and not be disabled, the token's ``ver`` must equal
``users.token_version``, and the caller's roles are the ones in ``user_roles`` now — the
token's ``roles`` claim is not trusted. Refusals are :class:`~cloud.errors.Unauthorized`
(401 problem documents; 4401 on a WebSocket).

**Caching, and why a change still takes effect at once.** The state (version, disabled,
roles; :class:`PrincipalState`) is read from PostgreSQL and cached in each API process for
at most ``auth.principal_cache_s`` (:class:`PrincipalCache`). Triggers on ``users`` and
``user_roles`` (migration 0007) send ``NOTIFY cm_principal, '<user id>'`` at commit for every
change, made by the application or by hand in ``psql``; every API instance holds one
``LISTEN`` connection and drops that user's entry when the notification arrives. While the
listening connection is down (PostgreSQL restarted, network cut), the cache is emptied and
not used: every request reads the database until it is back. So the cache saves the lookup
on nearly every request without ever serving a state older than the last notification it
could have missed. Redis was not used: a Redis round trip costs about what the primary-key
lookup it would save costs, and only PostgreSQL sees every change, including hand edits.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Protocol, Self

import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no stubs or py.typed
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Role, User, UserRole
from cloud.accounts.tokens import Principal
from cloud.errors import Unauthorized
from cloud.settings import DbSettings, asyncpg_dsn
from protocols.backoff import Backoff

log = logging.getLogger(__name__)

#: The channel migration 0007's triggers notify, with the user id as payload.
CHANNEL = "cm_principal"
#: The listening connection's name in ``pg_stat_activity``.
LISTENER_NAME = "chargemitra-principal-listener"
#: The listening connection is probed this often, so a silently dead one is noticed.
KEEPALIVE_S = 15.0
#: Cached users per process; past this the cache starts over (a bound, not an LRU).
MAX_ENTRIES = 100_000
#: Reconnects wait about 0.5 s, doubling up to 30 s (equal jitter).
_BACKOFF = Backoff(initial_s=0.5, max_s=30.0)


@dataclass(frozen=True, slots=True)
class PrincipalState:
    """What decides a user's access now: one ``users`` row and its ``user_roles``."""

    token_version: int
    disabled: bool
    roles: frozenset[Role]


def admit(claims: Principal, state: PrincipalState | None) -> Principal:
    """The caller as of ``state``; :class:`Unauthorized` if the token no longer stands.

    ``state`` None means the account was deleted."""
    if state is None:
        raise Unauthorized("the account no longer exists")
    if state.disabled:
        raise Unauthorized("the account is disabled")
    if claims.token_version != state.token_version:
        raise Unauthorized(
            "the access token was revoked (password change, sign-out everywhere or account "
            "change); refresh it or log in again"
        )
    return Principal(
        user_id=claims.user_id,
        roles=state.roles,
        token_id=claims.token_id,
        token_version=claims.token_version,
    )


async def load_state(db: AsyncSession, user_id: str) -> PrincipalState | None:
    """The user's current state, or None if there is no such user."""
    row = (
        await db.execute(select(User.token_version, User.disabled_at).where(User.id == user_id))
    ).first()
    if row is None:
        return None
    roles = await db.scalars(select(UserRole.role).where(UserRole.user_id == user_id))
    return PrincipalState(
        token_version=row.token_version,
        disabled=row.disabled_at is not None,
        roles=frozenset(roles),
    )


class _ListenConnection(Protocol):
    """The part of ``asyncpg.Connection`` the listener uses (asyncpg is untyped)."""

    async def add_listener(self, channel: str, callback: Callable[..., object]) -> None: ...

    def add_termination_listener(self, callback: Callable[..., object]) -> None: ...

    async def fetchval(self, query: str, *args: object) -> Any: ...

    async def close(self) -> None: ...

    def terminate(self) -> None: ...


class PrincipalCache:
    """Per-process cache of :class:`PrincipalState`, emptied by PostgreSQL notifications.

    An async context manager: entering opens the ``LISTEN`` connection (and fails if it
    cannot, like the engine), then a supervisor task keeps it alive with reconnects (backoff
    with jitter). ``ttl_s`` 0 turns caching off: every lookup reads the database.
    """

    def __init__(
        self,
        settings: DbSettings,
        *,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, tuple[float, PrincipalState | None]] = {}
        #: Bumped by every invalidation: a lookup that raced one does not store its result.
        self._generation = 0
        self._conn: _ListenConnection | None = None
        self._lost = asyncio.Event()
        self._supervisor: asyncio.Task[None] | None = None
        self._watchers: dict[str, set[asyncio.Event]] = {}

    @property
    def live(self) -> bool:
        """True while notifications can arrive (only then is anything cached)."""
        return self._conn is not None

    async def __aenter__(self) -> Self:
        if self._ttl_s > 0:
            await self._connect()
            self._supervisor = asyncio.create_task(self._supervise(), name="principal-listener")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._supervisor is not None:
            self._supervisor.cancel()
            # wait() does not raise the supervisor's CancelledError into this task.
            await asyncio.wait({self._supervisor})
        await self._disconnect()

    async def get(
        self, user_id: str, load: Callable[[], Awaitable[PrincipalState | None]]
    ) -> PrincipalState | None:
        """The cached state of ``user_id``, or ``load()``'s answer (cached if still fresh)."""
        now = self._clock()
        if self.live:
            hit = self._entries.get(user_id)
            if hit is not None and hit[0] > now:
                return hit[1]
        generation = self._generation
        state = await load()
        # An invalidation while loading may have been for this very change: drop the answer.
        if self.live and generation == self._generation:
            if len(self._entries) >= MAX_ENTRIES:
                self._entries.clear()
            self._entries[user_id] = (now + self._ttl_s, state)
        return state

    @contextmanager
    def watch(self, user_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``user_id``'s state may have changed (long-lived streams
        re-check on it); also set when the listening connection is lost."""
        event = asyncio.Event()
        self._watchers.setdefault(user_id, set()).add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(user_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[user_id]

    def invalidate(self, user_id: str) -> None:
        self._generation += 1
        self._entries.pop(user_id, None)
        for event in self._watchers.get(user_id, ()):
            event.set()

    def _invalidate_all(self) -> None:
        self._generation += 1
        self._entries.clear()
        for watchers in self._watchers.values():
            for event in watchers:
                event.set()

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.invalidate(payload)

    def _on_terminated(self, _conn: object) -> None:
        self._lost.set()

    async def _connect(self) -> None:
        conn: _ListenConnection = await asyncpg.connect(
            asyncpg_dsn(self._settings.url),
            timeout=self._settings.connect_timeout_s,
            server_settings={"application_name": LISTENER_NAME},
        )
        try:
            conn.add_termination_listener(self._on_terminated)
            await conn.add_listener(CHANNEL, self._on_notify)
        except BaseException:
            conn.terminate()
            raise
        # Anything cached before this point may have missed a notification.
        self._invalidate_all()
        self._lost.clear()
        self._conn = conn

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._invalidate_all()
        if conn is not None:
            try:
                async with asyncio.timeout(2):
                    await conn.close()
            except Exception:  # noqa: BLE001 -- a broken connection is what we are dropping
                conn.terminate()

    async def _supervise(self) -> None:
        # Its own loop, not cloud.jobs.supervise: a reconnect resets the backoff at once, and
        # only the loss of a live connection is logged (not every try while the database is
        # down). The backoff is the shared rule (protocols.backoff).
        failures = 0
        while True:
            try:
                if self._conn is None:
                    await self._connect()
                    log.info("principal listener reconnected")
                    failures = 0
                try:
                    async with asyncio.timeout(KEEPALIVE_S):
                        await self._lost.wait()
                except TimeoutError:
                    async with asyncio.timeout(KEEPALIVE_S):
                        assert self._conn is not None
                        await self._conn.fetchval("SELECT 1")
                    continue
                raise ConnectionError("the listening connection was closed")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- the supervisor outlives any failure
                if self._conn is not None:
                    log.warning(
                        "principal listener lost; reading the database on every request: %r",
                        exc,
                    )
                await self._disconnect()
                await asyncio.sleep(_BACKOFF.delay_s(failures))
                failures += 1
