"""The story's pure parts (cloud/demo/story.py): the slot a driver books, the receipt text."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from cloud.demo.story import StoryResult, booking_slot, format_receipt


def test_the_booked_slot_covers_now_or_starts_within_the_unlock_margin() -> None:
    base = datetime(2026, 12, 5, 10, 0, tzinfo=UTC)
    # Within the booking policy's start grace: from the boundary just passed.
    assert booking_slot(base + timedelta(minutes=4)) == (base, base + timedelta(minutes=30))
    # Past it: from the next boundary, less than the unlock's 10-minute early margin away.
    late = base + timedelta(minutes=7)
    start, end = booking_slot(late)
    assert start == base + timedelta(minutes=15)
    assert timedelta(0) < start - late <= timedelta(minutes=10)
    assert end - start == timedelta(minutes=30)
    # Never a start the booking policy refuses as past, never more than seconds beyond the
    # unlock's early margin (play_story waits those out).
    for second in range(0, 3600, 7):
        now = base + timedelta(seconds=second)
        start, _ = booking_slot(now)
        assert start.minute % 15 == 0
        assert now - start <= timedelta(minutes=5) - timedelta(seconds=10)
        assert start - now <= timedelta(minutes=10, seconds=10)


def test_the_receipt_shows_every_line_the_totals_and_whether_the_ledger_balances() -> None:
    receipt = {
        "session_id": "01S",
        "started_at": "a",
        "stopped_at": "b",
        "meter_start_wh": 10,
        "meter_stop_wh": 28,
        "energy_wh": 18,
        "taxable_paise": 32,
        "gst_paise": 6,
        "total_paise": 38,
        "sac": "998714",
        "prepaid_paise": 7858,
        "captured_paise": 7858,
        "refunded_paise": 7820,
        "lines": [
            {"kind": "energy", "quantity": 18, "unit": "Wh", "amount_paise": 32},
            {"kind": "igst", "quantity": 1800, "unit": "bp", "amount_paise": 6},
        ],
    }
    ledger = [{"amount_paise": 7858}, {"amount_paise": -7858}]
    text = format_receipt(
        StoryResult(
            session={},
            receipt=receipt,
            invoice={"serial": "INV/2627/000007", "financial_year": "2026-27"},
            ledger=ledger,
            booking={},
            payment={},
            meter_start_wh=10,
            meter_stop_wh=28,
        )
    )
    assert "10 Wh -> 28 Wh = 18 Wh" in text
    assert "energy (18 Wh)" in text
    assert "Rs 0.38" in text
    assert "Rs 78.20" in text
    assert "INV/2627/000007 (2026-27)" in text
    assert "2 entries, balanced: True" in text
