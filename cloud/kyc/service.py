"""Host KYC in the database: submit, the admin's queue, verify, reject.

A host submits a PAN, optionally an Aadhaar number (stored only masked) and two documents
(PAN card, proof of address), encrypted before they touch the disk
(:class:`~cloud.kyc.storage.DocumentStore`). ``hosts.kyc_status`` follows the latest
submission: ``submitted`` → ``verified`` or ``rejected`` (with the reason); a rejected host
submits again. Every step is audited on the host (entity ``host``: ``kyc.submit``,
``kyc.verify``, ``kyc.reject``) in the step's transaction. A verified host is paid out
(cloud/payouts/service.py) and carries the trusted badge in listings and search.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from cloud.accounts.models import Host, KycStatus
from cloud.audit.service import Actor, record
from cloud.errors import Conflict, NotFound
from cloud.kyc.models import DocumentKind, KycDocument, KycSubmission, SubmissionStatus
from cloud.kyc.storage import DocumentStore


@dataclass(frozen=True, slots=True)
class Upload:
    kind: DocumentKind
    content_type: str
    data: bytes


async def host_of_user(db: AsyncSession, user_id: str, *, lock: bool = False) -> Host:
    query = select(Host).where(Host.user_id == user_id)
    host = await db.scalar(query.with_for_update() if lock else query)
    if host is None:
        raise NotFound("host", user_id)
    return host


async def latest(db: AsyncSession, host_id: str) -> KycSubmission | None:
    found: KycSubmission | None = await db.scalar(
        select(KycSubmission)
        .where(KycSubmission.host_id == host_id)
        .order_by(KycSubmission.submitted_at.desc(), KycSubmission.id.desc())
        .limit(1)
    )
    return found


async def documents(db: AsyncSession, submission_id: str) -> list[KycDocument]:
    return list(
        await db.scalars(
            select(KycDocument)
            .where(KycDocument.submission_id == submission_id)
            .order_by(KycDocument.kind)
        )
    )


async def submit(
    db: AsyncSession,
    store: DocumentStore,
    actor: Actor,
    *,
    user_id: str,
    pan: str,
    aadhaar_masked: str | None,
    uploads: list[Upload],
) -> KycSubmission:
    """A new submission for the caller's host row (locked: two submissions at once queue,
    and the second meets the first's ``submitted``). 409 while one awaits a decision or
    once verified. The documents are written (encrypted) before the rows: a failure in
    between leaves an unreadable orphan file, never a row without its bytes."""
    host = await host_of_user(db, user_id, lock=True)
    if host.kyc_status in (KycStatus.SUBMITTED, KycStatus.VERIFIED):
        raise Conflict(
            f"the host's KYC is {host.kyc_status.value}: nothing to submit",
            entity="kyc",
            key=host.id,
        )
    before = host.kyc_status
    submission = KycSubmission(host_id=host.id, pan=pan, aadhaar_masked=aadhaar_masked)
    db.add(submission)
    await db.flush()
    for upload in uploads:
        key = await store.put(upload.data)
        db.add(
            KycDocument(
                submission_id=submission.id,
                kind=upload.kind,
                storage_key=key,
                content_type=upload.content_type,
                size_bytes=len(upload.data),
            )
        )
    host.kyc_status = KycStatus.SUBMITTED
    host.kyc_rejection_reason = None
    await db.flush()
    await record(
        db,
        actor,
        action="kyc.submit",
        entity="host",
        entity_id=host.id,
        before={"kyc_status": before},
        after={"kyc_status": host.kyc_status},
        data={"submission_id": submission.id, "aadhaar_masked": aadhaar_masked},
    )
    return submission


async def queue(
    db: AsyncSession, status: SubmissionStatus, *, limit: int
) -> list[tuple[KycSubmission, Host]]:
    """Submissions in ``status``, oldest first (the admin's queue)."""
    rows = await db.execute(
        select(KycSubmission, Host)
        .join(Host, Host.id == KycSubmission.host_id)
        .where(KycSubmission.status == status)
        .order_by(KycSubmission.submitted_at, KycSubmission.id)
        .limit(limit)
    )
    return [(s, h) for s, h in rows.tuples()]


async def submission(db: AsyncSession, submission_id: str, *, lock: bool = False) -> KycSubmission:
    found = await db.get(KycSubmission, submission_id, with_for_update=lock)
    if found is None:
        raise NotFound("kyc submission", submission_id)
    return found


async def decide(
    db: AsyncSession,
    actor: Actor,
    *,
    submission_id: str,
    verified: bool,
    reason: str | None,
    now: datetime,
) -> tuple[KycSubmission, Host]:
    """An admin's decision on a submission awaiting one (else 409)."""
    found = await submission(db, submission_id)
    # The host row first, then the submission: the order submit() takes them in.
    host = await db.get(Host, found.host_id, with_for_update=True)
    if host is None:
        raise NotFound("host", found.host_id)
    sub = await db.get(KycSubmission, submission_id, with_for_update=True, populate_existing=True)
    assert sub is not None
    if sub.status is not SubmissionStatus.SUBMITTED:
        raise Conflict(
            f"kyc submission {submission_id} is {sub.status.value}, not awaiting a decision",
            entity="kyc submission",
            key=submission_id,
        )
    before = host.kyc_status
    sub.status = SubmissionStatus.VERIFIED if verified else SubmissionStatus.REJECTED
    sub.decided_at = now
    sub.decided_by = actor.user_id
    sub.rejection_reason = reason
    host.kyc_status = KycStatus.VERIFIED if verified else KycStatus.REJECTED
    host.kyc_verified_at = now if verified else None
    host.kyc_rejection_reason = reason
    host.kyc_ref = sub.id
    await db.flush()
    await record(
        db,
        actor,
        action="kyc.verify" if verified else "kyc.reject",
        entity="host",
        entity_id=host.id,
        before={"kyc_status": before},
        after={"kyc_status": host.kyc_status},
        data={"submission_id": sub.id, "reason": reason} if reason else {"submission_id": sub.id},
    )
    return sub, host


async def document(db: AsyncSession, submission_id: str, kind: DocumentKind) -> KycDocument:
    found = await db.scalar(
        select(KycDocument).where(
            KycDocument.submission_id == submission_id, KycDocument.kind == kind
        )
    )
    if found is None:
        raise NotFound("kyc document", f"{submission_id}/{kind.value}")
    return found
