"""What the payout routes take and answer. Money is integer paise."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, Field, Strict, StrictBool

from cloud.payments.models import (
    ACCOUNT_NUMBER_PATTERN,
    IFSC_PATTERN,
    STRIPE_ACCOUNT_PATTERN,
    VPA_PATTERN,
    PaymentStatus,
    PayoutAccountKind,
    PayoutStatus,
)
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


#: The name on the account, as the bank or RazorpayX takes it: letters first, then letters,
#: digits, spaces and ``.,'()/_-``.
HOLDER_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9 .,'()/_-]{2,119}$"
HolderName = Annotated[str, Field(min_length=3, max_length=120, pattern=HOLDER_NAME_PATTERN)]


class BankAccountIn(RequestModel):
    """A bank account paid by RazorpayX (IMPS, NEFT above ₹5 lakh)."""

    kind: Literal["bank_account"]
    holder_name: HolderName
    #: 4 letters (the bank), ``0``, 6 letters or digits (the branch); capitals.
    ifsc: str = Field(min_length=11, max_length=11, pattern=IFSC_PATTERN)
    account_number: str = Field(min_length=9, max_length=18, pattern=ACCOUNT_NUMBER_PATTERN)


class VpaIn(RequestModel):
    """A UPI VPA (``name@bank``) paid by RazorpayX over UPI."""

    kind: Literal["vpa"]
    holder_name: HolderName
    vpa: str = Field(min_length=5, max_length=320, pattern=VPA_PATTERN)


class StripeAccountIn(RequestModel):
    """A Stripe Connect account (``acct_…``) paid by transfers."""

    kind: Literal["stripe_account"]
    holder_name: HolderName
    stripe_account_id: str = Field(min_length=6, max_length=63, pattern=STRIPE_ACCOUNT_PATTERN)


PayoutAccountIn = Annotated[BankAccountIn | VpaIn | StripeAccountIn, Field(discriminator="kind")]


class PayoutAccountOut(BaseModel):
    """The caller's payout destination; the account number masked to its last four digits."""

    host_id: str
    kind: PayoutAccountKind
    holder_name: str
    ifsc: str | None
    account_number_masked: str | None
    vpa: str | None
    stripe_account_id: str | None
    #: Registered with the payment provider (RazorpayX fund account made): it is done on
    #: the first payout after the account is set.
    registered: bool
    updated_at: datetime


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
