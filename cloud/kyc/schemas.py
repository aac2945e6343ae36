"""What the KYC routes take and answer."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from cloud.accounts.models import KycStatus
from cloud.kyc.models import DocumentKind, SubmissionStatus
from cloud.schemas import NOT_BLANK_PATTERN, RequestModel


class KycDocumentOut(BaseModel):
    kind: DocumentKind
    content_type: str
    size_bytes: int


class KycSubmissionOut(BaseModel):
    id: str
    host_id: str
    status: SubmissionStatus
    pan: str
    #: ``XXXX-XXXX-1234``: the full number is never stored.
    aadhaar_masked: str | None
    submitted_at: datetime
    decided_at: datetime | None
    rejection_reason: str | None
    documents: list[KycDocumentOut]


class HostKycOut(BaseModel):
    """The caller's KYC state and their latest submission."""

    host_id: str
    kyc_status: KycStatus
    verified_at: datetime | None
    rejection_reason: str | None
    submission: KycSubmissionOut | None


class KycQueueItem(BaseModel):
    id: str
    host_id: str
    host_name: str
    status: SubmissionStatus
    submitted_at: datetime


class KycQueue(BaseModel):
    items: list[KycQueueItem]


class KycRejectIn(RequestModel):
    reason: str = Field(min_length=1, max_length=500, pattern=NOT_BLANK_PATTERN)
