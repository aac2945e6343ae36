"""Forward-only payment and refund states, and how a bill is settled: pure, no I/O.

Webhooks are at-least-once and arrive late and out of order (DESIGN.md §8): Razorpay may send
``payment.failed`` and then ``payment.captured`` for one UPI payment, when the bank's late
success overrides an earlier timeout. So a state only ever moves *up* this order, and an event
that would move it down (or sideways) changes nothing::

    created → failed → authorized → captured → partially_refunded → refunded

``failed`` sits below ``authorized`` on purpose: a failure is never final while the provider
can still report the money arrived; a capture is final against any later failure.
"""

from __future__ import annotations

from dataclasses import dataclass

from cloud.payments.models import PaymentStatus, RefundStatus
from cloud.payments.provider import EventKind

PAYMENT_ORDER: tuple[PaymentStatus, ...] = (
    PaymentStatus.CREATED,
    PaymentStatus.FAILED,
    PaymentStatus.AUTHORIZED,
    PaymentStatus.CAPTURED,
    PaymentStatus.PARTIALLY_REFUNDED,
    PaymentStatus.REFUNDED,
)
_RANK = {status: rank for rank, status in enumerate(PAYMENT_ORDER)}

_TARGET = {
    EventKind.PAYMENT_FAILED: PaymentStatus.FAILED,
    EventKind.PAYMENT_AUTHORIZED: PaymentStatus.AUTHORIZED,
    EventKind.PAYMENT_CAPTURED: PaymentStatus.CAPTURED,
    EventKind.ORDER_PAID: PaymentStatus.CAPTURED,
}


def advance(current: PaymentStatus, target: PaymentStatus) -> PaymentStatus | None:
    """``target`` if it is ahead of ``current``, else None (a late or repeated report)."""
    return target if _RANK[target] > _RANK[current] else None


def payment_target(kind: EventKind) -> PaymentStatus | None:
    """The payment state an event reports, or None for events that are not about one."""
    return _TARGET.get(kind)


def after_refunds(captured_paise: int, refunded_paise: int) -> PaymentStatus:
    """A captured payment's state given what has been refunded of it so far."""
    if refunded_paise <= 0:
        return PaymentStatus.CAPTURED
    if refunded_paise >= captured_paise:
        return PaymentStatus.REFUNDED
    return PaymentStatus.PARTIALLY_REFUNDED


def advance_refund(current: RefundStatus, target: RefundStatus) -> RefundStatus | None:
    """A pending refund becomes processed or failed once; those are final."""
    if current is RefundStatus.PENDING and target is not RefundStatus.PENDING:
        return target
    return None


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a bill is taken from an authorization, in integer paise."""

    capture_paise: int
    refund_paise: int
    #: What the bill exceeds the authorization by: owed by the driver, not captured here.
    due_paise: int


def settlement(*, authorized_paise: int, billed_paise: int, partial_capture: bool) -> Settlement:
    """Capture and refund amounts so that captured - refunded = min(bill, authorization).

    Razorpay cannot capture part of an authorization (the capture amount must equal the
    authorized amount), so without ``partial_capture`` we capture it all and refund the
    difference. Stripe may capture less; a zero bill still captures in full and refunds in
    full there, so every settled payment leaves the same capture-then-refund trail.
    """
    for name, value in (("authorized_paise", authorized_paise), ("billed_paise", billed_paise)):
        if type(value) is not int or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    taken = min(billed_paise, authorized_paise)
    due = billed_paise - taken
    if partial_capture and taken > 0:
        return Settlement(capture_paise=taken, refund_paise=0, due_paise=due)
    return Settlement(
        capture_paise=authorized_paise, refund_paise=authorized_paise - taken, due_paise=due
    )
