"""Cookie sessions for the pages, over the accounts' own tokens.

A signed-in browser holds one cookie, ``cm_session``: 256 random bits (HttpOnly, SameSite=Lax,
Secure outside development). The token pair the accounts service issued at sign-in stays
server-side, in Redis under the SHA-256 of the cookie (``cm:web:session:<hash>``), so the
cookie alone is worthless once the session is deleted and nothing in it can be read or
forged. Each request:

1. the stored access token is checked like a bearer token (:func:`cloud.deps.authenticate`:
   account still there, not disabled, token version current, roles as they are now);
2. when it has expired (or was issued before a change of the account), the stored refresh
   token is rotated by :func:`cloud.accounts.service.refresh`, the one rotation rule, and
   the new pair replaces the old; a refused refresh (revoked, reused, disabled account) ends
   the web session.

Signing out revokes the refresh token's family (:func:`cloud.accounts.service.logout`) and
deletes the session. "Sign out everywhere", a password change, a disabled account: all end
web sessions too, because they revoke the tokens the session holds.

CSRF: every form carries a token, HMAC-SHA256 (``app.secret_key``) of the visitor's
``cm_csrf`` cookie (a random nonce given on the first page) and the session's hash, checked
on every POST (:func:`check_csrf`). A token minted before sign-in is not valid after it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from cloud.accounts import service
from cloud.accounts.schemas import TokenPair
from cloud.accounts.tokens import Principal, verify_access_token
from cloud.constant_time import same
from cloud.deps import authenticate
from cloud.errors import Forbidden, Unauthorized
from cloud.redis_errors import redis_unavailable
from cloud.settings import Environment, Settings
from cloud.state import AppState

SESSION_COOKIE = "cm_session"
CSRF_COOKIE = "cm_csrf"
#: The hidden form field holding the CSRF token.
CSRF_FIELD = "csrf"
SESSION_KEY_PREFIX = "cm:web:session:"
COOKIE_BYTES = 32


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class WebSession:
    """What Redis holds for one signed-in browser."""

    #: SHA-256 of the cookie: the Redis key's tail, and what CSRF tokens are bound to.
    key: str
    user_id: str
    access_token: str
    refresh_token: str


def cookie_secure(settings: Settings) -> bool:
    """Cookies are Secure everywhere but development (plain-http loopback)."""
    return settings.app.env is not Environment.DEVELOPMENT


class WebSessions:
    """The Redis store of web sessions; every entry expires with its refresh token."""

    def __init__(self, redis: Redis, *, ttl_s: int, prefix: str = "cm:") -> None:
        self.redis = redis
        self.ttl_s = ttl_s
        #: The deployment's ``redis.key_prefix`` before SESSION_KEY_PREFIX's ``web:session:``.
        self.key_prefix = prefix + SESSION_KEY_PREFIX.removeprefix("cm:")

    async def _put(self, session: WebSession) -> None:
        with redis_unavailable():
            await self.redis.set(
                self.key_prefix + session.key, json.dumps(asdict(session)), ex=self.ttl_s
            )

    async def start(self, user_id: str, tokens: TokenPair) -> tuple[str, WebSession]:
        """A new session for a fresh sign-in; returns the cookie value and the session."""
        cookie = secrets.token_urlsafe(COOKIE_BYTES)
        session = WebSession(_digest(cookie), user_id, tokens.access_token, tokens.refresh_token)
        await self._put(session)
        return cookie, session

    async def get(self, cookie: str) -> WebSession | None:
        with redis_unavailable():
            raw = await self.redis.get(self.key_prefix + _digest(cookie))
        if raw is None:
            return None
        return WebSession(**json.loads(raw))

    async def replace_tokens(self, session: WebSession, tokens: TokenPair) -> WebSession:
        renewed = WebSession(
            session.key, session.user_id, tokens.access_token, tokens.refresh_token
        )
        await self._put(renewed)
        return renewed

    async def end(self, session: WebSession) -> None:
        with redis_unavailable():
            await self.redis.delete(self.key_prefix + session.key)


def sessions_of(state: AppState) -> WebSessions:
    return WebSessions(
        state.redis,
        ttl_s=state.settings.auth.refresh_ttl_s,
        prefix=state.settings.redis.key_prefix,
    )


async def sign_in(state: AppState, tokens: TokenPair) -> tuple[str, WebSession]:
    """Start a web session holding ``tokens`` (just issued by the accounts service)."""
    claims = verify_access_token(
        state.settings.app.secret_key.get_secret_value(), tokens.access_token
    )
    return await sessions_of(state).start(claims.user_id, tokens)


async def resume(state: AppState, cookie: str) -> tuple[Principal, WebSession] | None:
    """The signed-in caller behind ``cookie``, refreshing the stored pair when its access
    token no longer stands; None (and the session deleted) when it cannot be renewed."""
    store = sessions_of(state)
    session = await store.get(cookie)
    if session is None:
        return None
    try:
        return await authenticate(state, session.access_token), session
    except Unauthorized:
        pass
    # Our own transaction, as POST /auth/refresh: a revocation of a reused family must
    # commit even though the answer is "signed out".
    async with state.sessions() as db, db.begin():
        tokens = await service.refresh(
            db, state.settings, token=session.refresh_token, now=datetime.now(UTC)
        )
    if tokens is None:
        await store.end(session)
        return None
    session = await store.replace_tokens(session, tokens)
    try:
        return await authenticate(state, session.access_token), session
    except Unauthorized:
        await store.end(session)
        return None


async def sign_out(state: AppState, session: WebSession) -> None:
    async with state.sessions() as db, db.begin():
        await service.logout(db, token=session.refresh_token, now=datetime.now(UTC))
    await sessions_of(state).end(session)


def new_csrf_nonce() -> str:
    return secrets.token_urlsafe(COOKIE_BYTES)


def csrf_token(secret_key: str, nonce: str, session: WebSession | None) -> str:
    """The form token for the visitor holding ``nonce`` (and ``session``, once signed in)."""
    bound = f"{nonce}|{session.key if session else ''}"
    return hmac.new(secret_key.encode(), bound.encode(), hashlib.sha256).hexdigest()


def check_csrf(
    secret_key: str, nonce: str | None, session: WebSession | None, token: str | None
) -> None:
    """403 unless ``token`` is this visitor's form token."""
    if not nonce or not token:
        raise Forbidden("the form's CSRF token is missing: reload the page and try again")
    if not same(csrf_token(secret_key, nonce, session), token):
        raise Forbidden("the form's CSRF token is wrong: reload the page and try again")
