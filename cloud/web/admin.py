"""The admin console's pages under ``/app/admin``: listings to moderate, the KYC queue,
disputes, reviews, users, payments and payouts, and the platform's figures.

Admins only: a stranger is sent to sign in, any other signed-in user gets the 403 page.
Every page and form calls the service the JSON API's admin route calls — chargers'
``moderate``, kyc's ``decide`` (and the API's own document route, which audits the read),
disputes' ``resolve`` (the refund through the payment provider), reviews' ``hide`` and
``restore``, admin's ``set_disabled`` and ``figures``, payouts' lists — and each request
body goes through that route's schema, so a rule lives in one place. A refusal (a decided
KYC, a refund above what is left) is a page saying why, with the way back.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Form, Query, Request, Response
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Host, Role
from cloud.accounts.tokens import Principal
from cloud.admin import figures, users
from cloud.admin.schemas import DisableIn
from cloud.audit.actor import actor_of
from cloud.audit.service import Actor
from cloud.chargers import moderation, views
from cloud.chargers.models import ModerationStatus
from cloud.chargers.schemas import ModerationIn, ModerationNoteIn
from cloud.deps import Db, State
from cloud.disputes import service as disputes
from cloud.disputes.models import DisputeStatus
from cloud.disputes.schemas import ResolutionIn
from cloud.errors import CloudError, DependencyUnavailable, NotFound
from cloud.kyc import router as kyc_api
from cloud.kyc import service as kyc
from cloud.kyc.models import DocumentKind, SubmissionStatus
from cloud.kyc.schemas import KycRejectIn
from cloud.payouts import router as payouts_api
from cloud.payouts import service as payouts
from cloud.payouts.schemas import RejectIn
from cloud.problems import problem_for
from cloud.reviews import service as reviews
from cloud.reviews.schemas import HideIn, RestoreIn
from cloud.schemas import PathId
from cloud.state import AppState
from cloud.web.host import paise_of
from cloud.web.render import PageVisitor, Visitor, redirect, render, signin_redirect
from cloud.web.router import CsrfField, explain

router = APIRouter(include_in_schema=False)

Reason = Annotated[str, Form(max_length=1000)]
#: Rows on a queue page (the services' own limits are higher).
PAGE_ROWS = 50
#: The overview's figures cover this many days up to today (India time).
FIGURE_DAYS = 30


def _admin(request: Request, visitor: Visitor) -> Principal | Response:
    """The signed-in admin, or the answer for anyone else (sign in; a 403 page)."""
    if visitor.principal is None:
        return signin_redirect(request, visitor)
    if not visitor.principal.has(Role.ADMIN):
        return render(
            request,
            visitor,
            "message.html",
            status_code=403,
            title=visitor.gettext("For admins"),
            error=visitor.gettext("This page is for the platform's admins."),
            back="/app",
        )
    return visitor.principal


def mask_pan(pan: str) -> str:
    """``ABCPE1234F`` → ``XXXXX1234F``: the page shows what identifies the card without
    the whole number (the admin compares it with the decrypted card, an audited read)."""
    return "X" * 5 + pan[5:] if len(pan) == 10 else "X" * len(pan)


def _refused(request: Request, visitor: Visitor, back: str, why: str, status: int) -> Response:
    return render(
        request,
        visitor,
        "message.html",
        status_code=status,
        title=visitor.gettext("Not done"),
        error=why,
        back=back,
    )


def _invalid(visitor: Visitor, exc: ValidationError) -> str:
    """The schema's complaint, named by field (a reason left empty, an amount too high)."""
    parts = []
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or visitor.gettext("form")
        parts.append(f"{field}: {error['msg']}")
    return visitor.gettext("Please check the form: %(why)s") % {"why": "; ".join(parts)}


Action = Callable[[AppState, Actor], Awaitable[object]]


