"""``/auth/*`` (register, login, refresh, logout, phone one-time codes) and ``/me``.

Login and the one-time-code routes are rate-limited per identity (email or number) and per
client address (:mod:`cloud.ratelimit`, 429 with ``Retry-After``); registration per client
address. The limits are checked before any database work, so a limited answer says nothing
about the account either.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cloud import ratelimit
from cloud.accounts import service
from cloud.accounts.otp import OtpStore, otp_message
from cloud.accounts.schemas import (
    LoginRequest,
    LogoutRequest,
    Me,
    MeUpdate,
    OtpRequest,
    OtpSent,
    OtpVerifyRequest,
    RefreshRequest,
    Registered,
    RegisterRequest,
    TokenPair,
)
from cloud.accounts.sms import SmsSender, configured_sms_sender
from cloud.deps import CurrentUser, Db, State, authenticate
from cloud.errors import DependencyUnavailable, Unauthorized
from cloud.openapi import problems

router = APIRouter(tags=["accounts"])


def get_sms_sender(state: State) -> SmsSender:
    """The SMS gateway. Only the recording fake exists (a real gateway is a paid contract):
    development and test sites use it; elsewhere one-time codes answer 503."""
    sender = configured_sms_sender(state.settings, state.redis)
    if sender is None:
        raise DependencyUnavailable("sms", "no SMS gateway is configured")
    return sender


Sms = Annotated[SmsSender, Depends(get_sms_sender)]

_optional_bearer = HTTPBearer(auto_error=False)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def _limit(state: State, *keys: str) -> None:
    auth = state.settings.auth
    for key in keys:
        await ratelimit.hit(
            state.redis,
            key,
            limit=auth.login_attempts_per_window,
            window_s=auth.login_window_s,
            prefix=state.settings.redis.key_prefix,
        )


def _otp_store(state: State) -> OtpStore:
    auth = state.settings.auth
    return OtpStore(
        state.redis,
        state.settings.app.secret_key.get_secret_value(),
        ttl_s=auth.otp_ttl_s,
        max_attempts=auth.otp_max_attempts,
        prefix=state.settings.redis.key_prefix,
    )


@router.post(
    "/auth/register",
    status_code=status.HTTP_201_CREATED,
    responses=problems(409, 429),
)
async def register(body: RegisterRequest, request: Request, state: State, db: Db) -> Registered:
    """Create an account (driver; with ``host: true`` also a host) and log it in."""
    await _limit(state, f"register:ip:{_client(request)}")
    user, tokens = await service.register(db, state.settings, body, now=datetime.now(UTC))
    return Registered(user=user, tokens=tokens)


@router.post("/auth/login", responses=problems(401, 429))
async def login(body: LoginRequest, request: Request, state: State, db: Db) -> TokenPair:
    """Email or phone, and password → an access token and a refresh token."""
    identity = body.email or body.phone
    await _limit(state, f"login:ip:{_client(request)}", f"login:id:{identity}")
    return await service.login(
        db,
        state.settings,
        email=body.email,
        phone=body.phone,
        password=body.password,
        now=datetime.now(UTC),
    )


@router.post("/auth/refresh", responses=problems(401))
async def refresh(body: RefreshRequest, state: State) -> TokenPair:
    """Trade a refresh token for the next pair. A token already used (or logged out) is
    refused *and* revokes every token of its family."""
    # Our own transaction rather than `Db`: a revocation must commit even though the answer
    # is an error (`Db` rolls back on errors).
    async with state.sessions() as db, db.begin():
        tokens = await service.refresh(
            db, state.settings, token=body.refresh_token, now=datetime.now(UTC)
        )
    if tokens is None:
        raise Unauthorized("the refresh token is invalid, expired or revoked")
    return tokens


@router.post("/auth/logout", status_code=status.HTTP_204_NO_CONTENT)
async def logout(body: LogoutRequest, db: Db) -> Response:
    """Revoke the refresh token's family. Always 204: the token is the only credential."""
    await service.logout(db, token=body.refresh_token, now=datetime.now(UTC))
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post(
    "/auth/logout-everywhere",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=problems(401),
)
async def logout_everywhere(principal: CurrentUser, state: State) -> Response:
    """End every session of the caller: all refresh tokens are revoked and every access
    token issued so far (this one included) is refused from now on, on every instance."""
    async with state.sessions() as db, db.begin():
        await service.end_all_sessions(db, principal.user_id, now=datetime.now(UTC))
    _forget(state, principal.user_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _forget(state: State, user_id: str) -> None:
    """Drop this instance's cached state of ``user_id`` after a committed change: the
    database's notification does the same on every instance, this makes it certain here
    before the answer leaves."""
    if state.principals is not None:
        state.principals.invalidate(user_id)


@router.post(
    "/auth/otp/request",
    status_code=status.HTTP_202_ACCEPTED,
    responses=problems(429, 503),
)
async def otp_request(body: OtpRequest, request: Request, state: State, sms: Sms) -> OtpSent:
    """Text a six-digit code to the number, account or not (the answer is the same)."""
    await _limit(state, f"otp:ip:{_client(request)}", f"otp:id:{body.phone}")
    store = _otp_store(state)
    code = await store.issue(body.phone)
    await sms.send(body.phone, otp_message(code, store.ttl_s))
    return OtpSent(phone=body.phone, expires_in=store.ttl_s)


@router.post("/auth/otp/verify", responses=problems(401, 409, 429))
async def otp_verify(
    body: OtpVerifyRequest,
    request: Request,
    state: State,
    db: Db,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_optional_bearer)],
) -> TokenPair:
    """Prove the number with its code: logs in (or signs up) its owner and marks it
    verified. A logged-in caller verifying their own new number sends their bearer token."""
    await _limit(state, f"otpv:ip:{_client(request)}", f"otpv:id:{body.phone}")
    caller_id = None
    if credentials is not None:
        caller_id = (await authenticate(state, credentials.credentials)).user_id
    if not await _otp_store(state).check(body.phone, body.code):
        raise Unauthorized("the code is wrong or has expired")
    return await service.otp_login(
        db,
        state.settings,
        phone=body.phone,
        name=body.name,
        caller_id=caller_id,
        now=datetime.now(UTC),
    )


@router.get("/me", responses=problems(401))
async def me(principal: CurrentUser, db: Db) -> Me:
    return await service.profile(db, principal.user_id)


@router.patch("/me", responses=problems(403, 409))
async def update_me(body: MeUpdate, principal: CurrentUser, state: State) -> Me:
    """Change the profile. A new password ends every session, the caller's own too: the
    access token that made the change is refused from the next request on."""
    async with state.sessions() as db, db.begin():
        me = await service.update_profile(db, principal.user_id, body, now=datetime.now(UTC))
    _forget(state, principal.user_id)
    return me
