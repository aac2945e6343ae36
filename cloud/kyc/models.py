"""KYC submissions and their documents (migration 0014).

A host's ``hosts.kyc_status`` mirrors their latest submission; every submission is kept, so
an admin sees what was rejected before. The documents' bytes are not here: they are
encrypted files (cloud/kyc/storage.py) named by ``storage_key``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    CheckConstraint,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from cloud.columns import ULID_LEN, text_enum, ulid_pk
from cloud.db import Base

#: A PAN: five letters, four digits, one letter (Income-tax Rules 1962, r. 114).
PAN_PATTERN = "^[A-Z]{5}[0-9]{4}[A-Z]$"
#: The only form of an Aadhaar number ever stored (Aadhaar Act 2016 s. 29; UIDAI's masking).
AADHAAR_MASKED_PATTERN = "^XXXX-XXXX-[0-9]{4}$"


class SubmissionStatus(StrEnum):
    SUBMITTED = "submitted"
    VERIFIED = "verified"
    REJECTED = "rejected"


class DocumentKind(StrEnum):
    PAN_CARD = "pan_card"
    ADDRESS_PROOF = "address_proof"


class KycSubmission(Base):
    __tablename__ = "kyc_submissions"
    __table_args__ = (
        CheckConstraint(f"pan ~ '{PAN_PATTERN}'", name="pan_format"),
        CheckConstraint(f"aadhaar_masked ~ '{AADHAAR_MASKED_PATTERN}'", name="aadhaar_masked"),
        # One submission awaiting a decision per host.
        Index(
            "uq_kyc_submissions_open",
            "host_id",
            unique=True,
            postgresql_where=text("status = 'submitted'"),
        ),
        Index("ix_kyc_submissions_queue", "status", "submitted_at"),
    )

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    host_id: Mapped[str] = mapped_column(ForeignKey("hosts.id"), index=True)
    pan: Mapped[str] = mapped_column(String(10))
    aadhaar_masked: Mapped[str | None] = mapped_column(String(14))
    status: Mapped[SubmissionStatus] = mapped_column(
        text_enum(SubmissionStatus, "kyc_submission_status"),
        default=SubmissionStatus.SUBMITTED,
        server_default=SubmissionStatus.SUBMITTED.value,
    )
    submitted_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    decided_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    decided_by: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    rejection_reason: Mapped[str | None] = mapped_column(String(500))


class KycDocument(Base):
    __tablename__ = "kyc_documents"
    __table_args__ = (UniqueConstraint("submission_id", "kind"),)

    id: Mapped[str] = mapped_column(String(ULID_LEN), primary_key=True, default=ulid_pk)
    submission_id: Mapped[str] = mapped_column(ForeignKey("kyc_submissions.id", ondelete="CASCADE"))
    kind: Mapped[DocumentKind] = mapped_column(text_enum(DocumentKind, "kyc_document_kind"))
    #: The encrypted file's name in the document store (minted there, never a client's).
    storage_key: Mapped[str] = mapped_column(String(40), unique=True)
    content_type: Mapped[str] = mapped_column(String(40))
    #: The plaintext's size.
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
