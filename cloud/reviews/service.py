"""Reviews and driver ratings in the database, around :mod:`cloud.reviews.rules`.

**The listing's aggregate is stored, and moved in the review's own transaction.**
``chargers.rating_sum``/``rating_count`` (what search filters on and every listing shows)
change by one ``UPDATE … SET rating_sum = rating_sum + :r`` in the transaction that inserts
the review (and by the reverse when an admin hides one). The UPDATE takes the charger row's
lock, so concurrent reviews of one charger queue on it for the rest of their transactions
and each adds to the sum the previous one committed: the aggregate always equals
``sum``/``count`` over the visible reviews (tests/cloud/test_reviews.py, 20 at once).

**Who may.** A review or a driver rating needs a completed session of the caller's — as its
driver, or as the host of its charger — within the window: anything else (unknown session,
someone else's, still running, unbilled, too old) is one answer, 403, so ids cannot be probed.
A second one for the same session is a 409 (a unique key, ``INSERT … ON CONFLICT DO
NOTHING``). A host replies to reviews of their own chargers (another's is a 404), once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Host
from cloud.accounts.tokens import Principal
from cloud.audit.service import Actor, record
from cloud.bookings.policy import DriverTrust
from cloud.chargers.access import public_charger
from cloud.chargers.models import Charger
from cloud.columns import ulid_pk
from cloud.errors import Conflict, Forbidden, NotFound
from cloud.reviews import rules
from cloud.reviews.models import DriverRating, Review
from cloud.sessions.models import ChargingSession


@dataclass(frozen=True, slots=True)
class Reviewable:
    """A completed session the caller may review or rate, and its charger's host."""

    session: ChargingSession
    charger_id: str
    host_id: str
    host_user_id: str


async def _completed(
    db: AsyncSession,
    session_id: str,
    now: datetime,
    *,
    driver_id: str | None = None,
    host_user_id: str | None = None,
) -> Reviewable:
    query = (
        select(ChargingSession, Charger.id, Host.id, Host.user_id)
        .join(Charger, Charger.id == ChargingSession.charger_id)
        .join(Host, Host.id == Charger.host_id)
        .where(ChargingSession.device_session_id == session_id)
    )
    if driver_id is not None:
        query = query.where(ChargingSession.user_id == driver_id)
    if host_user_id is not None:
        query = query.where(Host.user_id == host_user_id)
    found = (await db.execute(query.limit(1))).first()
    if found is not None:
        row = found[0]
        if rules.completed(row.state, row.billing_state) and rules.within(
            row.stopped_at, now, rules.REVIEW_WINDOW
        ):
            return Reviewable(row, found[1], found[2], found[3])
    raise Forbidden(
        f"no completed session {session_id!r} of yours within the last "
        f"{rules.REVIEW_WINDOW.days} days"
    )


async def create_review(
    db: AsyncSession,
    principal: Principal,
    session_id: str,
    *,
    rating: int,
    body: str,
    now: datetime,
) -> Review:
    """The caller's review of the session's charger; the listing's aggregate moves with it."""
    done = await _completed(db, session_id, now, driver_id=principal.user_id)
    review_id = await db.scalar(
        insert(Review)
        .values(
            id=ulid_pk(),
            charger_id=done.charger_id,
            user_id=principal.user_id,
            session_id=done.session.id,
            rating=rating,
            body=body,
        )
        .on_conflict_do_nothing(index_elements=["session_id"])
        .returning(Review.id)
    )
    if review_id is None:
        raise Conflict(
            f"session {session_id!r} is reviewed already", entity="review", key=session_id
        )
    await db.execute(
        update(Charger)
        .where(Charger.id == done.charger_id)
        .values(rating_sum=Charger.rating_sum + rating, rating_count=Charger.rating_count + 1)
    )
    review = await db.get(Review, review_id)
    assert review is not None
    return review