async def _act(
    request: Request,
    visitor: Visitor,
    state: AppState,
    csrf: str,
    back: str,
    *,
    build: Callable[[], Action],
) -> Response:
    """A console form: CSRF first, then the admin, then ``build()`` (the schema's
    validation) and the action; back to ``back`` when done, a page saying why when not."""
    visitor.check_csrf(csrf)
    admin = _admin(request, visitor)
    if isinstance(admin, Response):
        return admin
    try:
        action = build()
        await action(state, actor_of(admin, request, "admin"))
    except ValidationError as exc:
        return _refused(request, visitor, back, _invalid(visitor, exc), 422)
    except NotFound:
        return render(request, visitor, "not_found.html", status_code=404)
    except CloudError as exc:
        return _refused(request, visitor, back, explain(visitor, exc), problem_for(exc)[0])
    return redirect(back, visitor)


def _in_tx(work: Callable[[AsyncSession, Actor], Awaitable[object]]) -> Action:
    """``work`` in a transaction of its own, committed before the redirect."""

    async def run(state: AppState, actor: Actor) -> None:
        async with state.sessions() as db, db.begin():
            await work(db, actor)

    return run


M = TypeVar("M", bound=BaseModel)


def _valid(model: type[M], **fields: Any) -> M:
    return model.model_validate(fields)


# --- the overview --------------------------------------------------------------------------


@router.get("/app/admin")
async def overview(*, request: Request, visitor: PageVisitor, db: Db) -> Response:
    """The platform's figures for the last days (``GET /admin/figures``'s service) and
    the queues' lengths."""
    admin = _admin(request, visitor)
    if isinstance(admin, Response):
        return admin
    now = datetime.now(UTC)
    today = now.astimezone(figures.REPORT_ZONE).date()
    found = await figures.figures(db, today - timedelta(days=FIGURE_DAYS - 1), today, now=now)
    unresolved = 0
    for s in (DisputeStatus.OPEN, DisputeStatus.UNDER_REVIEW):
        unresolved += len(
            await disputes.list_disputes(
                db, admin, status=s, limit=PAGE_ROWS, offset=0, everyone=True
            )
        )
    queues = {
        "chargers": len(
            await moderation.moderation_queue(db, ModerationStatus.PENDING, limit=PAGE_ROWS)
        ),
        "kyc": len(await kyc.queue(db, SubmissionStatus.SUBMITTED, limit=PAGE_ROWS)),
        "disputes": unresolved,
    }
    totals = {
        "sessions": sum(d.sessions for d in found.days),
        "energy_wh": sum(d.energy_wh for d in found.days),
        "revenue_paise": sum(d.revenue_paise for d in found.days),
        "commission_paise": sum(d.commission_paise for d in found.days),
        "gst_paise": sum(d.gst_paise for d in found.days),
    }
    return render(
        request,
        visitor,
        "admin_home.html",
        figures=found,
        totals=totals,
        queues=queues,
        days=FIGURE_DAYS,
        limit=PAGE_ROWS,
    )


# --- listings ------------------------------------------------------------------------------


@router.get("/app/admin/chargers")
async def listing_queue(
    *,
    request: Request,
    visitor: PageVisitor,
    db: Db,
    status: ModerationStatus = ModerationStatus.PENDING,
) -> Response:
    admin = _admin(request, visitor)
    if isinstance(admin, Response):
        return admin
    rows = await moderation.moderation_queue(db, status, limit=PAGE_ROWS)
    listed = [await views.host_view(db, c) for c in rows]
    return render(
        request,
        visitor,
        "admin_chargers.html",
        chargers=listed,
        status=status,
        statuses=list(ModerationStatus),
    )


def _moderation(charger_id: str, decision: ModerationStatus, note: str) -> Callable[[], Action]:
    def build() -> Action:
        if decision is ModerationStatus.APPROVED:
            given = {"note": note.strip()} if note.strip() else {}
            text = _valid(ModerationIn, **given).note
        else:
            text = _valid(ModerationNoteIn, note=note.strip()).note

        async def work(db: AsyncSession, actor: Actor) -> None:
            await moderation.moderate(db, charger_id, decision, text, actor)

        return _in_tx(work)

    return build


@router.post("/app/admin/chargers/{charger_id}/approve")
async def approve_listing(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    charger_id: PathId,
    csrf: CsrfField = "",
    note: Reason = "",
) -> Response:
    return await _act(
        request,
        visitor,
        state,
        csrf,
        "/app/admin/chargers",
        build=_moderation(charger_id, ModerationStatus.APPROVED, note),
    )


