"""What the review routes take and answer."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field, Strict

from cloud.reviews.models import HIDE_REASON_MAX, RATING_NOTE_MAX, REPLY_TEXT_MAX, REVIEW_TEXT_MAX
from cloud.reviews.rules import PLAIN_NOT_BLANK_PATTERN, PLAIN_TEXT_PATTERN
from cloud.schemas import RequestModel, whole_number

#: Bounds on the integer itself, so the schema says minimum/maximum (cloud/payouts/schemas.py).
Stars = Annotated[int, Strict(), Field(ge=1, le=5), BeforeValidator(whole_number)]


class ReviewIn(RequestModel):
    """1 to 5 stars and an optional plain text (no ``<`` or ``>``)."""

    rating: Stars
    text: str = Field(default="", max_length=REVIEW_TEXT_MAX, pattern=PLAIN_TEXT_PATTERN)


class ReplyIn(RequestModel):
    text: str = Field(min_length=1, max_length=REPLY_TEXT_MAX, pattern=PLAIN_NOT_BLANK_PATTERN)


class HideIn(RequestModel):
    reason: str = Field(min_length=1, max_length=HIDE_REASON_MAX, pattern=PLAIN_NOT_BLANK_PATTERN)


class RestoreIn(RequestModel):
    note: str = Field(min_length=1, max_length=HIDE_REASON_MAX, pattern=PLAIN_NOT_BLANK_PATTERN)


class DriverRatingIn(RequestModel):
    """1 to 5 stars and a private note; the driver never sees either."""

    rating: Stars
    note: str = Field(default="", max_length=RATING_NOTE_MAX, pattern=PLAIN_TEXT_PATTERN)


class ReviewOut(BaseModel):
    id: str
    charger_id: str
    rating: int
    text: str
    created_at: datetime
    host_reply: str | None
    host_replied_at: datetime | None


class AdminReviewOut(ReviewOut):
    """A review as an admin sees it (with who wrote it and whether it is hidden)."""

    user_id: str
    hidden_at: datetime | None
    hidden_reason: str | None


class AdminReviewList(BaseModel):
    items: list[AdminReviewOut]


class ReviewPage(BaseModel):
    """A listing's visible reviews, newest first, with its average over all of them."""

    charger_id: str
    average: float | None
    count: int
    items: list[ReviewOut]
    limit: int
    offset: int


class DriverRatingOut(BaseModel):
    id: str
    driver_id: str
    rating: int
    note: str
    created_at: datetime
