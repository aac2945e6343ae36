"""The host's reviews page (``/app/host/reviews``): the visible reviews of each of their
listed chargers (``GET /chargers/{id}/reviews``'s query) with a form for the one public
reply (``POST /reviews/{id}/reply``'s service: a review of someone else's charger is the
404 page, a second reply is refused)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from pydantic import ValidationError

from cloud.chargers import editing
from cloud.deps import Db, State
from cloud.errors import CloudError, Forbidden, NotFound
from cloud.problems import problem_for
from cloud.reviews import service as reviews
from cloud.reviews.schemas import ReplyIn
from cloud.schemas import PathId
from cloud.web.host import host_or_answer
from cloud.web.render import PageVisitor, redirect, render
from cloud.web.router import CsrfField, explain

router = APIRouter(include_in_schema=False)

#: Reviews shown per charger (newest first).
PER_CHARGER = 50


@router.get("/app/host/reviews")
async def host_reviews(request: Request, visitor: PageVisitor, db: Db) -> Response:
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    try:
        mine = await editing.host_chargers(db, host)
    except Forbidden:
        mine = []
    groups = []
    for charger in mine:
        try:
            _, items = await reviews.list_reviews(db, charger.id, limit=PER_CHARGER, offset=0)
        except NotFound:
            continue  # not listed (pending, rejected, suspended): no public reviews to show
        groups.append((charger, items))
    return render(request, visitor, "host_reviews.html", groups=groups, error=None)


@router.post("/app/host/reviews/{review_id}/reply")
async def reply(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    review_id: PathId,
    csrf: CsrfField = "",
    text: Annotated[str, Form(max_length=2000)] = "",
) -> Response:
    visitor.check_csrf(csrf)
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    _ = visitor.gettext
    try:
        body = ReplyIn.model_validate({"text": text.strip()})
        async with state.sessions() as db, db.begin():
            await reviews.reply(db, host, review_id, text=body.text, now=datetime.now(UTC))
    except ValidationError:
        why, status = _("Write a reply of up to 1,000 characters."), 422
    except NotFound:
        return render(request, visitor, "not_found.html", status_code=404)
    except CloudError as exc:
        why, status = explain(visitor, exc), problem_for(exc)[0]
    else:
        return redirect("/app/host/reviews", visitor)
    return render(
        request,
        visitor,
        "message.html",
        status_code=status,
        title=_("Reply not sent"),
        error=why,
        back="/app/host/reviews",
    )
