"""The dispute rules as pure functions: the window, the states, how much a resolution gives
back and from which payments.

No I/O and no clock: callers pass ``now``.

::

    open ──host responds──▶ under_review ──admin resolves──▶ resolved_refund
      │                                         └──────────▶ resolved_no_action
      └──────────────admin resolves (without a response)───▶ (either)

* A driver opens one dispute per session of theirs that stopped and was billed, within
  :data:`DISPUTE_WINDOW` of its stop.
* The host responds once, while it is open. Photos are added while it is not resolved.
* A refund is at most what the session's payments have left to refund (captured minus
  refunded, pending refunds included): a full refund is all of it, a partial one 1 paisa
  up to it. It is charged to the host's earning from the session as far as that goes, the
  platform's commission for the rest (or wholly to the platform when the admin says so).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from cloud.disputes.models import ChargedTo, DisputeStatus
from cloud.errors import Conflict, InvalidRequest

DISPUTE_WINDOW = timedelta(days=14)
MAX_PHOTOS = 5

UNRESOLVED = frozenset({DisputeStatus.OPEN, DisputeStatus.UNDER_REVIEW})


class Outcome(StrEnum):
    FULL_REFUND = "full_refund"
    PARTIAL_REFUND = "partial_refund"
    REJECTED = "rejected"


def refund_amount(
    outcome: Outcome, requested_paise: int | None, refundable_paise: int, dispute_id: str
) -> int:
    """What a resolution gives back: 0 for a rejection, all that is refundable for a full
    refund, ``requested_paise`` (1 .. refundable) for a partial one."""
    if outcome is Outcome.REJECTED:
        if requested_paise is not None:
            raise InvalidRequest("a rejection refunds nothing", field="refund_paise")
        return 0
    if outcome is Outcome.FULL_REFUND:
        if requested_paise is not None:
            raise InvalidRequest(
                "a full refund is all that is left: omit refund_paise", field="refund_paise"
            )
        amount = refundable_paise
    else:
        if requested_paise is None:
            raise InvalidRequest("a partial refund needs refund_paise", field="refund_paise")
        amount = requested_paise
    if amount <= 0 or amount > refundable_paise:
        raise Conflict(
            f"a refund of {amount} paise is not within the {refundable_paise} paise the "
            "session's payments have left to refund",
            entity="dispute",
            key=dispute_id,
        )
    return amount


@dataclass(frozen=True, slots=True)
class Charge:
    """Who gives a refund back: ``host_paise`` from the host's earning, ``platform_paise``
    from the platform's commission."""

    host_paise: int
    platform_paise: int


def charge(amount_paise: int, host_earned_paise: int, charged_to: ChargedTo) -> Charge:
    """The host gives back at most what the session earned them (net of what an earlier
    adjustment took); the platform the rest (the commission and tax the host never had)."""
    if charged_to is ChargedTo.PLATFORM:
        return Charge(0, amount_paise)
    host = max(0, min(amount_paise, host_earned_paise))
    return Charge(host, amount_paise - host)


def allocate(amount_paise: int, left: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Split a refund over the session's payments, ``(payment id, paise left to refund)``
    in the order given (oldest first): each takes what it can."""
    plan: list[tuple[str, int]] = []
    rest = amount_paise
    for payment_id, available in left:
        take = min(rest, max(0, available))
        if take > 0:
            plan.append((payment_id, take))
            rest -= take
    if rest:
        raise ValueError(f"{rest} paise of the refund fit no payment")
    return plan
