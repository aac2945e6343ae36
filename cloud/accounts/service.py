"""Accounts: registration, password and phone login, rotating refresh tokens, the profile.

Refresh tokens are 256 random bits (URL-safe base64), stored as SHA-256. A login starts a
*family*; each refresh marks the presented token rotated and issues the next one in the same
family. A rotated or revoked token presented again means two parties hold the family (a
stolen token, or a replay): the whole family is revoked and both must log in again.

Answers never tell an unknown account from a wrong password: both cost one argon2
verification (``verify_password`` hashes against a dummy when there is no user) and both
raise the same :class:`~cloud.errors.Unauthorized`.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Host, KycStatus, RefreshToken, Role, User, UserRole
from cloud.accounts.passwords import hash_password, needs_rehash, verify_password
from cloud.accounts.schemas import HostProfile, Me, MeUpdate, RegisterRequest, TokenPair
from cloud.accounts.tokens import issue_access_token
from cloud.db_errors import refusals
from cloud.errors import Conflict, DatabaseRefused, Forbidden, Unauthorized
from cloud.settings import Settings
from protocols.ids import new_ulid

log = logging.getLogger(__name__)

#: Bytes of randomness in a refresh token.
REFRESH_TOKEN_BYTES = 32
#: The name of an account created by a phone-first sign-up that gave none.
DEFAULT_NAME = "ChargeMitra user"

_BAD_CREDENTIALS = "the email/phone or password is wrong"


def hash_refresh_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def roles_of(db: AsyncSession, user_id: str) -> frozenset[Role]:
    rows = await db.scalars(select(UserRole.role).where(UserRole.user_id == user_id))
    return frozenset(rows)


async def issue_tokens(
    db: AsyncSession,
    settings: Settings,
    *,
    user_id: str,
    roles: frozenset[Role],
    now: datetime,
    family_id: str | None = None,
) -> TokenPair:
    """An access token and a refresh token (a new family unless ``family_id`` is given)."""
    refresh = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
    db.add(
        RefreshToken(
            user_id=user_id,
            family_id=family_id or new_ulid(),
            token_hash=hash_refresh_token(refresh),
            created_at=now,
            expires_at=now + timedelta(seconds=settings.auth.refresh_ttl_s),
        )
    )
    await db.flush()
    version = await db.scalar(select(User.token_version).where(User.id == user_id))
    access = issue_access_token(
        settings.app.secret_key.get_secret_value(),
        user_id=user_id,
        roles=roles,
        now=now,
        ttl_s=settings.auth.access_ttl_s,
        token_version=version or 0,
    )
    return TokenPair(
        access_token=access,
        expires_in=settings.auth.access_ttl_s,
        refresh_token=refresh,
        refresh_expires_in=settings.auth.refresh_ttl_s,
    )


async def _flush_unique(db: AsyncSession, what: str) -> None:
    """Flush; a unique violation (a concurrent registration) becomes :class:`Conflict`."""
    try:
        with refusals():
            await db.flush()
    except DatabaseRefused as exc:
        if not exc.integrity:
            raise
        raise Conflict(f"an account with this {what} already exists", entity="user") from exc


async def register(
    db: AsyncSession, settings: Settings, body: RegisterRequest, *, now: datetime
) -> tuple[Me, TokenPair]:
    """Create a driver (and, with ``host``, a host) account and log it in.

    A taken email or phone is a 409: registration cannot hide that an account exists (the
    client must be told why it failed); the per-address rate limit bounds probing.
    """
    taken = await db.scalar(
        select(User.email).where(
            or_(User.email == body.email, User.phone == body.phone)
            if body.phone is not None
            else User.email == body.email
        )
    )
    if taken is not None:
        what = "email" if taken == body.email else "phone number"
        raise Conflict(f"an account with this {what} already exists", entity="user")
    user = User(
        id=new_ulid(),
        email=body.email,
        phone=body.phone,
        name=body.name,
        password_hash=hash_password(body.password),
    )
    db.add(user)
    await _flush_unique(db, "email or phone number")
    roles = {Role.DRIVER}
    if body.host:
        roles.add(Role.HOST)
        db.add(Host(user_id=user.id, display_name=body.name))
    db.add_all(UserRole(user_id=user.id, role=role) for role in roles)
    await db.flush()
    log.info("account registered", extra={"user_id": user.id, "host": body.host})
    tokens = await issue_tokens(db, settings, user_id=user.id, roles=frozenset(roles), now=now)
    return await profile(db, user.id), tokens


async def login(
    db: AsyncSession,
    settings: Settings,
    *,
    email: str | None,
    phone: str | None,
    password: str,
    now: datetime,
) -> TokenPair:
    """Tokens for the right password; the same :class:`Unauthorized` for anything else."""
    condition = User.email == email if email is not None else User.phone == phone
    user = await db.scalar(select(User).where(condition))
    # Always one argon2 verification, user or not: the answer time does not tell.
    ok = verify_password(user.password_hash if user else None, password)
    if user is None or not ok or user.disabled_at is not None:
        raise Unauthorized(_BAD_CREDENTIALS)
    if user.password_hash is not None and needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return await issue_tokens(
        db, settings, user_id=user.id, roles=await roles_of(db, user.id), now=now
    )


async def revoke_family(db: AsyncSession, family_id: str, *, now: datetime) -> None:
    await db.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def refresh(
    db: AsyncSession, settings: Settings, *, token: str, now: datetime
) -> TokenPair | None:
    """Rotate ``token``: the next pair of its family, or None when it is refused.

    None comes after any revocation was written, so the caller commits ``db`` and *then*
    answers 401: the revocation of a reused family must survive the refusal.
    """
    row = await db.scalar(
        select(RefreshToken)
        .where(RefreshToken.token_hash == hash_refresh_token(token))
        .with_for_update()
    )
    if row is None:
        return None
    if row.rotated_at is not None or row.revoked_at is not None:
        log.warning(
            "refresh token reused: family revoked",
            extra={"user_id": row.user_id, "family_id": row.family_id},
        )
        await revoke_family(db, row.family_id, now=now)
        return None
    if row.expires_at <= now:
        return None
    user = await db.get(User, row.user_id)
    if user is None or user.disabled_at is not None:
        await revoke_family(db, row.family_id, now=now)
        return None
    row.rotated_at = now
    return await issue_tokens(
        db,
        settings,
        user_id=user.id,
        roles=await roles_of(db, user.id),
        now=now,
        family_id=row.family_id,
    )


async def logout(db: AsyncSession, *, token: str, now: datetime) -> None:
    """Revoke the family of ``token`` (every token it rotated into); unknown tokens are
    ignored, so logging out twice is harmless."""
    family_id = await db.scalar(
        select(RefreshToken.family_id).where(RefreshToken.token_hash == hash_refresh_token(token))
    )
    if family_id is not None:
        await revoke_family(db, family_id, now=now)


async def revoke_all(db: AsyncSession, user_id: str, *, now: datetime) -> None:
    await db.execute(
        update(RefreshToken)
        .where(RefreshToken.user_id == user_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def end_all_sessions(db: AsyncSession, user_id: str, *, now: datetime) -> None:
    """Sign the user out everywhere: every refresh token is revoked and every access token
    issued so far is refused from the commit on (its ``ver`` no longer matches; the
    trigger's notification empties every API instance's cache, cloud.accounts.principals)."""
    await db.execute(
        update(User).where(User.id == user_id).values(token_version=User.token_version + 1)
    )
    await revoke_all(db, user_id, now=now)


async def otp_login(
    db: AsyncSession,
    settings: Settings,
    *,
    phone: str,
    name: str | None,
    caller_id: str | None,
    now: datetime,
) -> TokenPair:
    """Log in whoever just proved ``phone`` with a one-time code, marking it verified.

    * The account whose phone this is, verified: logged in.
    * An account holding it *unverified*: if that account is the caller (its bearer token
      came along), the phone is now verified. Otherwise the number is only a claim someone
      typed in: it is detached from that account and goes to the proven owner, so a number
      registered by someone else cannot lock its owner out or lead them into a stranger's
      account.
    * No account: one is created (phone-first sign-up, role driver).
    """
    user = await db.scalar(select(User).where(User.phone == phone).with_for_update())
    if user is not None and user.phone_verified_at is None and user.id != caller_id:
        log.warning("unverified phone taken over by its proven owner", extra={"user_id": user.id})
        user.phone = None
        await db.flush()
        user = None
    if user is None:
        user = User(id=new_ulid(), phone=phone, name=name or DEFAULT_NAME, phone_verified_at=now)
        db.add(user)
        await _flush_unique(db, "phone number")
        db.add(UserRole(user_id=user.id, role=Role.DRIVER))
        await db.flush()
        log.info("account registered by phone", extra={"user_id": user.id})
    elif user.disabled_at is not None:
        raise Unauthorized("the code is wrong or has expired")
    else:
        user.phone_verified_at = user.phone_verified_at or now
    return await issue_tokens(
        db, settings, user_id=user.id, roles=await roles_of(db, user.id), now=now
    )


async def active_user(db: AsyncSession, user_id: str) -> User:
    """The caller's row; an access token of a deleted or disabled account is refused."""
    user = await db.get(User, user_id)
    if user is None or user.disabled_at is not None:
        raise Unauthorized("the account is not active")
    return user


