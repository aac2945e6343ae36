"""FastAPI dependencies: the app state, a database session per request, and who is calling.

Authorization is decided in two places only: :func:`require_roles` here (may this kind of
user call this route at all) and the services' scoped queries (is this row theirs). A route
never compares ids by hand.

Every bearer token goes through :func:`authenticate`: the JWT is verified, then admitted
against the account's current state (:mod:`cloud.accounts.principals`), so a deleted,
disabled or signed-out account, or a token issued before a password change, is a 401, and
roles are the account's roles now, not the ones the token was issued with.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Role
from cloud.accounts.principals import PrincipalState, admit, load_state
from cloud.accounts.tokens import Principal, verify_access_token
from cloud.errors import Forbidden, Unauthorized
from cloud.state import AppState


async def get_state(request: Request) -> AppState:
    # async although it never awaits: FastAPI runs a plain ``def`` dependency in its thread
    # pool, a thread hop per request (and, with 50 requests at once, a queue for the pool's
    # 40 threads) for one attribute read (bench.payments webhook_p99_ms; docs/decisions.md).
    state = request.app.state.cloud
    assert isinstance(state, AppState)
    return state


State = Annotated[AppState, Depends(get_state)]


async def get_db(state: State) -> AsyncIterator[AsyncSession]:
    """A session whose transaction commits when the handler returns, rolls back on error."""
    async with state.sessions() as session, session.begin():
        yield session


# scope="function": the transaction commits before the answer leaves. FastAPI's default ends
# a yield dependency after the response is sent, so a 201 reached the client before its row
# was committed (a client reading it at once got a 404; a failed commit, a 201 for nothing).
Db = Annotated[AsyncSession, Depends(get_db, scope="function")]

# auto_error=False: a missing header becomes our own 401 problem, not FastAPI's 403.
_bearer = HTTPBearer(auto_error=False, description="An access token from POST /auth/login")


async def authenticate(state: AppState, token: str) -> Principal:
    """The caller holding access token ``token``, as the account stands now; raises
    :class:`Unauthorized` for a bad token and for an account it no longer speaks for."""
    claims = verify_access_token(state.settings.app.secret_key.get_secret_value(), token)

    async def load() -> PrincipalState | None:
        async with state.sessions() as db:
            return await load_state(db, claims.user_id)

    if state.principals is None:
        return admit(claims, await load())
    return admit(claims, await state.principals.get(claims.user_id, load))


async def current_principal(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthorized("an access token is required (Authorization: Bearer …)")
    return await authenticate(state, credentials.credentials)


async def optional_principal(
    state: State,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """The caller if a bearer token came with the request (checked like
    :func:`current_principal`: a revoked one is a 401, not anonymous); None when no
    ``Authorization`` header came at all. A header that is not ``Bearer <token>`` is a 401
    too: a credential the API cannot read is never taken for no credential."""
    if credentials is None:
        if request.headers.get("authorization") is not None:
            raise Unauthorized("the Authorization header must be: Bearer <access token>")
        return None
    return await authenticate(state, credentials.credentials)


CurrentUser = Annotated[Principal, Depends(current_principal)]


def require_roles(*roles: Role) -> Callable[[Principal], Coroutine[Any, Any, Principal]]:
    """A dependency admitting callers holding any of ``roles`` (admins always pass)."""
    allowed = frozenset(roles) | {Role.ADMIN}

    async def check(principal: CurrentUser) -> Principal:
        if not principal.roles & allowed:
            raise Forbidden(f"this needs one of the roles: {', '.join(sorted(allowed))}")
        return principal

    return check


HostUser = Annotated[Principal, Depends(require_roles(Role.HOST))]
AdminUser = Annotated[Principal, Depends(require_roles(Role.ADMIN))]
TechnicianUser = Annotated[Principal, Depends(require_roles(Role.TECHNICIAN))]
