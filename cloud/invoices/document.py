"""What an invoice or credit note says, computed from a bill (pure, integer paise).

**Series.** Each supplier numbers its documents per financial year (1 April - 31 March, in
India's time, Asia/Kolkata), invoices and credit notes in separate series, from 1 without
gaps (CGST Rule 46(b): "a consecutive serial number not exceeding sixteen characters ...
unique for a financial year"). The serial printed is ``INV/2627/000001`` or
``CN/2627/000001``: kind, financial year, number — at most 16 characters up to number
9,999,999 of a year.

**Tax.** The invoice shows the bill's lines as the one pricing rule computed them
(:mod:`cloud.billing.quote`), its taxable value, and its GST as CGST + SGST when the
supplier's state is the place of supply, IGST otherwise (IGST Act s. 7-8). The GST amount is
the bill's: when the bill was priced with the other split, the same amount is shown split the
right way (CGST the half-up share of the rate, SGST the rest), so the invoice's total is
always exactly what the driver was charged.

**Credit notes** (CGST s. 34, Rule 53) for a refund after invoicing: the refunded amount,
GST included, is split back into taxable value and tax in the invoice's proportion, half up;
the credit note that brings the refunds to the invoice's total takes exactly what is left of
each, so credit notes never exceed their invoice, line by line.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from cloud.billing.quote import GST_RATE_BP, SAC_EV_CHARGING, TAX_LINES, Quote, div_half_up

INDIA = ZoneInfo("Asia/Kolkata")
#: The Services Accounting Code of EV charging, and what the invoice calls the service.
SAC = SAC_EV_CHARGING
DESCRIPTION = "Electric vehicle charging service"
#: A kept late-cancellation fee: consideration for the charging booked (same SAC and rate).
FEE_DESCRIPTION = "Late cancellation fee, electric vehicle charging booking"
#: The highest number a 16-character serial holds (``INV/2627/`` leaves 7 digits).
MAX_NUMBER = 9_999_999


class Series(StrEnum):
    INVOICE = "INV"
    CREDIT_NOTE = "CN"


def issue_date(at: datetime) -> date:
    """The date printed on a document issued at ``at`` (an aware instant): India's date."""
    return at.astimezone(INDIA).date()


def financial_year(on: date) -> int:
    """The financial year ``on`` falls in, by the year it starts: April 2026 - March 2027 is
    2026."""
    return on.year if on.month >= 4 else on.year - 1


def serial(series: Series, fy: int, number: int) -> str:
    """``INV/2627/000001``: at most 16 characters (raises ValueError past 9,999,999)."""
    if not 1 <= number <= MAX_NUMBER:
        raise ValueError(f"number {number} does not fit a 16-character serial")
    text = f"{series.value}/{fy % 100:02d}{(fy + 1) % 100:02d}/{number:06d}"
    assert len(text) <= 16
    return text


@dataclass(frozen=True, slots=True)
class Amounts:
    """A document's money: ``total == taxable + cgst + sgst + igst``; IGST or CGST + SGST."""

    taxable_paise: int
    cgst_paise: int
    sgst_paise: int
    igst_paise: int

    @property
    def tax_paise(self) -> int:
        return self.cgst_paise + self.sgst_paise + self.igst_paise

    @property
    def total_paise(self) -> int:
        return self.taxable_paise + self.tax_paise

    def minus(self, other: Amounts) -> Amounts:
        return Amounts(
            self.taxable_paise - other.taxable_paise,
            self.cgst_paise - other.cgst_paise,
            self.sgst_paise - other.sgst_paise,
            self.igst_paise - other.igst_paise,
        )


def split_tax(
    taxable_paise: int, tax_paise: int, *, interstate: bool, gst_bp: int = GST_RATE_BP
) -> Amounts:
    """``tax_paise`` of GST on ``taxable_paise``, as IGST or as CGST + SGST (CGST the
    half-up share of half the rate, capped by the tax; SGST the rest)."""
    if interstate:
        return Amounts(taxable_paise, 0, 0, tax_paise)
    cgst = min(tax_paise, div_half_up(taxable_paise * (gst_bp // 2), 10_000))
    return Amounts(taxable_paise, cgst, tax_paise - cgst, 0)


def invoice_amounts(quote: Quote, *, interstate: bool, gst_bp: int = GST_RATE_BP) -> Amounts:
    """The invoice's amounts for a bill priced as ``quote`` (module docstring, "Tax")."""
    return split_tax(quote.taxable_paise, quote.gst_paise, interstate=interstate, gst_bp=gst_bp)


def invoice_lines(quote: Quote) -> list[dict[str, Any]]:
    """The bill's taxable lines, as stored with the invoice and printed on it."""
    return [
        {
            "kind": line.kind.value,
            "amount_paise": line.amount_paise,
            "quantity": line.quantity,
            "unit": line.unit,
        }
        for line in quote.lines
        if line.kind not in TAX_LINES
    ]


def credit_amounts(invoice: Amounts, credited: Amounts, amount_paise: int) -> Amounts:
    """The credit note for a refund of ``amount_paise`` (GST included) against ``invoice``,
    of which ``credited`` is already credited (module docstring, "Credit notes"). Raises
    ValueError when the amount is not positive or exceeds what is left."""
    left = invoice.minus(credited)
    if amount_paise <= 0 or amount_paise > left.total_paise:
        raise ValueError(f"a credit of {amount_paise} paise against {left.total_paise} paise left")
    if amount_paise == left.total_paise:
        return left
    taxable = div_half_up(amount_paise * invoice.taxable_paise, invoice.total_paise)
    taxable = min(taxable, left.taxable_paise, amount_paise)
    tax = amount_paise - taxable
    if tax > left.tax_paise:
        taxable, tax = amount_paise - left.tax_paise, left.tax_paise
    if invoice.igst_paise:
        return Amounts(taxable, 0, 0, tax)
    # Halves of the tax, the odd paisa to CGST, each within what is left of it.
    cgst = min(left.cgst_paise, tax - tax // 2)
    sgst = tax - cgst
    if sgst > left.sgst_paise:
        cgst, sgst = tax - left.sgst_paise, left.sgst_paise
    return Amounts(taxable, cgst, sgst, 0)
