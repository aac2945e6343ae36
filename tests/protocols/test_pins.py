"""Booking PINs: right charger and window accepted; other chargers, past and future refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.enums import AuthorizationStatus as S
from protocols.errors import CredentialError
from protocols.pins import PIN_DIGITS, issue_pin, pin_ref, verify_pin

SECRET = b"per-device-secret-0123456789"
START = datetime(2026, 11, 24, 18, 20, tzinfo=UTC)


@settings(max_examples=200, deadline=None)
@given(
    start_offset_s=st.integers(0, 30 * 24 * 3600),
    length_s=st.integers(60, 23 * 3600),
    at=st.floats(0, 1),
)
def test_a_pin_is_accepted_throughout_its_booking(
    start_offset_s: int, length_s: int, at: float
) -> None:
    start = START + timedelta(seconds=start_offset_s)
    end = start + timedelta(seconds=length_s)
    pin = issue_pin(SECRET, "chg-42", 1, start, end)
    assert len(pin.pin) == PIN_DIGITS
    assert pin.pin.isdigit()
    assert pin.valid_from <= start
    assert pin.valid_until >= end
    now = start + (end - start) * at
    check = verify_pin(
        SECRET, "chg-42", 1, pin.pin, now - timedelta(microseconds=1) if at == 1 else now
    )
    assert check.status is S.ACCEPTED, check
    assert (check.valid_from, check.valid_until) == (pin.valid_from, pin.valid_until)


def test_early_arrival_is_allowed_within_ten_minutes() -> None:
    pin = issue_pin(SECRET, "chg-42", 1, START, START + timedelta(hours=1))
    assert verify_pin(SECRET, "chg-42", 1, pin.pin, pin.valid_from - timedelta(minutes=9)).accepted
    early = verify_pin(SECRET, "chg-42", 1, pin.pin, pin.valid_from - timedelta(hours=2))
    assert early.status is S.NOT_AT_THIS_TIME


def test_after_the_window_the_pin_is_expired() -> None:
    pin = issue_pin(SECRET, "chg-42", 1, START, START + timedelta(hours=1))
    check = verify_pin(SECRET, "chg-42", 1, pin.pin, pin.valid_until + timedelta(minutes=1))
    assert check.status is S.EXPIRED


def test_other_charger_connector_or_secret_do_not_accept_it() -> None:
    pin = issue_pin(SECRET, "chg-42", 1, START, START + timedelta(hours=1))
    assert verify_pin(SECRET, "chg-43", 1, pin.pin, START).status is S.INVALID
    assert verify_pin(SECRET, "chg-42", 2, pin.pin, START).status is S.INVALID
    assert verify_pin(b"another-secret-0123456", "chg-42", 1, pin.pin, START).status is S.INVALID


@pytest.mark.parametrize(
    "typed",
    ["", "1234567", "123456789", "12a45678", "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18"],
)
def test_malformed_input_is_invalid(typed: str) -> None:
    assert verify_pin(SECRET, "chg-42", 1, typed, START).status is S.INVALID


def test_random_guesses_almost_never_pass() -> None:
    accepted = sum(
        verify_pin(SECRET, "chg-42", 1, f"{d}{n:07d}", START).accepted
        for d in range(10)
        for n in range(0, 10**7, 9973)
    )
    # ~10,030 guesses at <= 96 candidate windows / 10^7 each: expectation well under 1.
    assert accepted <= 2


def test_issuing_refuses_bad_windows_and_short_secrets() -> None:
    with pytest.raises(CredentialError, match="at most 24 hours"):
        issue_pin(SECRET, "c", 1, START, START + timedelta(hours=25))
    with pytest.raises(CredentialError, match="after its start"):
        issue_pin(SECRET, "c", 1, START, START)
    with pytest.raises(CredentialError, match="16 bytes"):
        issue_pin(b"short", "c", 1, START, START + timedelta(hours=1))


def test_the_pin_reference_is_the_wire_value_both_sides_compute() -> None:
    """The agent reports a PIN session under this reference and the cloud finds the driver
    by it: the values are pinned so the formula cannot drift on either side."""
    device = "cm-01unlocktestdevice0000000"
    assert pin_ref("01234567", device, 2) == "pin-fd482bd587784e9b09a370692707b9c9"
    assert pin_ref("99999999", device, 1) == "pin-682f91c7b88cd73542cf896a26925cea"
    # Bound to the charger and connector: the same PIN elsewhere is another credential.
    assert pin_ref("01234567", device, 1) != pin_ref("01234567", device, 2)
    assert pin_ref("01234567", "cm-other", 2) != pin_ref("01234567", device, 2)
