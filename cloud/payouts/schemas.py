"""What the payout routes take and answer. Money is integer paise."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, Field, Strict, StrictBool

from cloud.payments.models import PaymentStatus, PayoutStatus
from cloud.schemas import NOT_BLANK_PATTERN, RequestModel, whole_number

#: A payout no larger than this is a typo, not an earning (₹1 crore).
MAX_PAYOUT_PAISE = 10_000_000_00


#: A :data:`cloud.schemas.WholeNumber` with its bounds on the integer itself, so the schema of
#: the optional field says ``minimum``/``maximum`` (bounds given to the optional field come
#: out as ``ge``/``le``, words JSON Schema does not know).
PayoutPaise = Annotated[
    int, Strict(), Field(ge=1, le=MAX_PAYOUT_PAISE), BeforeValidator(whole_number)
]


class EarningsOut(BaseModel):
    """The caller's balance as the ledger has it now: ``earned_paise = held_paise +
    requested_paise + payable_paise + paid_paise``."""

    host_id: str
    currency: str = "INR"
    earned_paise: int
    held_paise: int
    requested_paise: int
    payable_paise: int
    paid_paise: int
    #: Of the earnings, those of sessions under an open dispute (held until it is resolved).
    disputed_paise: int
    #: Earnings become payable this many days after they are billed.
    hold_days: int
    weekly_payouts: bool


class PayoutRequestIn(RequestModel):
    """``amount_paise``: how much to pay out, at most the payable balance; omitted, all of
    it."""

    amount_paise: PayoutPaise | None = None


class PayoutSettingsIn(RequestModel):
    #: Pay the payable balance out every week without asking (``chargemitra-cloud payouts
    #: run``, called weekly by a timer); needs a verified KYC. true or false only (not 0/1).
    weekly_payouts: StrictBool


class PayoutSettingsOut(BaseModel):
    host_id: str
    weekly_payouts: bool


class RejectIn(RequestModel):
    reason: str = Field(min_length=1, max_length=500, pattern=NOT_BLANK_PATTERN)


class PayoutOut(BaseModel):
    id: str
    host_id: str
    amount_paise: int
    currency: str = "INR"
    status: PayoutStatus
    automatic: bool
    period_start: datetime
    period_end: datetime
    created_at: datetime
    decided_at: datetime | None
    provider_ref: str | None
    note: str | None


class PayoutList(BaseModel):
    items: list[PayoutOut]


class AdminPaymentOut(BaseModel):
    """A payment as the admin console lists it (every driver's; the driver's own view is
    :class:`cloud.payments.schemas.PaymentOut`). Named apart from it: two schemas of one
    name get module-path names in the OpenAPI document, which generated clients refuse."""

    id: str
    user_id: str
    booking_id: str | None
    session_id: int | None
    provider: str
    provider_order_id: str | None
    provider_payment_id: str | None
    amount_paise: int
    captured_paise: int
    currency: str
    status: PaymentStatus
    created_at: datetime
    updated_at: datetime


class AdminPaymentList(BaseModel):
    items: list[AdminPaymentOut]
