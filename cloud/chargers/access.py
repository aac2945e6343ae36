"""Who may touch which listing, decided by the queries themselves: :func:`editable_charger`
finds a charger only among the caller's own (admins: any), so another host's charger is
"not found" — its existence is not revealed; :func:`public_charger` finds only approved,
listed chargers; a photo is readable where its charger is."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Host, Role
from cloud.accounts.tokens import Principal
from cloud.chargers import qr
from cloud.chargers.models import (
    Charger,
    ChargerPhoto,
    ModerationStatus,
)
from cloud.errors import Forbidden, NotFound


async def host_id_of(db: AsyncSession, principal: Principal) -> str:
    """The caller's host profile id; :class:`Forbidden` for a user without one."""
    host_id = await db.scalar(select(Host.id).where(Host.user_id == principal.user_id))
    if host_id is None:
        raise Forbidden("this account has no host profile")
    return host_id


async def editable_charger(
    db: AsyncSession, principal: Principal, charger_id: str, *, lock: bool = False
) -> Charger:
    """The charger if the caller owns it (or is an admin); :class:`NotFound` otherwise."""
    query = select(Charger).where(Charger.id == charger_id)
    if not principal.has(Role.ADMIN):
        query = query.join(Host, Host.id == Charger.host_id).where(
            Host.user_id == principal.user_id
        )
    if lock:
        query = query.with_for_update(of=Charger)
    charger = await db.scalar(query)
    if charger is None:
        raise NotFound("charger", charger_id)
    return charger


def visible(charger: Charger) -> bool:
    return charger.moderation_status is ModerationStatus.APPROVED and charger.is_listed


async def public_charger(db: AsyncSession, charger_id: str) -> Charger:
    charger = await db.get(Charger, charger_id)
    if charger is None or not visible(charger):
        raise NotFound("charger", charger_id)
    return charger


async def charger_by_code(db: AsyncSession, code: str) -> Charger:
    canonical = qr.normalize_short_code(code)
    charger = None
    if canonical is not None:
        charger = await db.scalar(select(Charger).where(Charger.qr_code == canonical))
    if charger is None or not visible(charger):
        raise NotFound("charger", code)
    return charger


async def photo_readable(db: AsyncSession, principal: Principal | None, photo_id: str) -> bool:
    """Whether ``principal`` (or an anonymous caller) may see this photo's bytes."""
    row = (
        await db.execute(
            select(Charger, ChargerPhoto.id)
            .join(ChargerPhoto, ChargerPhoto.charger_id == Charger.id)
            .where(ChargerPhoto.id == photo_id)
        )
    ).first()
    if row is None:
        return False
    charger: Charger = row[0]
    if visible(charger):
        return True
    if principal is None:
        return False
    try:
        await editable_charger(db, principal, charger.id)
    except NotFound:
        return False
    return True