@router.post("/app/admin/chargers/{charger_id}/reject")
async def reject_listing(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    charger_id: PathId,
    csrf: CsrfField = "",
    note: Reason = "",
) -> Response:
    return await _act(
        request,
        visitor,
        state,
        csrf,
        "/app/admin/chargers",
        build=_moderation(charger_id, ModerationStatus.REJECTED, note),
    )


@router.post("/app/admin/chargers/{charger_id}/suspend")
async def suspend_listing(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    charger_id: PathId,
    csrf: CsrfField = "",
    note: Reason = "",
) -> Response:
    return await _act(
        request,
        visitor,
        state,
        csrf,
        "/app/admin/chargers?status=approved",
        build=_moderation(charger_id, ModerationStatus.SUSPENDED, note),
    )


# --- KYC -----------------------------------------------------------------------------------


@router.get("/app/admin/kyc")
async def kyc_queue(
    *,
    request: Request,
    visitor: PageVisitor,
    db: Db,
    status: SubmissionStatus = SubmissionStatus.SUBMITTED,
) -> Response:
    admin = _admin(request, visitor)
    if isinstance(admin, Response):
        return admin
    rows = await kyc.queue(db, status, limit=PAGE_ROWS)
    return render(
        request,
        visitor,
        "admin_kyc.html",
        rows=rows,
        status=status,
        statuses=list(SubmissionStatus),
    )


@router.get("/app/admin/kyc/{submission_id}")
async def kyc_submission(
    *, request: Request, visitor: PageVisitor, db: Db, submission_id: PathId
) -> Response:
    """One submission: masked PAN and Aadhaar, the documents' kinds and sizes (opened one
    by one through the audited document route), the decision forms."""
    admin = _admin(request, visitor)
    if isinstance(admin, Response):
        return admin
    try:
        sub = await kyc.submission(db, submission_id)
    except NotFound:
        return render(request, visitor, "not_found.html", status_code=404)
    docs = await kyc.documents(db, sub.id)
    host = await db.get(Host, sub.host_id)
    awaiting = sub.status is SubmissionStatus.SUBMITTED
    return render(
        request,
        visitor,
        "admin_kyc_detail.html",
        sub=sub,
        docs=docs,
        host=host,
        pan=mask_pan(sub.pan),
        awaiting=awaiting,
    )


@router.get("/app/admin/kyc/{submission_id}/documents/{kind}")
async def kyc_document(
    *,
    request: Request,
    visitor: PageVisitor,
    db: Db,
    state: State,
    submission_id: PathId,
    kind: DocumentKind,
) -> Response:
    """The document decrypted, for this admin only: ``GET /admin/kyc/…/documents/…``
    itself (its audit record of the read, its no-store and sandboxing headers)."""
    admin = _admin(request, visitor)
    if isinstance(admin, Response):
        return admin
    try:
        return await kyc_api.kyc_document(
            submission_id, kind, db, state, actor_of(admin, request, "admin")
        )
    except NotFound:
        return render(request, visitor, "not_found.html", status_code=404)
    except DependencyUnavailable as exc:
        return _refused(
            request, visitor, f"/app/admin/kyc/{submission_id}", explain(visitor, exc), 503
        )


def _kyc_decision(submission_id: str, *, verified: bool, reason: str) -> Callable[[], Action]:
    def build() -> Action:
        text = None if verified else _valid(KycRejectIn, reason=reason.strip()).reason

        async def work(db: AsyncSession, actor: Actor) -> None:
            await kyc.decide(
                db,
                actor,
                submission_id=submission_id,
                verified=verified,
                reason=text,
                now=datetime.now(UTC),
            )

        return _in_tx(work)

    return build


@router.post("/app/admin/kyc/{submission_id}/verify")
async def verify_kyc(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    submission_id: PathId,
    csrf: CsrfField = "",
) -> Response:
    return await _act(
        request,
        visitor,
        state,
        csrf,
        "/app/admin/kyc",
        build=_kyc_decision(submission_id, verified=True, reason=""),
    )


