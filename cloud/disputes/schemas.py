"""What the dispute routes take and answer. Money is integer paise."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, BeforeValidator, Field, Strict, model_validator

from cloud.disputes.models import (
    DESCRIPTION_MAX,
    RESOLUTION_MAX,
    RESPONSE_MAX,
    ChargedTo,
    DisputeReason,
    DisputeStatus,
)
from cloud.disputes.rules import Outcome
from cloud.reviews.rules import PLAIN_NOT_BLANK_PATTERN
from cloud.schemas import RequestModel, whole_number

#: No session costs more than this (₹1 lakh): a larger refund is a typo.
MAX_REFUND_PAISE = 100_000_00

RefundPaise = Annotated[
    int, Strict(), Field(ge=1, le=MAX_REFUND_PAISE), BeforeValidator(whole_number)
]


class DisputeIn(RequestModel):
    reason_code: DisputeReason
    description: str = Field(
        min_length=1, max_length=DESCRIPTION_MAX, pattern=PLAIN_NOT_BLANK_PATTERN
    )


class DisputeResponseIn(RequestModel):
    text: str = Field(min_length=1, max_length=RESPONSE_MAX, pattern=PLAIN_NOT_BLANK_PATTERN)


class ResolutionIn(RequestModel):
    """``full_refund`` (all the session's payments have left to refund: omit
    ``refund_paise``), ``partial_refund`` (``refund_paise``, at most that) or ``rejected``
    (no ``refund_paise``). ``charged_to``: ``host`` (default: the host's earning from the
    session gives it back as far as it goes, the platform the rest) or ``platform``."""

    outcome: Outcome
    refund_paise: RefundPaise | None = None
    charged_to: ChargedTo = ChargedTo.HOST
    note: str = Field(min_length=1, max_length=RESOLUTION_MAX, pattern=PLAIN_NOT_BLANK_PATTERN)

    schema_rules: ClassVar[dict[str, Any]] = {
        "oneOf": [
            {"properties": {"outcome": {"const": "partial_refund"}}, "required": ["refund_paise"]},
            {
                "properties": {"outcome": {"enum": ["full_refund", "rejected"]}},
                "not": {"required": ["refund_paise"]},
            },
        ]
    }

    @model_validator(mode="after")
    def _amount_with_partial_only(self) -> ResolutionIn:
        if (self.outcome is Outcome.PARTIAL_REFUND) != (self.refund_paise is not None):
            raise ValueError("refund_paise comes with a partial_refund, and only with it")
        return self


class DisputePhotoOut(BaseModel):
    id: str
    content_type: str
    size_bytes: int
    url: str


class DisputeOut(BaseModel):
    id: str
    session_id: str
    raised_by: str
    reason_code: DisputeReason
    description: str
    status: DisputeStatus
    host_response: str | None
    host_responded_at: datetime | None
    resolution: str | None
    refund_paise: int
    charged_to: ChargedTo | None
    resolved_at: datetime | None
    created_at: datetime
    photos: list[DisputePhotoOut]


class DisputeList(BaseModel):
    items: list[DisputeOut]
