"""Dispute routes: a driver opens one on a completed session and adds photos, the charger's
host responds, an admin resolves (full or partial refund, or rejection). Who sees what:
:mod:`cloud.disputes.service`; the rules: :mod:`cloud.disputes.rules`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Role
from cloud.accounts.tokens import Principal
from cloud.audit.actor import AdminActor
from cloud.chargers.router import Storage, read_photo_form
from cloud.deps import AdminUser, CurrentUser, Db, HostUser, State, require_roles
from cloud.disputes import service
from cloud.disputes.models import Dispute, DisputePhoto, DisputeStatus
from cloud.disputes.schemas import (
    DisputeIn,
    DisputeList,
    DisputeOut,
    DisputePhotoOut,
    DisputeResponseIn,
    ResolutionIn,
)
from cloud.errors import DependencyUnavailable
from cloud.openapi import links, problems
from cloud.schemas import PathId

router = APIRouter(tags=["disputes"])

DriverUser = Annotated[Principal, Depends(require_roles(Role.DRIVER))]
Limit = Annotated[int, Query(ge=1, le=200)]
Offset = Annotated[int, Query(ge=0, le=100_000)]


def _photo_out(dispute_id: str, p: DisputePhoto) -> DisputePhotoOut:
    return DisputePhotoOut(
        id=p.id,
        content_type=p.content_type,
        size_bytes=p.size_bytes,
        url=f"/disputes/{dispute_id}/photos/{p.id}",
    )


async def dispute_out(db: AsyncSession, d: Dispute) -> DisputeOut:
    return DisputeOut(
        id=d.id,
        session_id=await service.session_public_id(db, d),
        raised_by=d.raised_by,
        reason_code=d.reason_code,
        description=d.description,
        status=d.status,
        host_response=d.host_response,
        host_responded_at=d.host_responded_at,
        resolution=d.resolution,
        refund_paise=d.refund_paise,
        charged_to=d.charged_to,
        resolved_at=d.resolved_at,
        created_at=d.created_at,
        photos=[_photo_out(d.id, p) for p in await service.photos_of(db, d.id)],
    )


_DISPUTE = {"dispute_id": "$response.body#/id"}


@router.post(
    "/sessions/{session_id}/disputes",
    status_code=status.HTTP_201_CREATED,
    responses=problems(409),
    openapi_extra=links(201, get_dispute=_DISPUTE, upload_dispute_photo=_DISPUTE),
)
async def open_dispute(
    *, session_id: PathId, body: DisputeIn, db: Db, principal: DriverUser
) -> DisputeOut:
    """Dispute a completed (billed) session of yours within 14 days of its stop: 403 for any
    other session, 409 when it has a dispute already. Until it is resolved the host's
    earning from the session is held out of payouts."""
    dispute = await service.open_dispute(
        db,
        principal,
        session_id,
        reason=body.reason_code,
        description=body.description.strip(),
        now=datetime.now(UTC),
    )
    return await dispute_out(db, dispute)


@router.get("/disputes")
async def list_my_disputes(
    *,
    db: Db,
    principal: CurrentUser,
    status: DisputeStatus | None = None,
    limit: Limit = 50,
    offset: Offset = 0,
) -> DisputeList:
    """Disputes you opened, and (a host) disputes on your chargers, newest first."""
    rows = await service.list_disputes(db, principal, status=status, limit=limit, offset=offset)
    return DisputeList(items=[await dispute_out(db, d) for d in rows])


@router.get("/disputes/{dispute_id}")
async def get_dispute(*, dispute_id: PathId, db: Db, principal: CurrentUser) -> DisputeOut:
    return await dispute_out(db, await service.get_dispute(db, principal, dispute_id))


@router.post("/disputes/{dispute_id}/response", responses=problems(409))
async def respond_to_dispute(
    *, dispute_id: PathId, body: DisputeResponseIn, db: Db, principal: HostUser
) -> DisputeOut:
    """The charger's host answers an open dispute, once (409 after); it goes under review."""
    dispute = await service.respond(
        db, principal, dispute_id, text=body.text.strip(), now=datetime.now(UTC)
    )
    return await dispute_out(db, dispute)


@router.post(
    "/disputes/{dispute_id}/photos",
    status_code=status.HTTP_201_CREATED,
    responses=problems(409, 413),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["photo"],
                        "properties": {"photo": {"type": "string", "format": "binary"}},
                    }
                }
            },
        }
    },
)
async def upload_dispute_photo(
    *,
    dispute_id: PathId,
    request: Request,
    db: Db,
    state: State,
    storage: Storage,
    principal: DriverUser,
) -> DisputePhotoOut:
    """One JPEG, PNG or WebP image in the ``photo`` field, by the driver who opened the
    dispute, while it is unresolved (409 after). What the form's schema cannot state: the
    bytes must be an image (checked by content, 422), at most 5 photos (422), a size limit
    (413)."""
    max_bytes = state.settings.marketplace.photo_max_bytes
    data = await read_photo_form(request, max_bytes)
    photo = await service.add_photo(db, storage, principal, dispute_id, data, max_bytes=max_bytes)
    return _photo_out(dispute_id, photo)


@router.get(
    "/disputes/{dispute_id}/photos/{photo_id}",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}, "image/png": {}, "image/webp": {}}}},
)
async def get_dispute_photo(
    *, dispute_id: PathId, photo_id: PathId, db: Db, storage: Storage, principal: CurrentUser
) -> Response:
    """A photo of a dispute you may see (its driver, the charger's host, an admin)."""
    photo = await service.find_photo(db, principal, dispute_id, photo_id)
    data = await storage.get(photo.storage_key)
    return Response(
        data,
        media_type=photo.content_type,
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'",
            "Cache-Control": "private, no-store",
        },
    )


@router.get("/admin/disputes")
async def dispute_queue(
    *,
    db: Db,
    admin: AdminUser,
    status: DisputeStatus | None = DisputeStatus.OPEN,
    limit: Limit = 50,
    offset: Offset = 0,
) -> DisputeList:
    """Every dispute with ``status`` (default ``open``), oldest first: the admin's queue."""
    rows = await service.list_disputes(
        db, admin, status=status, limit=limit, offset=offset, everyone=True
    )
    return DisputeList(items=[await dispute_out(db, d) for d in rows])


@router.post("/admin/disputes/{dispute_id}/resolve", responses=problems(409, 502, 503))
async def resolve_dispute(
    *, dispute_id: PathId, body: ResolutionIn, state: State, admin: AdminUser, actor: AdminActor
) -> DisputeOut:
    """Resolve: ``full_refund``, ``partial_refund`` (``refund_paise`` at most what the
    session's payments have left to refund: 409 beyond) or ``rejected``. A refund is posted
    to the ledger as a dispute adjustment (from the host's earning from the session as far
    as it goes, the platform the rest; or all from the platform with ``charged_to:
    platform``) and sent through the payment provider. Resolving a refunded dispute again
    re-sends a refund that failed to reach the provider (502 when the provider fails);
    any other resolved dispute is a 409."""
    if state.payments is None:
        raise DependencyUnavailable("payments", "no payment provider is configured")
    dispute = await service.resolve(
        state.sessions,
        state.payments,
        actor,
        dispute_id,
        outcome=body.outcome,
        refund_paise=body.refund_paise,
        charged_to=body.charged_to,
        note=body.note.strip(),
        now=datetime.now(UTC),
        billing=state.settings.billing,
    )
    async with state.sessions() as db:
        fresh = await db.get(Dispute, dispute.id)
        assert fresh is not None
        return await dispute_out(db, fresh)
