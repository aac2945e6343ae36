"""A charger's photos on the host's edit page: upload (``POST /chargers/{id}/photos``'s
reader and the photos service: an image by its content, a size limit, at most a few per
listing), view (the API route's own handler, which lets the owner see a listing not yet
approved) and remove. Another host's charger is the 404 page.
"""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.tokens import Principal
from cloud.chargers import access, photos
from cloud.chargers import router as chargers_api
from cloud.deps import Db, State
from cloud.errors import CloudError, InvalidRequest, NotFound
from cloud.problems import problem_for
from cloud.schemas import PathId
from cloud.web.host import host_or_answer
from cloud.web.render import PageVisitor, Visitor, redirect, render
from cloud.web.router import CsrfField, explain
from cloud.web.websession import CSRF_FIELD

router = APIRouter(include_in_schema=False)


def _edit_page(charger_id: str) -> str:
    return f"/app/host/chargers/{charger_id}#photos"


async def _owned(db: AsyncSession, host: Principal, charger_id: str) -> bool:
    try:
        await access.editable_charger(db, host, charger_id)
    except NotFound:
        return False
    return True


def _refused(
    request: Request, visitor: Visitor, charger_id: str, why: str, status: int
) -> Response:
    return render(
        request,
        visitor,
        "message.html",
        status_code=status,
        title=visitor.gettext("Photo not added"),
        error=why,
        back=_edit_page(charger_id),
    )


@router.get("/app/host/chargers/{charger_id}/photos/{photo_id}")
async def photo(
    *,
    request: Request,
    visitor: PageVisitor,
    db: Db,
    state: State,
    charger_id: PathId,
    photo_id: PathId,
) -> Response:
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    try:
        return await chargers_api.get_photo(
            charger_id=charger_id,
            photo_id=photo_id,
            db=db,
            storage=chargers_api.photo_storage(state),
            principal=host,
        )
    except NotFound:
        return render(request, visitor, "not_found.html", status_code=404)


@router.post("/app/host/chargers/{charger_id}/photos")
async def upload(
    request: Request, visitor: PageVisitor, state: State, charger_id: PathId
) -> Response:
    """A multipart form: the CSRF token travels in it, so the (bounded) form is read first
    and the token checked before anything is stored."""
    if visitor.principal is None:
        visitor.check_csrf(None)  # a stranger: refused like any form without its token
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    async with state.sessions() as db:
        if not await _owned(db, host, charger_id):
            return render(request, visitor, "not_found.html", status_code=404)
    _ = visitor.gettext
    max_bytes = state.settings.marketplace.photo_max_bytes
    try:
        data, texts = await chargers_api.read_photo_and_fields(
            request, max_bytes, fields=(CSRF_FIELD,)
        )
        visitor.check_csrf(texts.get(CSRF_FIELD))
        async with state.sessions() as db, db.begin():
            await photos.add_photo(
                db, chargers_api.photo_storage(state), host, charger_id, data, max_bytes=max_bytes
            )
    except NotFound:
        return render(request, visitor, "not_found.html", status_code=404)
    except InvalidRequest as exc:
        why = _(
            "Choose a JPEG, PNG or WebP photo (at most %(n)d per charger, %(mb)d MB each): "
            "%(detail)s"
        ) % {"n": photos.MAX_PHOTOS, "mb": max_bytes // (1024 * 1024), "detail": str(exc)}
        return _refused(request, visitor, charger_id, why, problem_for(exc)[0])
    except CloudError as exc:
        return _refused(request, visitor, charger_id, explain(visitor, exc), problem_for(exc)[0])
    return redirect(_edit_page(charger_id), visitor)


@router.post("/app/host/chargers/{charger_id}/photos/{photo_id}/delete")
async def remove(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    charger_id: PathId,
    photo_id: PathId,
    csrf: CsrfField = "",
) -> Response:
    """``DELETE /chargers/{id}/photos/{photo_id}``'s order: the row, committed, then the
    bytes."""
    visitor.check_csrf(csrf)
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    try:
        async with state.sessions() as db, db.begin():
            key = await photos.delete_photo(db, host, charger_id, photo_id)
    except NotFound:
        return render(request, visitor, "not_found.html", status_code=404)
    await chargers_api.photo_storage(state).delete(key)
    return redirect(_edit_page(charger_id), visitor)
