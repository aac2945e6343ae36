"""The one interface every payment provider sits behind, and the values that cross it.

:class:`PaymentProvider` is what the rest of the cloud sees: create an order (Razorpay) or a
PaymentIntent (Stripe) for an amount in integer paise, verify what the browser's Checkout
handed back, capture, refund, verify and read a webhook, register a host's payout
destination and pay the host out (RazorpayX payouts, Stripe Connect transfers).
Implementations: :mod:`cloud.payments.razorpay_provider`, :mod:`cloud.payments.stripe_provider`
and :mod:`cloud.payments.dummy` (development, the demo, tests). :func:`cloud.payments.factory.
open_provider` picks one from settings.

Every provider error leaves through :class:`cloud.errors.PaymentProviderError` (the SDKs'
own exceptions are translated where they are caught); a webhook or Checkout answer whose
signature does not verify raises :class:`cloud.errors.SignatureInvalid`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import segno

from cloud.payments.models import PayoutAccountKind

#: NPCI's limit on a UPI transaction reference (``tr``).
UPI_REFERENCE_MAX = 35


class EventKind(StrEnum):
    """What a provider's webhook means for our rows, whatever the provider calls it."""

    PAYMENT_AUTHORIZED = "payment_authorized"
    PAYMENT_CAPTURED = "payment_captured"
    PAYMENT_FAILED = "payment_failed"
    #: Razorpay ``order.paid``: the fulfilment event (the order's payment is captured).
    ORDER_PAID = "order_paid"
    REFUND_PROCESSED = "refund_processed"
    REFUND_FAILED = "refund_failed"
    #: RazorpayX ``payout.processed``: the money reached the host's account.
    PAYOUT_PROCESSED = "payout_processed"
    #: RazorpayX ``payout.reversed`` / ``payout.failed`` / ``payout.rejected``: it did not.
    PAYOUT_FAILED = "payout_failed"
    #: Stripe ``transfer.reversed``: money of a transfer already paid was pulled back from the
    #: connected account (``amount_paise``: the transfer's ``amount_reversed`` so far).
    PAYOUT_REVERSED = "payout_reversed"
    #: Stored (de-duplicated) but changes nothing.
    IGNORED = "ignored"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What we ask a provider for: ``receipt`` is our payment id, unique per order."""

    receipt: str
    amount_paise: int
    currency: str = "INR"
    notes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # bool is an int: refuse it too, an amount is never True.
        if type(self.amount_paise) is not int or self.amount_paise <= 0:
            raise ValueError(f"amount_paise must be a positive int, got {self.amount_paise!r}")


@dataclass(frozen=True, slots=True)
class Order:
    """The provider's order (Razorpay) or PaymentIntent (Stripe): what Checkout needs."""

    provider: str
    order_ref: str
    amount_paise: int
    currency: str
    #: Handed to the browser: Razorpay's key id, Stripe's client secret, the dummy's order.
    checkout: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CheckoutResult:
    """What the browser's Checkout handler posts back to us after the driver paid."""

    payment_ref: str
    signature: str = ""


@dataclass(frozen=True, slots=True)
class PaymentState:
    """A provider's view of one payment (after Checkout verification or a capture)."""

    payment_ref: str
    status: str
    amount_paise: int
    captured_paise: int = 0


@dataclass(frozen=True, slots=True)
class RefundResult:
    refund_ref: str
    amount_paise: int
    #: ``pending`` or ``processed``: the final word comes with the refund webhook.
    status: str


@dataclass(frozen=True, slots=True)
class PayoutDestination:
    """A host's payout account (cloud.payments.models.PayoutAccount) as a provider needs it
    to register it: the fields of its ``kind``, and RazorpayX's contact if one was made."""

    host_id: str
    kind: PayoutAccountKind
    holder_name: str
    ifsc: str | None = None
    account_number: str | None = None
    vpa: str | None = None
    stripe_account_id: str | None = None
    contact_ref: str | None = None


@dataclass(frozen=True, slots=True)
class DestinationRefs:
    """What a provider made for a destination, stored with it so it is made once."""

    #: RazorpayX's contact (``cont_…``); None for providers without one.
    contact_ref: str | None
    #: What payouts are sent to: a RazorpayX fund account, a Stripe account id.
    destination_ref: str


@dataclass(frozen=True, slots=True)
class PayoutRequest:
    #: Our payout id: the provider's idempotency key and reference, so it pays it once.
    reference: str
    amount_paise: int
    #: The host's fund account (RazorpayX) or connected account (Stripe)
    #: (:attr:`DestinationRefs.destination_ref`); empty when the host has none.
    destination: str
    #: The destination's kind: picks RazorpayX's mode (IMPS/NEFT for a bank, UPI for a VPA).
    kind: PayoutAccountKind | None = None
    currency: str = "INR"

    def __post_init__(self) -> None:
        if type(self.amount_paise) is not int or self.amount_paise <= 0:
            raise ValueError(f"amount_paise must be a positive int, got {self.amount_paise!r}")


@dataclass(frozen=True, slots=True)
class PayoutResult:
    payout_ref: str
    status: str


