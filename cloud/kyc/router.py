"""KYC routes: the host submits and reads their own; admins keep the queue and decide.

Host routes act on the caller's own host row, found from the token (never from the request),
so there is no id to aim at another host's; the admin routes need the admin role.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status

from cloud.audit.actor import AdminActor, HostActor
from cloud.audit.service import record
from cloud.deps import AdminUser, Db, HostUser, State
from cloud.errors import DependencyUnavailable
from cloud.kyc import schemas, service
from cloud.kyc.form import checked_kyc, read_kyc_form
from cloud.kyc.models import DocumentKind, KycDocument, KycSubmission, SubmissionStatus
from cloud.kyc.storage import DocumentStore
from cloud.openapi import problems
from cloud.schemas import PathId
from cloud.state import AppState

router = APIRouter(tags=["kyc"])

#: Multipart framing and the two text fields around the documents.


def _store(state: AppState) -> DocumentStore:
    if state.kyc_documents is None:
        raise DependencyUnavailable("kyc", "no KYC document key is configured")
    return state.kyc_documents


def _submission_out(sub: KycSubmission, docs: list[KycDocument]) -> schemas.KycSubmissionOut:
    return schemas.KycSubmissionOut(
        id=sub.id,
        host_id=sub.host_id,
        status=sub.status,
        pan=sub.pan,
        aadhaar_masked=sub.aadhaar_masked,
        submitted_at=sub.submitted_at,
        decided_at=sub.decided_at,
        rejection_reason=sub.rejection_reason,
        documents=[
            schemas.KycDocumentOut(
                kind=d.kind, content_type=d.content_type, size_bytes=d.size_bytes
            )
            for d in docs
        ],
    )


_FORM_SCHEMA = {
    "type": "object",
    "required": ["pan", "pan_card", "address_proof"],
    "properties": {
        "pan": {"type": "string", "pattern": "^[A-Za-z]{5}[0-9]{4}[A-Za-z]$"},
        "aadhaar": {"type": "string", "pattern": "^[2-9][0-9]{3}[ -]?[0-9]{4}[ -]?[0-9]{4}$"},
        "pan_card": {"type": "string", "format": "binary"},
        "address_proof": {"type": "string", "format": "binary"},
    },
}


@router.post(
    "/host/kyc",
    status_code=status.HTTP_201_CREATED,
    responses=problems(404, 409, 413, 503),
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": _FORM_SCHEMA}},
        }
    },
)
async def submit_kyc(
    *, request: Request, db: Db, state: State, user: HostUser, actor: HostActor
) -> schemas.HostKycOut:
    """Submit KYC as a multipart form: ``pan`` (ABCDE1234F), ``aadhaar`` (optional, 12 digits;
    stored only as ``XXXX-XXXX-1234``), and two files, ``pan_card`` and ``address_proof``.

    What the form's schema cannot state: an Aadhaar number must pass its Verhoeff check
    digit; each file must be a PDF, JPEG or PNG by its content (422 naming the field) and at
    most ``KYC_DOCUMENT_MAX_BYTES`` (413). 409 while a submission awaits a decision or once
    verified; 503 when the API holds no document key."""
    store = _store(state)
    texts, files = await read_kyc_form(request, state.settings.kyc.document_max_bytes)
    pan, masked, uploads = checked_kyc(texts, files)
    await service.submit(
        db, store, actor, user_id=user.user_id, pan=pan, aadhaar_masked=masked, uploads=uploads
    )
    return await _host_kyc(db, user.user_id)


async def _host_kyc(db: Db, user_id: str) -> schemas.HostKycOut:
    host = await service.host_of_user(db, user_id)
    sub = await service.latest(db, host.id)
    return schemas.HostKycOut(
        host_id=host.id,
        kyc_status=host.kyc_status,
        verified_at=host.kyc_verified_at,
        rejection_reason=host.kyc_rejection_reason,
        submission=None
        if sub is None
        else _submission_out(sub, await service.documents(db, sub.id)),
    )


@router.get("/host/kyc", responses=problems(404))
async def host_kyc(db: Db, user: HostUser) -> schemas.HostKycOut:
    """The caller's KYC status and latest submission (404 for a caller with no host row)."""
    return await _host_kyc(db, user.user_id)


@router.get("/admin/kyc")
async def kyc_queue(
    *,
    db: Db,
    _admin: AdminUser,
    submission_status: Annotated[SubmissionStatus, Query(alias="status")] = (
        SubmissionStatus.SUBMITTED
    ),
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> schemas.KycQueue:
    """Submissions in ``status`` (default: awaiting a decision), oldest first."""
    rows = await service.queue(db, submission_status, limit=limit)
    return schemas.KycQueue(
        items=[
            schemas.KycQueueItem(
                id=s.id,
                host_id=h.id,
                host_name=h.display_name,
                status=s.status,
                submitted_at=s.submitted_at,
            )
            for s, h in rows
        ]
    )


@router.get("/admin/kyc/{submission_id}")
async def kyc_submission(
    submission_id: PathId, db: Db, _admin: AdminUser
) -> schemas.KycSubmissionOut:
    sub = await service.submission(db, submission_id)
    return _submission_out(sub, await service.documents(db, sub.id))


@router.get(
    "/admin/kyc/{submission_id}/documents/{kind}",
    response_class=Response,
    responses={
        200: {"content": {"application/pdf": {}, "image/jpeg": {}, "image/png": {}}},
        **problems(500, 503),
    },
)
async def kyc_document(
    submission_id: PathId, kind: DocumentKind, db: Db, state: State, actor: AdminActor
) -> Response:
    """A document's bytes, decrypted, for the admin deciding; the read itself is audited
    (``kyc.document_read``). 503 without the document key; 500 ``document-unreadable`` if
    the stored file does not authenticate (altered, or sealed under another key)."""
    store = _store(state)
    doc = await service.document(db, submission_id, kind)
    sub = await service.submission(db, submission_id)
    data = await store.get(doc.storage_key)
    await record(
        db,
        actor,
        action="kyc.document_read",
        entity="host",
        entity_id=sub.host_id,
        data={"submission_id": submission_id, "kind": kind},
    )
    return Response(
        data,
        media_type=doc.content_type,
        headers={
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": "default-src 'none'",
            "Cache-Control": "no-store",
        },
    )


@router.post("/admin/kyc/{submission_id}/verify", responses=problems(409))
async def verify_kyc(submission_id: PathId, db: Db, actor: AdminActor) -> schemas.KycSubmissionOut:
    """Verify a submission awaiting a decision: the host gets the trusted badge and may be
    paid out. 409 once decided."""
    sub, _ = await service.decide(
        db, actor, submission_id=submission_id, verified=True, reason=None, now=datetime.now(UTC)
    )
    return _submission_out(sub, await service.documents(db, sub.id))


@router.post("/admin/kyc/{submission_id}/reject", responses=problems(409))
async def reject_kyc(
    submission_id: PathId, body: schemas.KycRejectIn, db: Db, actor: AdminActor
) -> schemas.KycSubmissionOut:
    """Reject a submission awaiting a decision with a reason the host reads; they may submit
    again. 409 once decided."""
    sub, _ = await service.decide(
        db,
        actor,
        submission_id=submission_id,
        verified=False,
        reason=body.reason,
        now=datetime.now(UTC),
    )
    return _submission_out(sub, await service.documents(db, sub.id))