async def profile(db: AsyncSession, user_id: str) -> Me:
    user = await active_user(db, user_id)
    host = await db.scalar(select(Host).where(Host.user_id == user_id))
    return Me(
        id=user.id,
        email=user.email,
        phone=user.phone,
        phone_verified=user.phone_verified_at is not None,
        name=user.name,
        locale=user.locale,
        roles=sorted(await roles_of(db, user_id)),
        host=None
        if host is None
        else HostProfile(id=host.id, display_name=host.display_name, kyc_status=host.kyc_status),
        created_at=user.created_at,
    )


async def update_profile(db: AsyncSession, user_id: str, body: MeUpdate, *, now: datetime) -> Me:
    user = await active_user(db, user_id)
    if body.password is not None:
        assert body.current_password is not None  # MeUpdate's validator
        if not verify_password(user.password_hash, body.current_password):
            # The stored password decides, not the request's shape: refused, not invalid.
            raise Forbidden("current_password is wrong")
        user.password_hash = hash_password(body.password)
        # Whoever knew the old password may hold a session: end them all, this one too.
        await end_all_sessions(db, user_id, now=now)
    if body.name is not None:
        user.name = body.name
    if body.locale is not None:
        user.locale = body.locale
    if body.phone is not None and body.phone != user.phone:
        owner = await db.scalar(select(User.id).where(User.phone == body.phone))
        if owner is not None:
            raise Conflict("an account with this phone number already exists", entity="user")
        user.phone = body.phone
        user.phone_verified_at = None
        await _flush_unique(db, "phone number")
    await db.flush()
    return await profile(db, user_id)