@router.post("/app/admin/kyc/{submission_id}/reject")
async def reject_kyc(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    submission_id: PathId,
    csrf: CsrfField = "",
    reason: Reason = "",
) -> Response:
    build = _kyc_decision(submission_id, verified=False, reason=reason)
    return await _act(request, visitor, state, csrf, "/app/admin/kyc", build=build)


# --- disputes ------------------------------------------------------------------------------


@router.get("/app/admin/disputes")
async def dispute_queue(
    *, request: Request, visitor: PageVisitor, db: Db, status: DisputeStatus | None = None
) -> Response:
    """Unresolved disputes (open, then under review) by default; ``status`` for one."""
    admin = _admin(request, visitor)
    if isinstance(admin, Response):
        return admin
    wanted = [status] if status else [DisputeStatus.OPEN, DisputeStatus.UNDER_REVIEW]
    rows = []
    for s in wanted:
        for d in await disputes.list_disputes(
            db, admin, status=s, limit=PAGE_ROWS, offset=0, everyone=True
        ):
            photos = await disputes.photos_of(db, d.id)
            left = await disputes.left_to_refund(db, d)
            rows.append((d, await disputes.session_public_id(db, d), photos, left))
    return render(
        request,
        visitor,
        "admin_disputes.html",
        rows=rows,
        status=status,
        statuses=list(DisputeStatus),
    )


@router.post("/app/admin/disputes/{dispute_id}/resolve")
async def resolve_dispute(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    dispute_id: PathId,
    csrf: CsrfField = "",
    outcome: Annotated[str, Form(max_length=20)] = "",
    refund: Annotated[str, Form(max_length=20)] = "",
    charged_to: Annotated[str, Form(max_length=20)] = "host",
    note: Reason = "",
) -> Response:
    """``POST /admin/disputes/{id}/resolve``'s service: the refund (rupees as typed, only
    with a partial refund) through the ledger and the payment provider."""

    def build() -> Action:
        amount = paise_of(refund) if outcome == "partial_refund" else None
        body = _valid(
            ResolutionIn,
            outcome=outcome,
            refund_paise=amount,
            charged_to=charged_to,
            note=note.strip(),
        )

        async def run(state: AppState, actor: Actor) -> None:
            if state.payments is None:
                raise DependencyUnavailable("payments", "no payment provider is configured")
            await disputes.resolve(
                state.sessions,
                state.payments,
                actor,
                dispute_id,
                outcome=body.outcome,
                refund_paise=body.refund_paise,
                charged_to=body.charged_to,
                note=body.note,
                now=datetime.now(UTC),
                billing=state.settings.billing,
            )

        return run

    return await _act(request, visitor, state, csrf, "/app/admin/disputes", build=build)


# --- reviews -------------------------------------------------------------------------------


@router.get("/app/admin/reviews")
async def review_queue(
    *, request: Request, visitor: PageVisitor, db: Db, hidden: bool | None = None
) -> Response:
    """Every review, newest first (``hidden`` filters): hide one with a reason, or show a
    hidden one again."""
    admin = _admin(request, visitor)
    if isinstance(admin, Response):
        return admin
    rows = await reviews.admin_reviews(
        db, charger_id=None, hidden=hidden, limit=PAGE_ROWS, offset=0
    )
    return render(request, visitor, "admin_reviews.html", rows=rows, hidden=hidden)


@router.post("/app/admin/reviews/{review_id}/hide")
async def hide_review(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    review_id: PathId,
    csrf: CsrfField = "",
    reason: Reason = "",
) -> Response:
    def build() -> Action:
        text = _valid(HideIn, reason=reason.strip()).reason

        async def work(db: AsyncSession, actor: Actor) -> None:
            await reviews.hide(db, actor, review_id, reason=text, now=datetime.now(UTC))

        return _in_tx(work)

    return await _act(request, visitor, state, csrf, "/app/admin/reviews", build=build)


@router.post("/app/admin/reviews/{review_id}/restore")
async def restore_review(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    review_id: PathId,
    csrf: CsrfField = "",
    note: Reason = "",
) -> Response:
    def build() -> Action:
        text = _valid(RestoreIn, note=note.strip()).note

        async def work(db: AsyncSession, actor: Actor) -> None:
            await reviews.restore(db, actor, review_id, note=text)

        return _in_tx(work)

    return await _act(request, visitor, state, csrf, "/app/admin/reviews?hidden=true", build=build)


