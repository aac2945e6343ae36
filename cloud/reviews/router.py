"""Review routes: a driver reviews a completed session's charger, its host replies, admins
hide; hosts rate drivers (privately). Rules: :mod:`cloud.reviews.rules`; queries and the
listing's aggregate: :mod:`cloud.reviews.service`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query, status

from cloud.accounts.models import Role
from cloud.accounts.tokens import Principal
from cloud.audit.actor import AdminActor
from cloud.deps import AdminUser, Db, HostUser, require_roles
from cloud.openapi import problems
from cloud.reviews import rules, service
from cloud.reviews.models import DriverRating, Review
from cloud.reviews.schemas import (
    AdminReviewList,
    AdminReviewOut,
    DriverRatingIn,
    DriverRatingOut,
    HideIn,
    ReplyIn,
    RestoreIn,
    ReviewIn,
    ReviewOut,
    ReviewPage,
)
from cloud.schemas import PathId

router = APIRouter(tags=["reviews"])

DriverUser = Annotated[Principal, Depends(require_roles(Role.DRIVER))]


def review_out(r: Review) -> ReviewOut:
    return ReviewOut(
        id=r.id,
        charger_id=r.charger_id,
        rating=r.rating,
        text=r.body,
        created_at=r.created_at,
        host_reply=r.host_reply,
        host_replied_at=r.host_replied_at,
    )


def _admin_out(r: Review) -> AdminReviewOut:
    return AdminReviewOut(
        **review_out(r).model_dump(),
        user_id=r.user_id,
        hidden_at=r.hidden_at,
        hidden_reason=r.hidden_reason,
    )


def _rating_out(r: DriverRating) -> DriverRatingOut:
    return DriverRatingOut(
        id=r.id, driver_id=r.driver_id, rating=r.rating, note=r.note, created_at=r.created_at
    )


@router.post(
    "/sessions/{session_id}/review", status_code=status.HTTP_201_CREATED, responses=problems(409)
)
async def create_review(
    *, session_id: PathId, body: ReviewIn, db: Db, principal: DriverUser
) -> ReviewOut:
    """Review the charger of a completed (billed) session of yours, within 30 days of its
    stop: 403 for any other session, 409 for a second review of it."""
    review = await service.create_review(
        db,
        principal,
        session_id,
        rating=body.rating,
        body=body.text.strip(),
        now=datetime.now(UTC),
    )
    return review_out(review)


@router.get("/chargers/{charger_id}/reviews")
async def list_reviews(
    *,
    charger_id: PathId,
    db: Db,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> ReviewPage:
    """A public listing's reviews (hidden ones left out), newest first, and its average and
    count over the same reviews."""
    charger, reviews = await service.list_reviews(db, charger_id, limit=limit, offset=offset)
    return ReviewPage(
        charger_id=charger.id,
        average=rules.average(charger.rating_sum, charger.rating_count),
        count=charger.rating_count,
        items=[review_out(r) for r in reviews],
        limit=limit,
        offset=offset,
    )


@router.post("/reviews/{review_id}/reply", responses=problems(409))
async def reply_to_review(
    *, review_id: PathId, body: ReplyIn, db: Db, principal: HostUser
) -> ReviewOut:
    """The host's one public reply to a review of their charger (409 for a second)."""
    review = await service.reply(
        db, principal, review_id, text=body.text.strip(), now=datetime.now(UTC)
    )
    return review_out(review)


@router.post("/admin/reviews/{review_id}/hide", responses=problems(409))
async def hide_review(
    *, review_id: PathId, body: HideIn, db: Db, admin: AdminUser, actor: AdminActor
) -> AdminReviewOut:
    """Hide a review, with the reason: it leaves the public list and the listing's average."""
    review = await service.hide(
        db, actor, review_id, reason=body.reason.strip(), now=datetime.now(UTC)
    )
    return _admin_out(review)


@router.post("/admin/reviews/{review_id}/restore", responses=problems(409))
async def restore_review(
    *, review_id: PathId, body: RestoreIn, db: Db, admin: AdminUser, actor: AdminActor
) -> AdminReviewOut:
    """Show a hidden review again (a hide undone, with a note): back in the public list and
    the listing's average; 409 when it is not hidden."""
    review = await service.restore(db, actor, review_id, note=body.note.strip())
    return _admin_out(review)


@router.get("/admin/reviews")
async def admin_reviews(
    *,
    db: Db,
    admin: AdminUser,
    charger_id: Annotated[
        str | None, Query(min_length=1, max_length=26, pattern=r"^[0-9A-Za-z]+$")
    ] = None,
    hidden: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=100_000)] = 0,
) -> AdminReviewList:
    """Every review, hidden ones too (``hidden`` filters), newest first: moderation."""
    rows = await service.admin_reviews(
        db, charger_id=charger_id, hidden=hidden, limit=limit, offset=offset
    )
    return AdminReviewList(items=[_admin_out(r) for r in rows])


@router.post(
    "/sessions/{session_id}/driver-rating",
    status_code=status.HTTP_201_CREATED,
    responses=problems(409),
)
async def rate_driver(
    *, session_id: PathId, body: DriverRatingIn, db: Db, principal: HostUser
) -> DriverRatingOut:
    """Rate the driver of a completed session on your charger, within 30 days (403 for any
    other session, 409 for a second rating). Private: drivers cannot read ratings; a low
    one makes your instant-book chargers ask for your approval of that driver's bookings."""
    rating = await service.rate_driver(
        db,
        principal,
        session_id,
        rating=body.rating,
        note=body.note.strip(),
        now=datetime.now(UTC),
    )
    return _rating_out(rating)
