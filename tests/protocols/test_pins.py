"""Booking PINs: right charger, booking and window accepted; other chargers, other bookings
of the same window, past and future refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols.enums import AuthorizationStatus as S
from protocols.errors import CredentialError
from protocols.pins import NONCES, PIN_DIGITS, issue_pin, pin_ref, verify_pin

SECRET = b"per-device-secret-0123456789"
START = datetime(2026, 11, 24, 18, 20, tzinfo=UTC)
#: A 15-minute boundary: bookings start and end on one.
START_SLOT = datetime(2026, 11, 24, 18, 15, tzinfo=UTC)


@settings(max_examples=200, deadline=None)
@given(
    start_slot=st.integers(0, 30 * 96),
    slots=st.integers(1, 48),
    nonce=st.integers(0, 19),
    at=st.floats(0, 1),
)
def test_a_pin_is_accepted_throughout_its_booking_and_only_then(
    start_slot: int, slots: int, nonce: int, at: float
) -> None:
    start = START_SLOT + timedelta(minutes=15 * start_slot)
    end = start + timedelta(minutes=15 * slots)
    pin = issue_pin(SECRET, "chg-42", 1, start, end, nonce=nonce)
    assert len(pin.pin) == PIN_DIGITS
    assert pin.pin.isdigit()
    # The window is the booking's own, not rounded up to a longer one.
    assert (pin.valid_from, pin.valid_until) == (start, end)
    # The end is exclusive (an `at` near 1 can round to it).
    now = min(start + (end - start) * at, end - timedelta(microseconds=1))
    check = verify_pin(SECRET, "chg-42", 1, pin.pin, now)
    assert check.status is S.ACCEPTED, check
    assert (check.valid_from, check.valid_until) == (start, end)
    assert verify_pin(SECRET, "chg-42", 1, pin.pin, end).status is S.EXPIRED


def test_a_30_minute_booking_pin_ends_with_the_booking() -> None:
    """v1 gave a 30-minute booking a one-hour window; the PIN now dies at the booking's end."""
    pin = issue_pin(SECRET, "chg-42", 1, START_SLOT, START_SLOT + timedelta(minutes=30), nonce=0)
    assert pin.valid_until == START_SLOT + timedelta(minutes=30)
    assert verify_pin(SECRET, "chg-42", 1, pin.pin, pin.valid_until - timedelta(seconds=1)).accepted
    late = verify_pin(SECRET, "chg-42", 1, pin.pin, pin.valid_until)
    assert late.status is S.EXPIRED


def test_a_window_between_slot_boundaries_is_covered_by_the_fewest_slots() -> None:
    pin = issue_pin(SECRET, "chg-42", 1, START, START + timedelta(minutes=20), nonce=0)
    assert pin.valid_from == datetime(2026, 11, 24, 18, 15, tzinfo=UTC)
    assert pin.valid_until == datetime(2026, 11, 24, 18, 45, tzinfo=UTC)


def test_bookings_of_the_same_window_get_different_pins() -> None:
    end = START_SLOT + timedelta(hours=1)
    pins = {issue_pin(SECRET, "chg-42", 1, START_SLOT, end, nonce=n).pin for n in range(NONCES)}
    assert len(pins) == NONCES
    for pin in pins:
        assert verify_pin(SECRET, "chg-42", 1, pin, START_SLOT).accepted


def test_early_arrival_is_allowed_within_ten_minutes() -> None:
    pin = issue_pin(SECRET, "chg-42", 1, START_SLOT, START_SLOT + timedelta(hours=1), nonce=3)
    assert verify_pin(SECRET, "chg-42", 1, pin.pin, pin.valid_from - timedelta(minutes=9)).accepted
    early = verify_pin(SECRET, "chg-42", 1, pin.pin, pin.valid_from - timedelta(hours=2))
    assert early.status is S.NOT_AT_THIS_TIME


def test_after_the_window_the_pin_is_expired() -> None:
    pin = issue_pin(SECRET, "chg-42", 1, START_SLOT, START_SLOT + timedelta(hours=1), nonce=0)
    check = verify_pin(SECRET, "chg-42", 1, pin.pin, pin.valid_until + timedelta(minutes=1))
    assert check.status is S.EXPIRED


def test_other_charger_connector_or_secret_do_not_accept_it() -> None:
    pin = issue_pin(SECRET, "chg-42", 1, START_SLOT, START_SLOT + timedelta(hours=1), nonce=0)
    assert verify_pin(SECRET, "chg-43", 1, pin.pin, START_SLOT).status is S.INVALID
    assert verify_pin(SECRET, "chg-42", 2, pin.pin, START_SLOT).status is S.INVALID
    assert (
        verify_pin(b"another-secret-0123456", "chg-42", 1, pin.pin, START_SLOT).status is S.INVALID
    )


@pytest.mark.parametrize(
    "typed",
    [
        "",
        "12345678",
        "123456789",
        "12345678901",
        "12a4567890",
        "9601234567",
        "\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18\uff19\uff10",
    ],
)
def test_malformed_input_is_invalid(typed: str) -> None:
    assert verify_pin(SECRET, "chg-42", 1, typed, START).status is S.INVALID


def test_random_guesses_almost_never_pass() -> None:
    accepted = sum(
        verify_pin(SECRET, "chg-42", 1, f"{code:03d}{n:07d}", START).accepted
        for code in range(0, 960, 7)
        for n in range(0, 10**7, 99991)
    )
    # ~13,900 guesses at <= 49 accepting windows / 10^7 each: expectation well under 1.
    assert accepted <= 2


def test_issuing_refuses_bad_windows_nonces_and_short_secrets() -> None:
    with pytest.raises(CredentialError, match="at most 12 hours"):
        issue_pin(SECRET, "c", 1, START_SLOT, START_SLOT + timedelta(hours=12, minutes=15), nonce=0)
    with pytest.raises(CredentialError, match="after its start"):
        issue_pin(SECRET, "c", 1, START, START, nonce=0)
    with pytest.raises(CredentialError, match="nonce"):
        issue_pin(SECRET, "c", 1, START, START + timedelta(hours=1), nonce=NONCES)
    with pytest.raises(CredentialError, match="16 bytes"):
        issue_pin(b"short", "c", 1, START, START + timedelta(hours=1), nonce=0)


def test_the_pin_reference_is_the_wire_value_both_sides_compute() -> None:
    """The agent reports a PIN session under this reference and the cloud finds the driver
    by it: the values are pinned so the formula cannot drift on either side."""
    device = "cm-01unlocktestdevice0000000"
    assert pin_ref("01234567", device, 2) == "pin-fd482bd587784e9b09a370692707b9c9"
    assert pin_ref("99999999", device, 1) == "pin-682f91c7b88cd73542cf896a26925cea"
    # Bound to the charger and connector: the same PIN elsewhere is another credential.
    assert pin_ref("01234567", device, 1) != pin_ref("01234567", device, 2)
    assert pin_ref("01234567", "cm-other", 2) != pin_ref("01234567", device, 2)
