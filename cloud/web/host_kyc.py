"""The host's KYC page (``/app/host/kyc``): the status, the reason of a rejection, and the
upload form (PAN, optional Aadhaar, the two documents).

The form is read and checked by cloud/kyc/form.py and stored by ``cloud.kyc.service.submit``
— what ``POST /host/kyc`` does, sizes and identity rules included; a wrong field is shown
beside it. The host is the signed-in one (there is no id to aim at another's).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import KycStatus
from cloud.accounts.tokens import Principal
from cloud.audit.actor import actor_of
from cloud.deps import Db, State
from cloud.errors import Conflict, DependencyUnavailable, InvalidRequest, NotFound, PayloadTooLarge
from cloud.kyc import service as kyc
from cloud.kyc.form import checked_kyc, read_kyc_form
from cloud.problems import problem_for
from cloud.web.host import host_or_answer
from cloud.web.render import PageVisitor, Visitor, redirect, render
from cloud.web.router import explain
from cloud.web.websession import CSRF_FIELD

router = APIRouter(include_in_schema=False)


async def _context(db: AsyncSession, host: Principal) -> dict[str, Any] | None:
    """The host row and latest submission; None for a user without a host row."""
    try:
        row = await kyc.host_of_user(db, host.user_id)
    except NotFound:
        return None
    latest = await kyc.latest(db, row.id)
    can_submit = row.kyc_status in (KycStatus.NOT_STARTED, KycStatus.REJECTED)
    return {"host": row, "latest": latest, "can_submit": can_submit}


def _page(
    request: Request,
    visitor: Visitor,
    context: dict[str, Any] | None,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response:
    if context is None:
        return render(
            request,
            visitor,
            "message.html",
            status_code=404,
            title=visitor.gettext("Identity (KYC)"),
            error=visitor.gettext("Your host profile is not set up yet."),
            back="/app/host",
        )
    return render(
        request,
        visitor,
        "host_kyc.html",
        status_code=status_code,
        form=form or {},
        errors=errors or {},
        **context,
    )


@router.get("/app/host/kyc")
async def kyc_page(request: Request, visitor: PageVisitor, db: Db) -> Response:
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    return _page(request, visitor, await _context(db, host))


def _hint(visitor: Visitor, exc: InvalidRequest) -> tuple[str, str]:
    """The field the refusal is about and what it needs, in the host's words."""
    _ = visitor.gettext
    field = getattr(exc, "field", "form") or "form"
    hints = {
        "pan": _("Enter the PAN as on the card: 5 letters, 4 digits, 1 letter (ABCDE1234F)."),
        "aadhaar": _("Enter the 12-digit Aadhaar number, or leave it empty."),
        "pan_card": _("Add a photo or scan of the PAN card: PDF, JPEG or PNG."),
        "address_proof": _("Add a proof of address: PDF, JPEG or PNG."),
    }
    if isinstance(exc, PayloadTooLarge):
        return field, _("This file is too large. Send a smaller scan or photo.")
    return field, hints.get(field, explain(visitor, exc))


@router.post("/app/host/kyc")
async def submit_kyc(request: Request, visitor: PageVisitor, state: State) -> Response:
    """A multipart form: the CSRF token travels in it, so it is read first (bounded: the
    documents' size limit) and checked before anything is stored."""
    if visitor.principal is None:
        visitor.check_csrf(None)  # a stranger: refused like any form without its token
    host = host_or_answer(request, visitor)
    if isinstance(host, Response):
        return host
    max_bytes = state.settings.kyc.document_max_bytes
    form: dict[str, str] = {}
    try:
        texts, files = await read_kyc_form(request, max_bytes, extra=(CSRF_FIELD,))
        visitor.check_csrf(texts.pop(CSRF_FIELD, None))
        if not texts.get("aadhaar", "").strip():
            texts.pop("aadhaar", None)  # an empty field: not given
        form = {k: v for k, v in texts.items() if k == "pan"}
        pan, masked, uploads = checked_kyc(texts, files)
        if state.kyc_documents is None:
            raise DependencyUnavailable("kyc", "no KYC document key is configured")
        async with state.sessions() as db, db.begin():
            await kyc.submit(
                db,
                state.kyc_documents,
                actor_of(host, request, "host"),
                user_id=host.user_id,
                pan=pan,
                aadhaar_masked=masked,
                uploads=uploads,
            )
    except InvalidRequest as exc:
        field, hint = _hint(visitor, exc)
        async with state.sessions() as db:
            context = await _context(db, host)
        return _page(
            request,
            visitor,
            context,
            form=form,
            errors={field: hint},
            status_code=problem_for(exc)[0],
        )
    except (Conflict, NotFound) as exc:
        async with state.sessions() as db:
            context = await _context(db, host)
        return _page(
            request,
            visitor,
            context,
            form=form,
            errors={"form": explain(visitor, exc)},
            status_code=409,
        )
    except DependencyUnavailable as exc:
        return render(
            request,
            visitor,
            "message.html",
            status_code=503,
            title=visitor.gettext("Identity (KYC)"),
            error=explain(visitor, exc),
            back="/app/host/kyc",
        )
    return redirect("/app/host/kyc", visitor)
