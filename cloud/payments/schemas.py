"""What the driver's payment routes take and answer (cloud/payments/router.py). Money is
integer paise; ids are ours (a payment's id is also the provider's ``receipt``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, Field, model_validator

from cloud.billing.schemas import DurationMin, EnergyWh, QuoteLineOut
from cloud.payments.models import PaymentStatus
from cloud.schemas import RequestModel, WholeNumber


class WalkUpPayment(RequestModel):
    """A walk-up prepayment: exactly one of ``duration_min`` or ``energy_wh`` (per-kWh
    chargers only), priced by ``POST /quotes``'s rule; the unlock that follows without a
    booking needs it."""

    charger_id: str = Field(min_length=1, max_length=26, pattern=r"^[0-9A-Za-z]+$")
    connector: WholeNumber = Field(ge=1, le=32)
    duration_min: DurationMin | None = None
    energy_wh: EnergyWh | None = None

    schema_rules: ClassVar[dict[str, Any]] = {
        "oneOf": [{"required": ["duration_min"]}, {"required": ["energy_wh"]}],
    }

    @model_validator(mode="after")
    def _one_basis(self) -> WalkUpPayment:
        if (self.duration_min is None) == (self.energy_wh is None):
            raise ValueError("give exactly one of: duration_min, energy_wh")
        return self


class CheckoutAnswer(RequestModel):
    """What Checkout handed back: the provider's payment id and signature (Razorpay,
    Stripe) — or, with the dummy provider, a card number (the brief's test cards:
    ``4111 1111 1111 1111`` succeeds, ``4000 0000 0000 0002`` is declined)."""

    provider_payment_id: str | None = Field(
        default=None, min_length=1, max_length=64, pattern=r"^[0-9A-Za-z_]+$"
    )
    signature: str | None = Field(default=None, min_length=1, max_length=256)
    card_number: str | None = Field(
        default=None, min_length=12, max_length=23, pattern=r"^[0-9 ]+$"
    )

    schema_rules: ClassVar[dict[str, Any]] = {
        "oneOf": [
            {
                "required": ["provider_payment_id", "signature"],
                "not": {"required": ["card_number"]},
            },
            {
                "required": ["card_number"],
                "not": {
                    "anyOf": [{"required": ["provider_payment_id"]}, {"required": ["signature"]}]
                },
            },
        ],
    }

    @model_validator(mode="after")
    def _one_answer(self) -> CheckoutAnswer:
        signed = self.provider_payment_id is not None and self.signature is not None
        partial = (self.provider_payment_id is None) != (self.signature is None)
        if partial or signed == (self.card_number is not None):
            raise ValueError("give provider_payment_id and signature, or card_number")
        return self


class PaymentOut(BaseModel):
    id: str
    provider: str
    status: PaymentStatus
    #: What the driver authorized (a booking's amount, a walk-up quote, an amount due).
    amount_paise: int
    captured_paise: int
    refunded_paise: int
    currency: str
    booking_id: str | None
    #: The session it paid for (the agent's session id), once settled against one.
    session_id: str | None
    created_at: datetime


class OrderOut(PaymentOut):
    """A payment just opened: ``checkout`` is what the provider's Checkout needs (Razorpay's
    key id and order id, Stripe's client secret, the dummy's order id and UPI link)."""

    order_id: str
    checkout: dict[str, str]


class PaymentPage(BaseModel):
    items: list[PaymentOut]
    limit: int
    offset: int


class ReceiptOut(BaseModel):
    """A session's receipt: the bill line by line (the one pricing rule,
    cloud/billing/quote.py) and how it was paid."""

    session_id: str
    charger_id: str | None
    booking_id: str | None
    started_at: datetime
    stopped_at: datetime | None
    meter_start_wh: int
    meter_stop_wh: int
    energy_wh: int
    #: ``unbilled`` (still charging or not yet priced), ``priced`` (billed, the payment not
    #: yet settled: a failed provider call is retried), ``settled``.
    billing_state: str
    lines: list[QuoteLineOut]
    taxable_paise: int
    gst_paise: int
    total_paise: int
    sac: str
    #: The prepayment held for the session (0 without one).
    prepaid_paise: int
    captured_paise: int
    refunded_paise: int
    #: Billed beyond what was captured and kept: owed, and blocks the next booking until paid.
    due_paise: int
    payment_id: str | None
    currency: str = "INR"
