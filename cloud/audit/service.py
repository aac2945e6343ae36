"""Writing and reading the audit log.

:func:`record` is the one way a row is written: a service calls it inside its own
transaction, next to the change it records, so the change and its audit row commit or roll
back together. Rows are never changed afterwards (migration 0014's trigger refuses UPDATE and
DELETE). Who acted is an :class:`Actor`, built by the router from the caller and the request
(:func:`cloud.audit.actor.admin_actor`), or :data:`SYSTEM` for jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic_core import to_jsonable_python
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.audit.models import AuditEntry


@dataclass(frozen=True, slots=True)
class Actor:
    """Who did it: a user acting in a role (``admin``, ``host``, ``driver``), or the system;
    with the HTTP request's id and client address when there was a request."""

    user_id: str | None
    kind: str
    request_id: str | None = None
    client_ip: str | None = None


SYSTEM = Actor(user_id=None, kind="system")


def _json(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    # Enums, datetimes and the like as their JSON text, so any service's fields fit.
    return None if value is None else dict(to_jsonable_python(dict(value)))


async def record(
    db: AsyncSession,
    actor: Actor,
    *,
    action: str,
    entity: str,
    entity_id: str,
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> None:
    """Append one audit row in ``db``'s transaction (``action`` like ``payout.reject``)."""
    await db.execute(
        insert(AuditEntry).values(
            actor_user_id=actor.user_id,
            actor_kind=actor.kind,
            action=action,
            entity=entity,
            entity_id=entity_id,
            before=_json(before),
            after=_json(after),
            data=_json(data) or {},
            request_id=actor.request_id,
            client_ip=actor.client_ip,
        )
    )


@dataclass(frozen=True, slots=True)
class AuditFilter:
    entity: str | None = None
    entity_id: str | None = None
    actor_user_id: str | None = None
    action: str | None = None
    at_from: datetime | None = None
    at_to: datetime | None = None
    #: Keyset pagination: only rows older than this id (the previous page's ``next_cursor``).
    before_id: int | None = None
    limit: int = 50


async def entries(db: AsyncSession, f: AuditFilter) -> list[AuditEntry]:
    """Newest first (by id: rows are appended in commit order within a writer)."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(f.limit)
    if f.entity is not None:
        query = query.where(AuditEntry.entity == f.entity)
    if f.entity_id is not None:
        query = query.where(AuditEntry.entity_id == f.entity_id)
    if f.actor_user_id is not None:
        query = query.where(AuditEntry.actor_user_id == f.actor_user_id)
    if f.action is not None:
        query = query.where(AuditEntry.action == f.action)
    if f.at_from is not None:
        query = query.where(AuditEntry.at >= f.at_from)
    if f.at_to is not None:
        query = query.where(AuditEntry.at < f.at_to)
    if f.before_id is not None:
        query = query.where(AuditEntry.id < f.before_id)
    return list(await db.scalars(query))