# --- users ---------------------------------------------------------------------------------


@router.get("/app/admin/users")
async def user_list(
    *,
    request: Request,
    visitor: PageVisitor,
    db: Db,
    q: Annotated[str, Query(max_length=100, pattern=r"^[^\x00]*$")] = "",
    role: Role | None = None,
) -> Response:
    admin = _admin(request, visitor)
    if isinstance(admin, Response):
        return admin
    found = await users.find_users(
        db,
        users.UserFilter(
            text=q.strip() or None, role=role, disabled=None, limit=PAGE_ROWS, offset=0
        ),
    )
    return render(
        request,
        visitor,
        "admin_users.html",
        rows=found,
        q=q,
        role=role,
        roles=list(Role),
        me_id=admin.user_id,
    )


def _disabling(user_id: str, *, disabled: bool, reason: str) -> Callable[[], Action]:
    def build() -> Action:
        text = _valid(DisableIn, reason=reason.strip()).reason if disabled else None

        async def work(db: AsyncSession, actor: Actor) -> None:
            await users.set_disabled(
                db, actor, user_id=user_id, disabled=disabled, reason=text, now=datetime.now(UTC)
            )

        return _in_tx(work)

    return build


@router.post("/app/admin/users/{user_id}/disable")
async def disable_user(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    user_id: PathId,
    csrf: CsrfField = "",
    reason: Reason = "",
) -> Response:
    """``set_disabled``: the account's tokens stop working everywhere, its web sessions
    end with them."""
    return await _act(
        request,
        visitor,
        state,
        csrf,
        "/app/admin/users",
        build=_disabling(user_id, disabled=True, reason=reason),
    )


@router.post("/app/admin/users/{user_id}/enable")
async def enable_user(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    user_id: PathId,
    csrf: CsrfField = "",
) -> Response:
    return await _act(
        request,
        visitor,
        state,
        csrf,
        "/app/admin/users",
        build=_disabling(user_id, disabled=False, reason=""),
    )


# --- money ---------------------------------------------------------------------------------


@router.get("/app/admin/money")
async def money(*, request: Request, visitor: PageVisitor, db: Db) -> Response:
    """The newest payments and payouts (``GET /admin/payments`` and ``/admin/payouts``'s
    queries)."""
    admin = _admin(request, visitor)
    if isinstance(admin, Response):
        return admin
    paid = await payouts.list_payments(db, payouts.PaymentFilter(limit=PAGE_ROWS))
    out = await payouts.list_payouts(db, limit=PAGE_ROWS)
    return render(request, visitor, "admin_money.html", payments=paid, payouts=out)


@router.post("/app/admin/payouts/{payout_id}/approve")
async def approve_payout(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    payout_id: PathId,
    csrf: CsrfField = "",
) -> Response:
    """``POST /admin/payouts/{id}/approve``'s own handler: paid out through the provider
    (the page then shows how it ended: paid, failed, or still processing)."""

    def build() -> Action:
        async def run(state: AppState, actor: Actor) -> None:
            assert visitor.principal is not None  # _act let only an admin through
            await payouts_api.approve_payout(payout_id, state, visitor.principal, actor)

        return run

    return await _act(request, visitor, state, csrf, "/app/admin/money", build=build)


@router.post("/app/admin/payouts/{payout_id}/reject")
async def reject_payout(
    *,
    request: Request,
    visitor: PageVisitor,
    state: State,
    payout_id: PathId,
    csrf: CsrfField = "",
    reason: Reason = "",
) -> Response:
    """``POST /admin/payouts/{id}/reject``'s own handler (the amount is payable again)."""

    def build() -> Action:
        body = _valid(RejectIn, reason=reason.strip())

        async def work(db: AsyncSession, actor: Actor) -> None:
            assert visitor.principal is not None  # _act let only an admin through
            await payouts_api.reject_payout(payout_id, db, visitor.principal, actor, body)

        return _in_tx(work)

    return await _act(request, visitor, state, csrf, "/app/admin/money", build=build)