@dataclass(frozen=True, slots=True)
class DemoAccount:
    role: Role
    email: str
    phone: str


#: Development-only accounts (``chargemitra-cloud seed-demo``), one per role.
DEMO_ACCOUNTS = (
    DemoAccount(Role.DRIVER, "driver@demo.chargemitra.in", "+919800000001"),
    DemoAccount(Role.HOST, "host@demo.chargemitra.in", "+919800000002"),
    DemoAccount(Role.ADMIN, "admin@demo.chargemitra.in", "+919800000003"),
    DemoAccount(Role.TECHNICIAN, "technician@demo.chargemitra.in", "+919800000004"),
)


async def seed_demo_accounts(db: AsyncSession, *, password: str, now: datetime) -> list[str]:
    """Create (or reset the password of) the demo accounts; returns their user ids.

    Callers check the environment first: these accounts share one known password.
    """
    password_hash = hash_password(password)
    ids: list[str] = []
    for demo in DEMO_ACCOUNTS:
        user = await db.scalar(select(User).where(User.email == demo.email))
        if user is None:
            user = User(
                id=new_ulid(),
                email=demo.email,
                phone=demo.phone,
                name=f"Demo {demo.role.value}",
                phone_verified_at=now,
            )
            db.add(user)
        user.password_hash = password_hash
        user.disabled_at = None
        await db.flush()
        have = await roles_of(db, user.id)
        if demo.role not in have:
            db.add(UserRole(user_id=user.id, role=demo.role))
        if (
            demo.role is Role.HOST
            and await db.scalar(select(Host.id).where(Host.user_id == user.id)) is None
        ):
            db.add(
                Host(
                    user_id=user.id,
                    display_name="Demo Host",
                    kyc_status=KycStatus.VERIFIED,
                    kyc_verified_at=now,
                )
            )
        await db.flush()
        ids.append(user.id)
    return ids
