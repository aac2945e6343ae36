"""Admins manage users: find them, disable and enable them, change their roles — audited.

Access follows at once: a disabled account's ``users.disabled_at`` change bumps its token
version and a role change touches ``user_roles``, and migration 0007's triggers notify every
API instance (cloud/accounts/principals.py), so the user's access tokens stop working on
every instance within the notification's delivery; disabling also revokes every refresh
token, so enabling the account later does not bring old sessions back.

An admin cannot disable themselves nor take away their own admin role (409): the console
must always keep one admin able to undo a mistake.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Host, Role, User, UserRole
from cloud.accounts.service import revoke_all, roles_of
from cloud.audit.service import Actor, record
from cloud.errors import Conflict, NotFound


@dataclass(frozen=True, slots=True)
class UserView:
    user: User
    roles: frozenset[Role]
    host: Host | None


@dataclass(frozen=True, slots=True)
class UserFilter:
    #: A fragment of the email, phone or name (case-insensitive).
    text: str | None = None
    role: Role | None = None
    disabled: bool | None = None
    limit: int = 50
    offset: int = 0


def _like(fragment: str) -> str:
    """``fragment`` as a LIKE pattern matching it anywhere, its own % and _ taken literally."""
    escaped = fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _query(f: UserFilter) -> Select[tuple[User]]:
    query = select(User).order_by(User.created_at.desc(), User.id.desc())
    if f.text:
        pattern = _like(f.text)
        query = query.where(
            or_(
                User.email.ilike(pattern, escape="\\"),
                User.phone.ilike(pattern, escape="\\"),
                User.name.ilike(pattern, escape="\\"),
            )
        )
    if f.role is not None:
        query = query.where(User.id.in_(select(UserRole.user_id).where(UserRole.role == f.role)))
    if f.disabled is not None:
        query = query.where(
            User.disabled_at.is_not(None) if f.disabled else User.disabled_at.is_(None)
        )
    return query.limit(f.limit).offset(f.offset)


async def _views(db: AsyncSession, users: list[User]) -> list[UserView]:
    ids = [u.id for u in users]
    roles: dict[str, set[Role]] = {i: set() for i in ids}
    for user_id, role in (
        await db.execute(select(UserRole.user_id, UserRole.role).where(UserRole.user_id.in_(ids)))
    ).tuples():
        roles[user_id].add(role)
    hosts = {h.user_id: h for h in await db.scalars(select(Host).where(Host.user_id.in_(ids)))}
    return [UserView(u, frozenset(roles[u.id]), hosts.get(u.id)) for u in users]


async def find_users(db: AsyncSession, f: UserFilter) -> list[UserView]:
    """Newest first."""
    return await _views(db, list(await db.scalars(_query(f))))


async def user_view(db: AsyncSession, user_id: str) -> UserView:
    user = await db.get(User, user_id)
    if user is None:
        raise NotFound("user", user_id)
    (view,) = await _views(db, [user])
    return view


async def _lock(db: AsyncSession, user_id: str) -> User:
    user = await db.get(User, user_id, with_for_update=True, populate_existing=True)
    if user is None:
        raise NotFound("user", user_id)
    return user


async def set_disabled(
    db: AsyncSession,
    actor: Actor,
    *,
    user_id: str,
    disabled: bool,
    reason: str | None,
    now: datetime,
) -> UserView:
    """Disable (with a reason) or enable an account; doing it twice changes and audits
    nothing the second time."""
    if disabled and user_id == actor.user_id:
        raise Conflict("an admin cannot disable their own account", entity="user", key=user_id)
    user = await _lock(db, user_id)
    was = user.disabled_at
    if (was is not None) != disabled:
        user.disabled_at = now if disabled else None
        if disabled:
            await revoke_all(db, user.id, now=now)
        await db.flush()
        await record(
            db,
            actor,
            action="user.disable" if disabled else "user.enable",
            entity="user",
            entity_id=user.id,
            before={"disabled_at": was},
            after={"disabled_at": user.disabled_at},
            data={"reason": reason} if reason else None,
        )
    return await user_view(db, user_id)


async def set_roles(
    db: AsyncSession, actor: Actor, *, user_id: str, roles: frozenset[Role]
) -> UserView:
    """Give the account exactly ``roles``. A new host gets a host profile (KYC not started);
    a host who loses the role keeps theirs (listings, earnings and payouts stay on record)."""
    if user_id == actor.user_id and Role.ADMIN not in roles:
        raise Conflict("an admin cannot take away their own admin role", entity="user", key=user_id)
    user = await _lock(db, user_id)
    before = await roles_of(db, user.id)
    if before != roles:
        await db.execute(
            delete(UserRole).where(UserRole.user_id == user.id, UserRole.role.not_in(roles))
        )
        for role in sorted(roles - before):
            db.add(UserRole(user_id=user.id, role=role))
        if (
            Role.HOST in roles
            and await db.scalar(select(Host.id).where(Host.user_id == user.id)) is None
        ):
            db.add(Host(user_id=user.id, display_name=user.name))
        await db.flush()
        await record(
            db,
            actor,
            action="user.roles",
            entity="user",
            entity_id=user.id,
            before={"roles": sorted(before)},
            after={"roles": sorted(roles)},
        )
    return await user_view(db, user_id)
