"""Admins moderate listings: the allowed status transitions, the decision (audited), the
queue."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.audit.service import Actor, record
from cloud.chargers.models import (
    Charger,
    ModerationStatus,
)
from cloud.errors import Conflict, NotFound

#: Which moderation decisions may follow which state.
_TRANSITIONS: dict[ModerationStatus, frozenset[ModerationStatus]] = {
    ModerationStatus.APPROVED: frozenset(
        {ModerationStatus.PENDING, ModerationStatus.REJECTED, ModerationStatus.SUSPENDED}
    ),
    ModerationStatus.REJECTED: frozenset({ModerationStatus.PENDING}),
    ModerationStatus.SUSPENDED: frozenset({ModerationStatus.APPROVED}),
}


async def moderate(
    db: AsyncSession, charger_id: str, decision: ModerationStatus, note: str | None, actor: Actor
) -> Charger:
    """An admin's decision, audited (``charger.approved`` …); callers have checked the
    admin role."""
    charger = await db.scalar(select(Charger).where(Charger.id == charger_id).with_for_update())
    if charger is None:
        raise NotFound("charger", charger_id)
    allowed_from = _TRANSITIONS.get(decision, frozenset())
    if charger.moderation_status not in allowed_from:
        raise Conflict(
            f"a {charger.moderation_status.value} listing cannot become {decision.value}",
            entity="charger",
            key=charger_id,
        )
    before = {"moderation_status": charger.moderation_status, "note": charger.moderation_note}
    charger.moderation_status = decision
    charger.moderation_note = note
    await db.flush()
    await record(
        db,
        actor,
        action=f"charger.{decision.value}",
        entity="charger",
        entity_id=charger.id,
        before=before,
        after={"moderation_status": decision, "note": note},
    )
    return charger


async def moderation_queue(
    db: AsyncSession, status: ModerationStatus, *, limit: int
) -> list[Charger]:
    return list(
        await db.scalars(
            select(Charger)
            .where(Charger.moderation_status == status)
            .order_by(Charger.created_at, Charger.id)
            .limit(limit)
        )
    )
