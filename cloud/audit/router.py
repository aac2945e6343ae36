"""``GET /admin/audit``: the audit log for admins, newest first, filtered and paged."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from cloud.audit import schemas, service
from cloud.deps import AdminUser, Db
from cloud.payouts.router import QueryInstant

router = APIRouter(tags=["admin"])

_NAME = r"^[a-z_]+(\.[a-z_]+)*$"


@router.get("/admin/audit")
async def audit_log(
    *,
    db: Db,
    _admin: AdminUser,
    entity: Annotated[str | None, Query(min_length=1, max_length=40, pattern=_NAME)] = None,
    entity_id: Annotated[
        str | None, Query(min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_:.-]+$")
    ] = None,
    actor: Annotated[
        str | None, Query(min_length=1, max_length=26, pattern=r"^[0-9A-Za-z]+$")
    ] = None,
    action: Annotated[str | None, Query(min_length=1, max_length=64, pattern=_NAME)] = None,
    at_from: Annotated[QueryInstant | None, Query(alias="from")] = None,
    at_to: Annotated[QueryInstant | None, Query(alias="to")] = None,
    cursor: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> schemas.AuditPage:
    """Audit entries, newest first: filter by ``entity`` (``charger``, ``payout``,
    ``kyc_submission``, ``user`` …) and ``entity_id``, ``actor`` (a user id), ``action``
    (``payout.reject`` …) and time (``from`` inclusive, ``to`` exclusive: an empty range
    finds nothing). Page with ``cursor`` = the previous page's ``next_cursor``."""
    rows = await service.entries(
        db,
        service.AuditFilter(
            entity=entity,
            entity_id=entity_id,
            actor_user_id=actor,
            action=action,
            at_from=at_from,
            at_to=at_to,
            before_id=cursor,
            limit=limit + 1,
        ),
    )
    page = rows[:limit]
    return schemas.AuditPage(
        items=[
            schemas.AuditEntryOut(
                id=r.id,
                at=r.at,
                actor_user_id=r.actor_user_id,
                actor_kind=r.actor_kind,
                action=r.action,
                entity=r.entity,
                entity_id=r.entity_id,
                before=r.before,
                after=r.after,
                data=r.data,
                request_id=r.request_id,
                client_ip=None if r.client_ip is None else str(r.client_ip),
            )
            for r in page
        ],
        next_cursor=page[-1].id if len(rows) > limit else None,
    )
