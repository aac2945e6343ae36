"""The RTU line-timing formula (Modbus over Serial Line v1.02 §2.5.1)."""

from __future__ import annotations

import pytest

from firmware_sim.line import (
    FAST_SILENCE_S,
    char_time_s,
    poll_time_s,
    read_poll_time_s,
    read_response_bytes,
    silence_s,
)


def test_issue_example_9600_baud_20_registers_no_turnaround() -> None:
    """(8 + 5 + 40) chars x 11 / 9600 + 2 x 3.5 x 11 / 9600 = 68.75 ms, about 14.5 polls/s."""
    assert read_poll_time_s(20, 9600, 0.0) == pytest.approx(0.06875)
    assert 1 / read_poll_time_s(20, 9600, 0.0) == pytest.approx(14.545, abs=0.01)


def test_a_character_is_eleven_bits() -> None:
    assert char_time_s(9600) == pytest.approx(11 / 9600)
    assert char_time_s(19200) == pytest.approx(11 / 19200)


def test_silence_is_three_and_a_half_characters_up_to_19200_then_fixed() -> None:
    assert silence_s(9600) == pytest.approx(3.5 * 11 / 9600)
    assert silence_s(19200) == pytest.approx(3.5 * 11 / 19200)
    assert silence_s(38400) == FAST_SILENCE_S
    assert silence_s(115200) == FAST_SILENCE_S


def test_turnaround_adds_once_per_poll() -> None:
    assert read_poll_time_s(2, 19200, 0.02) - read_poll_time_s(2, 19200, 0.0) == pytest.approx(0.02)


def test_read_response_size() -> None:
    assert read_response_bytes(1) == 7
    assert read_response_bytes(125) == 255


def test_poll_time_counts_both_frames() -> None:
    assert poll_time_s(8, 9, 9600, 0.0) == pytest.approx((17 + 7) * 11 / 9600)


def test_bad_baud_is_refused() -> None:
    with pytest.raises(ValueError, match="baud"):
        char_time_s(0)
