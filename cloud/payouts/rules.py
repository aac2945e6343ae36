"""The payout states and the weekly schedule (pure).

::

    pending ──approve──▶ processing ──provider paid──▶ paid
       │                     │ ▲
       │                     │ └── retried (same reference: the provider pays once)
       └──reject──▶ rejected └──provider refused──▶ failed

``pending`` and ``processing`` hold their amount out of the host's payable balance
(:data:`RESERVING`); ``failed`` and ``rejected`` release it; ``paid`` is in the ledger.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cloud.payments.models import PayoutAccountKind, PayoutStatus

#: Statuses whose amount is reserved (requested, not yet paid, not given up).
RESERVING = frozenset({PayoutStatus.PENDING, PayoutStatus.PROCESSING})

_NEXT: dict[PayoutStatus, frozenset[PayoutStatus]] = {
    PayoutStatus.PENDING: frozenset({PayoutStatus.PROCESSING, PayoutStatus.REJECTED}),
    PayoutStatus.PROCESSING: frozenset({PayoutStatus.PAID, PayoutStatus.FAILED}),
    PayoutStatus.PAID: frozenset(),
    PayoutStatus.FAILED: frozenset(),
    PayoutStatus.REJECTED: frozenset(),
}

#: Provider error codes that mean nothing was (or will be) paid: the payout failed and its
#: amount is payable again. Any other error leaves the outcome unknown — a timeout may hide
#: a payout the provider made — so the payout stays ``processing`` until it is retried.
DEFINITE_FAILURES = frozenset({"not-supported", "failed", "rejected", "invalid-destination"})

#: The provider's payout states that mean the money left, and those that mean it never will.
PROVIDER_PAID = frozenset({"processed", "paid"})
PROVIDER_FAILED = frozenset({"failed", "rejected", "reversed", "cancelled"})


#: The payout destinations each provider pays to (``PUT /host/payout-account`` refuses the
#: others): RazorpayX bank accounts and VPAs, Stripe connected accounts; the dummy, all.
PAYABLE_KINDS: dict[str, frozenset[PayoutAccountKind]] = {
    "razorpay": frozenset({PayoutAccountKind.BANK_ACCOUNT, PayoutAccountKind.VPA}),
    "stripe": frozenset({PayoutAccountKind.STRIPE_ACCOUNT}),
    "dummy": frozenset(PayoutAccountKind),
}


def can_move(current: PayoutStatus, target: PayoutStatus) -> bool:
    return target in _NEXT[current]


def week_start(now: datetime) -> datetime:
    """The Monday 00:00 of ``now``'s week, in ``now``'s zone: an automatic payout's
    ``period_end``, so a week has at most one (``uq_payouts_automatic_week``)."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())