@dataclass(frozen=True, slots=True)
class WebhookEvent:
    """One verified webhook delivery, normalised. ``event_id`` is what de-duplicates it."""

    provider: str
    event_id: str
    event_type: str
    kind: EventKind
    payload: dict[str, Any]
    #: The provider's order id (Razorpay order, Stripe PaymentIntent), when the event has one.
    order_ref: str | None = None
    payment_ref: str | None = None
    refund_ref: str | None = None
    #: Our refund id as the provider echoes it (Razorpay ``receipt``, Stripe metadata): finds
    #: the refund even before we stored the provider's refund id.
    refund_receipt: str | None = None
    #: The provider's payout id, and ours as it echoes it (RazorpayX ``reference_id``).
    payout_ref: str | None = None
    payout_receipt: str | None = None
    amount_paise: int | None = None


class PaymentProvider(Protocol):
    """A payment provider as the cloud uses it. Amounts are integer paise throughout."""

    @property
    def name(self) -> str:
        """``razorpay``, ``stripe`` or ``dummy``: stored in ``payments.provider``."""
        ...

    @property
    def partial_capture(self) -> bool:
        """Whether :meth:`capture` may take less than was authorized (Stripe yes, Razorpay
        no: capture in full, refund the difference — :func:`cloud.payments.transitions.
        settlement`)."""
        ...

    async def create_order(self, request: OrderRequest) -> Order:
        """An order/PaymentIntent for ``request``; idempotent on ``request.receipt``."""
        ...

    async def verify_checkout(self, order_ref: str, result: CheckoutResult) -> PaymentState:
        """Check Checkout's answer against ``order_ref`` — the order id from *our* database,
        never the one the browser sent — and return the payment's state."""
        ...

    async def capture(
        self, payment_ref: str, *, amount_paise: int, currency: str, idempotency_key: str
    ) -> PaymentState:
        """Capture ``amount_paise`` of an authorized payment."""
        ...

    async def refund(
        self, payment_ref: str, *, amount_paise: int, idempotency_key: str, reason: str
    ) -> RefundResult:
        """Refund part or all of a captured payment; the same ``idempotency_key`` twice
        refunds once."""
        ...

    def parse_webhook(self, body: bytes, headers: Mapping[str, str]) -> WebhookEvent:
        """Verify ``body`` (the raw bytes, as received) against its signature header and
        read it; raises :class:`cloud.errors.SignatureInvalid` when it does not verify."""
        ...

    async def payout_destination(self, destination: PayoutDestination) -> DestinationRefs:
        """Register a host's payout account with the provider (RazorpayX: a contact and a
        fund account; Stripe: the connected account is its own reference). Called once per
        destination: the answer is stored. A kind this provider cannot pay to, or details it
        refuses, raise :class:`~cloud.errors.PaymentProviderError` ``invalid-destination``."""
        ...

    async def payout(self, request: PayoutRequest) -> PayoutResult:
        """Pay a host out (RazorpayX payouts / Stripe transfers), keyed on
        ``request.reference``: asked again with it, the provider answers with the same
        payout. A definite refusal raises a code in :data:`cloud.payouts.rules.
        DEFINITE_FAILURES`; any other error leaves the outcome unknown."""
        ...


def upi_intent_link(
    *, vpa: str, payee_name: str, amount_paise: int, reference: str, note: str = ""
) -> str:
    """A UPI deep link (NPCI's ``upi://pay`` scheme) a phone opens in its UPI app, or that a
    QR code carries: ``pa`` the payee's VPA, ``pn`` its name, ``tr`` our reference (the
    order id, at most 35 characters), ``am`` rupees with two decimals from integer paise (no
    float), ``cu`` INR, ``tn`` an optional note. Values are percent-encoded (a space is
    ``%20``: some UPI apps show a ``+`` as it is)."""
    if type(amount_paise) is not int or amount_paise <= 0:
        raise ValueError(f"amount_paise must be a positive int, got {amount_paise!r}")
    if not 1 <= len(reference) <= UPI_REFERENCE_MAX:
        raise ValueError(f"a UPI reference is 1-{UPI_REFERENCE_MAX} characters: {reference!r}")
    rupees, paise = divmod(amount_paise, 100)
    params = {
        "pa": vpa,
        "pn": payee_name,
        "tr": reference,
        "am": f"{rupees}.{paise:02d}",
        "cu": "INR",
    }
    if note:
        params["tn"] = note
    return "upi://pay?" + urlencode(params, quote_via=quote)


def upi_qr_svg(link: str) -> str:
    """The QR code of a UPI intent link as an SVG data URI (``<img src>`` on a second
    screen: the driver scans it with the phone's UPI app). Error correction M, as on the
    charger stickers (cloud/chargers/qr.py)."""
    out = io.BytesIO()
    segno.make_qr(link, error="m", boost_error=False).save(out, kind="svg", border=4)
    return "data:image/svg+xml;base64," + base64.b64encode(out.getvalue()).decode("ascii")


def upi_checkout(
    *, vpa: str, payee_name: str, amount_paise: int, reference: str, note: str = ""
) -> dict[str, str]:
    """What a checkout answer carries for UPI: ``upi_link`` (a phone opens it) and
    ``upi_qr`` (its QR code, for a payment started on another screen)."""
    link = upi_intent_link(
        vpa=vpa,
        payee_name=payee_name,
        amount_paise=amount_paise,
        reference=reference,
        note=note,
    )
    return {"upi_link": link, "upi_qr": upi_qr_svg(link)}
