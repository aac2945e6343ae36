"""The invoice's pure parts: GSTIN checksums, state codes, financial years, serials, the
GST split and credit notes (cloud/invoices/gstin.py, document.py, pdf.py's money format)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.billing.quote import Tariff, Usage, price
from cloud.chargers.models import Charger, PricingMode
from cloud.invoices.document import (
    Amounts,
    Series,
    credit_amounts,
    financial_year,
    invoice_amounts,
    issue_date,
    serial,
)
from cloud.invoices.gstin import (
    InvalidGstin,
    UnknownState,
    check_character,
    state_code,
    validate_gstin,
)
from cloud.invoices.pdf import inr
from cloud.invoices.supply import place_of_supply, platform_supplier
from cloud.settings import BillingSettings


def test_a_gstin_is_checked_to_its_check_character() -> None:
    assert validate_gstin("27aapfu0939f1zv") == "27AAPFU0939F1ZV"
    assert validate_gstin(BillingSettings().supplier_gstin)
    for bad in ("27AAPFU0939F1ZW", "27AAPFU0939F1Z", "99AAPFU0939F1ZV", "27AAPFU0939F0ZV", ""):
        with pytest.raises(InvalidGstin):
            validate_gstin(bad)
    # One character mistyped is caught by the check character.
    assert check_character("27AAPFU0939F1Z") != check_character("27AAPFU0939F2Z")


def test_a_state_is_found_by_name_abbreviation_or_code() -> None:
    assert state_code("Maharashtra") == state_code("MH") == state_code("27") == "27"
    assert state_code(" tamil  nadu ") == "33"
    assert state_code("Jammu & Kashmir") == "01"
    with pytest.raises(UnknownState):
        state_code("Atlantis")


def test_the_financial_year_runs_april_to_march_in_india() -> None:
    # 31 March 23:59 in India is still the old year; 18:30 UTC that day is 1 April there.
    assert issue_date(datetime(2027, 3, 31, 18, 29, tzinfo=UTC)) == date(2027, 3, 31)
    assert issue_date(datetime(2027, 3, 31, 18, 30, tzinfo=UTC)) == date(2027, 4, 1)
    assert financial_year(date(2027, 3, 31)) == 2026
    assert financial_year(date(2027, 4, 1)) == 2027
    assert financial_year(date(2026, 12, 4)) == 2026


def test_serials_fit_sixteen_characters() -> None:
    assert serial(Series.INVOICE, 2026, 1) == "INV/2627/000001"
    assert serial(Series.CREDIT_NOTE, 2099, 42) == "CN/9900/000042"
    assert len(serial(Series.INVOICE, 2026, 9_999_999)) == 16
    with pytest.raises(ValueError, match="16"):
        serial(Series.INVOICE, 2026, 10_000_000)


@given(
    energy=st.integers(0, 200_000),
    rate=st.integers(0, 10_000),
    fee=st.integers(0, 5_000),
    interstate=st.booleans(),
    priced_interstate=st.booleans(),
)
def test_the_invoice_states_the_bill_split_by_place_of_supply(
    energy: int, rate: int, fee: int, interstate: bool, priced_interstate: bool
) -> None:
    quote = price(
        Tariff(PricingMode.PER_KWH, rate, 0, fee, 0),
        Usage(timedelta(hours=1), energy),
        interstate=priced_interstate,
    )
    amounts = invoice_amounts(quote, interstate=interstate)
    assert amounts.total_paise == quote.total_paise
    assert amounts.taxable_paise == quote.taxable_paise
    if interstate:
        assert (amounts.cgst_paise, amounts.sgst_paise) == (0, 0)
    else:
        assert amounts.igst_paise == 0
        if not priced_interstate:  # priced the same way: the quote's own lines
            assert amounts.cgst_paise == quote.line(quote.lines[-2].kind)
            assert amounts.sgst_paise == quote.line(quote.lines[-1].kind)


@st.composite
def invoices(draw: st.DrawFn) -> Amounts:
    taxable = draw(st.integers(1, 10_000_000))
    quote_tax = (taxable * 1800 + 5000) // 10_000
    if draw(st.booleans()):
        return Amounts(taxable, 0, 0, quote_tax)
    cgst = (taxable * 900 + 5000) // 10_000
    return Amounts(taxable, cgst, quote_tax - cgst, 0)


@given(invoice=invoices(), cuts=st.lists(st.floats(0.001, 1.0), min_size=1, max_size=6))
def test_credit_notes_never_exceed_their_invoice(invoice: Amounts, cuts: list[float]) -> None:
    credited = Amounts(0, 0, 0, 0)
    for cut in cuts:
        left = invoice.minus(credited).total_paise
        if left == 0:
            break
        amount = max(1, min(left, int(left * cut)))
        note = credit_amounts(invoice, credited, amount)
        assert note.total_paise == amount
        assert min(note.taxable_paise, note.cgst_paise, note.sgst_paise, note.igst_paise) >= 0
        assert not (note.igst_paise and (note.cgst_paise or note.sgst_paise))
        credited = Amounts(
            credited.taxable_paise + note.taxable_paise,
            credited.cgst_paise + note.cgst_paise,
            credited.sgst_paise + note.sgst_paise,
            credited.igst_paise + note.igst_paise,
        )
        left_after = invoice.minus(credited)
        assert (
            min(
                left_after.taxable_paise,
                left_after.cgst_paise,
                left_after.sgst_paise,
                left_after.igst_paise,
            )
            >= 0
        )
    rest = invoice.minus(credited).total_paise
    if rest:
        assert credit_amounts(invoice, credited, rest) == invoice.minus(credited)
    with pytest.raises(ValueError, match="left"):
        credit_amounts(invoice, credited, rest + 1)


def test_rupees_print_with_indian_grouping() -> None:
    assert inr(0) == "\u20b90.00"
    assert inr(5) == "\u20b90.05"
    assert inr(123_456) == "\u20b91,234.56"
    assert inr(1_234_567_89) == "\u20b912,34,567.89"
    assert inr(10_00_00_000_00) == "\u20b910,00,00,000.00"


def test_a_listing_state_gst_does_not_know_falls_back_to_the_suppliers() -> None:
    supplier = platform_supplier(BillingSettings())
    assert place_of_supply(Charger(state="Karnataka"), supplier) == "29"
    assert place_of_supply(Charger(state="KA"), supplier) == "29"
    assert place_of_supply(Charger(state="Atlantis"), supplier) == supplier.state_code == "27"
