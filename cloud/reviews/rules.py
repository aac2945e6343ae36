"""The review rules as pure functions: who may review or rate, until when, and the text.

No I/O and no clock: callers pass ``now``.

* A driver reviews the charger of a **completed** session of theirs — stopped and billed
  (``priced`` or ``settled``: the bill exists) — once, within :data:`REVIEW_WINDOW` of its
  stop. A host rates the driver of a completed session on their charger under the same
  window, once.
* Texts are plain text: ``<`` and ``>`` are refused (the request models' pattern,
  :data:`PLAIN_TEXT_PATTERN`), so no stored review can carry markup into a page or a mail,
  whatever escapes it later (docs/decisions.md, "Trust (issue 18): reviews").
"""

from __future__ import annotations

from datetime import datetime, timedelta

from cloud.schemas import WHITESPACE
from cloud.sessions.models import BillingState, SessionState

REVIEW_WINDOW = timedelta(days=30)
#: The session's bill exists: priced (the money may still be on its way) or settled.
COMPLETED_STATES = frozenset({BillingState.PRICED, BillingState.CHARGED, BillingState.SETTLED})

#: Plain text, possibly empty: no ``<``, ``>`` (markup) or NUL.
PLAIN_TEXT_PATTERN = r"^[^<>\x00]*$"
#: Plain text with at least one character that is not whitespace.
PLAIN_NOT_BLANK_PATTERN = rf"^[^<>\x00]*[^{WHITESPACE}<>\x00][^<>\x00]*$"


def completed(state: SessionState, billing_state: BillingState) -> bool:
    return state is SessionState.STOPPED and billing_state in COMPLETED_STATES


def within(stopped_at: datetime | None, now: datetime, window: timedelta) -> bool:
    """Whether ``now`` is no later than ``window`` after the session stopped."""
    return stopped_at is not None and stopped_at <= now <= stopped_at + window


def average(rating_sum: int, rating_count: int) -> float | None:
    """The average rating, to two decimals (None without ratings)."""
    return round(rating_sum / rating_count, 2) if rating_count else None
