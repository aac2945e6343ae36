"""The pure rules of reviews, disputes and driver trust (cloud/reviews/rules.py,
cloud/disputes/rules.py, cloud/bookings/policy.py), without I/O."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.bookings.policy import DriverTrust, instant_book_allowed
from cloud.disputes.models import ChargedTo
from cloud.disputes.rules import Outcome, allocate, charge, refund_amount
from cloud.errors import Conflict, InvalidRequest
from cloud.reviews.rules import (
    PLAIN_NOT_BLANK_PATTERN,
    PLAIN_TEXT_PATTERN,
    REVIEW_WINDOW,
    average,
    completed,
    within,
)
from cloud.sessions.models import BillingState, SessionState

T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def test_only_a_stopped_billed_session_is_completed() -> None:
    assert completed(SessionState.STOPPED, BillingState.SETTLED)
    assert completed(SessionState.STOPPED, BillingState.PRICED)
    assert not completed(SessionState.STOPPED, BillingState.UNBILLED)
    assert not completed(SessionState.ACTIVE, BillingState.SETTLED)


def test_the_window_runs_from_the_stop() -> None:
    assert within(T0, T0 + REVIEW_WINDOW, REVIEW_WINDOW)
    assert not within(T0, T0 + REVIEW_WINDOW + timedelta(seconds=1), REVIEW_WINDOW)
    assert not within(None, T0, REVIEW_WINDOW)
    assert not within(T0, T0 - timedelta(seconds=1), REVIEW_WINDOW)


def test_plain_text_has_no_markup() -> None:
    plain, not_blank = re.compile(PLAIN_TEXT_PATTERN), re.compile(PLAIN_NOT_BLANK_PATTERN)
    assert plain.match("")
    assert plain.match("Fast & clean, 5/5")
    for marked_up in ("<b>x</b>", "a > b", "<script>", "x\x00"):
        assert not plain.match(marked_up)
    assert not not_blank.match("   \n")
    assert not_blank.match("  ok ")


def test_average_is_two_decimals_or_none() -> None:
    assert average(0, 0) is None
    assert average(14, 3) == 4.67


def test_refund_amounts() -> None:
    assert refund_amount(Outcome.REJECTED, None, 500, "d") == 0
    assert refund_amount(Outcome.FULL_REFUND, None, 500, "d") == 500
    assert refund_amount(Outcome.PARTIAL_REFUND, 499, 500, "d") == 499
    with pytest.raises(Conflict):
        refund_amount(Outcome.PARTIAL_REFUND, 501, 500, "d")
    with pytest.raises(Conflict):
        refund_amount(Outcome.FULL_REFUND, None, 0, "d")
    with pytest.raises(InvalidRequest):
        refund_amount(Outcome.PARTIAL_REFUND, None, 500, "d")
    with pytest.raises(InvalidRequest):
        refund_amount(Outcome.REJECTED, 10, 500, "d")


@given(
    amount=st.integers(1, 10**7),
    earned=st.integers(-(10**6), 10**7),
    to=st.sampled_from(list(ChargedTo)),
)
def test_a_charge_adds_up_and_takes_no_more_from_the_host_than_it_earned(
    amount: int, earned: int, to: ChargedTo
) -> None:
    c = charge(amount, earned, to)
    assert c.host_paise + c.platform_paise == amount
    assert 0 <= c.host_paise <= max(0, earned)
    assert c.platform_paise >= 0
    if to is ChargedTo.PLATFORM:
        assert c.host_paise == 0


@given(st.lists(st.integers(0, 10**6), min_size=1, max_size=4), st.data())
def test_allocation_fills_payments_oldest_first_within_what_they_have_left(
    lefts: list[int], data: st.DataObject
) -> None:
    total = sum(lefts)
    if total == 0:
        with pytest.raises(ValueError, match="fit no payment"):
            allocate(1, [("p0", 0)])
        return
    amount = data.draw(st.integers(1, total))
    plan = allocate(amount, [(f"p{i}", left) for i, left in enumerate(lefts)])
    assert sum(paise for _, paise in plan) == amount
    given_ = dict(plan)
    for i, left in enumerate(lefts):
        assert given_.get(f"p{i}", 0) <= left
    # Oldest first: a later payment gives only once every earlier one gave all it had.
    for i, left in enumerate(lefts):
        if any(f"p{j}" in given_ for j in range(i + 1, len(lefts))):
            assert given_.get(f"p{i}", 0) == left
    with pytest.raises(ValueError, match="fit no payment"):
        allocate(total + 1, [(f"p{i}", left) for i, left in enumerate(lefts)])


def test_instant_book_trust() -> None:
    assert instant_book_allowed(DriverTrust(0, 0))
    assert not instant_book_allowed(DriverTrust(1, 2, lowest_from_host=2))
    assert instant_book_allowed(DriverTrust(1, 3, lowest_from_host=3))
    # One low rating from another host is not enough; a low average over two is.
    assert instant_book_allowed(DriverTrust(1, 1))
    assert not instant_book_allowed(DriverTrust(2, 5))
    assert instant_book_allowed(DriverTrust(2, 6))