async def list_reviews(
    db: AsyncSession, charger_id: str, *, limit: int, offset: int
) -> tuple[Charger, list[Review]]:
    """A public listing's visible reviews, newest first (a hidden or unlisted one: 404)."""
    charger = await public_charger(db, charger_id)
    rows = await db.scalars(
        select(Review)
        .where(Review.charger_id == charger.id, Review.hidden_at.is_(None))
        .order_by(Review.created_at.desc(), Review.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return charger, list(rows)


async def _own_review(db: AsyncSession, principal: Principal, review_id: str) -> Review:
    """A review of one of the caller's chargers, locked; 404 for anyone else's."""
    review = await db.scalar(
        select(Review)
        .join(Charger, Charger.id == Review.charger_id)
        .join(Host, Host.id == Charger.host_id)
        .where(Review.id == review_id, Host.user_id == principal.user_id)
        .with_for_update(of=Review)
    )
    if review is None:
        raise NotFound("review", review_id)
    return review


async def reply(
    db: AsyncSession, principal: Principal, review_id: str, *, text: str, now: datetime
) -> Review:
    """The host's one public answer to a review of their charger."""
    review = await _own_review(db, principal, review_id)
    if review.host_reply is not None:
        raise Conflict(f"review {review_id!r} has a reply already", entity="review", key=review_id)
    review.host_reply = text
    review.host_replied_at = now
    await db.flush()
    return review


async def hide(
    db: AsyncSession, actor: Actor, review_id: str, *, reason: str, now: datetime
) -> Review:
    """Hide a review (an admin's act, with the reason, audited): it leaves the public list
    and the listing's aggregate in this transaction."""
    review = await db.get(Review, review_id, with_for_update=True)
    if review is None:
        raise NotFound("review", review_id)
    if review.hidden_at is not None:
        raise Conflict(f"review {review_id!r} is hidden already", entity="review", key=review_id)
    review.hidden_at = now
    review.hidden_by = actor.user_id
    review.hidden_reason = reason
    await record(
        db,
        actor,
        action="review.hide",
        entity="review",
        entity_id=review.id,
        before={"hidden": False, "rating": review.rating},
        after={"hidden": True, "hidden_at": now},
        data={"reason": reason},
    )
    await db.execute(
        update(Charger)
        .where(Charger.id == review.charger_id)
        .values(
            rating_sum=Charger.rating_sum - review.rating,
            rating_count=Charger.rating_count - 1,
        )
    )
    await db.flush()
    return review


async def restore(db: AsyncSession, actor: Actor, review_id: str, *, note: str) -> Review:
    """Show a hidden review again (an admin's act, audited): back in the list and the
    aggregate, in this transaction."""
    review = await db.get(Review, review_id, with_for_update=True)
    if review is None:
        raise NotFound("review", review_id)
    if review.hidden_at is None:
        raise Conflict(f"review {review_id!r} is not hidden", entity="review", key=review_id)
    before = {"hidden": True, "hidden_at": review.hidden_at, "reason": review.hidden_reason}
    review.hidden_at = None
    review.hidden_by = None
    review.hidden_reason = None
    await record(
        db,
        actor,
        action="review.restore",
        entity="review",
        entity_id=review.id,
        before=before,
        after={"hidden": False},
        data={"note": note},
    )
    await db.execute(
        update(Charger)
        .where(Charger.id == review.charger_id)
        .values(
            rating_sum=Charger.rating_sum + review.rating,
            rating_count=Charger.rating_count + 1,
        )
    )
    await db.flush()
    return review


async def admin_reviews(
    db: AsyncSession, *, charger_id: str | None, hidden: bool | None, limit: int, offset: int
) -> list[Review]:
    """Every review (hidden ones too), newest first, for the admin's moderation."""
    query = select(Review).order_by(Review.created_at.desc(), Review.id.desc())
    if charger_id is not None:
        query = query.where(Review.charger_id == charger_id)
    if hidden is not None:
        query = query.where(Review.hidden_at.is_not(None) if hidden else Review.hidden_at.is_(None))
    return list(await db.scalars(query.limit(limit).offset(offset)))


async def rate_driver(
    db: AsyncSession,
    principal: Principal,
    session_id: str,
    *,
    rating: int,
    note: str,
    now: datetime,
) -> DriverRating:
    """The host's private rating of the driver of a completed session on their charger."""
    done = await _completed(db, session_id, now, host_user_id=principal.user_id)
    driver_id = done.session.user_id
    assert driver_id is not None  # a billed session names its driver (cloud.payments.settlement)
    rating_id = await db.scalar(
        insert(DriverRating)
        .values(
            id=ulid_pk(),
            session_id=done.session.id,
            driver_id=driver_id,
            host_id=done.host_id,
            rated_by=principal.user_id,
            rating=rating,
            note=note,
        )
        .on_conflict_do_nothing(index_elements=["session_id"])
        .returning(DriverRating.id)
    )
    if rating_id is None:
        raise Conflict(
            f"the driver of session {session_id!r} is rated already",
            entity="driver_rating",
            key=session_id,
        )
    found = await db.get(DriverRating, rating_id)
    assert found is not None
    return found


async def driver_trust(db: AsyncSession, driver_id: str, host_id: str) -> DriverTrust:
    """What hosts think of ``driver_id``: every host's ratings, and this host's lowest."""
    row = (
        await db.execute(
            select(
                func.count(DriverRating.id),
                func.coalesce(func.sum(DriverRating.rating), 0),
                func.min(DriverRating.rating).filter(DriverRating.host_id == host_id),
            ).where(DriverRating.driver_id == driver_id)
        )
    ).one()
    return DriverTrust(
        ratings=int(row[0]),
        rating_sum=int(row[1]),
        lowest_from_host=None if row[2] is None else int(row[2]),
    )
