"""An invoice or credit note as a PDF (fpdf2), one A4 page with the Rule 46 particulars.

The font is DejaVu Sans from Debian's ``fonts-dejavu-core`` (deploy/dev/bootstrap.sh installs
it): it has the rupee sign (U+20B9), which the PDF core fonts (Latin-1) lack, and fpdf2
embeds the subset used, so the file shows the same anywhere.
"""

from __future__ import annotations

from pathlib import Path

from fpdf import FPDF
from fpdf.enums import XPos, YPos

from cloud.errors import ConfigError
from cloud.invoices.gstin import state_name
from cloud.invoices.models import DocumentKind, Invoice

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = {"": "DejaVuSans.ttf", "B": "DejaVuSans-Bold.ttf"}
RUPEE = "\u20b9"

_LINE_NAMES = {
    "energy": "Energy",
    "time": "Charging time",
    "session_fee": "Session fee",
    "minimum_charge": "Minimum charge top-up",
    "idle_fee": "Idle fee (after the grace period)",
    "cancellation_fee": "Late cancellation fee",
    "refund": "Refund of charges",
}


def inr(paise: int) -> str:
    """``₹1,23,456.78``: rupees with Indian digit grouping (lakh, crore), exact paise."""
    sign = "-" if paise < 0 else ""
    rupees, rest = divmod(abs(paise), 100)
    digits = str(rupees)
    if len(digits) > 3:
        head, tail = digits[:-3], digits[-3:]
        groups: list[str] = []
        while len(head) > 2:
            groups.insert(0, head[-2:])
            head = head[:-2]
        if head:
            groups.insert(0, head)
        digits = ",".join([*groups, tail])
    return f"{sign}{RUPEE}{digits}.{rest:02d}"


def _quantity(line: dict[str, object]) -> str:
    quantity, unit = line.get("quantity"), line.get("unit")
    if not isinstance(quantity, int):
        return ""
    if unit == "Wh":
        return f"{quantity / 1000:.3f} kWh"
    if unit == "ms":
        minutes = quantity // 60_000
        return f"{minutes // 60} h {minutes % 60:02d} min"
    if unit == "min":
        return f"{quantity} min"
    if unit == "booking":
        return f"{quantity} booking"
    if unit == "session":
        return f"{quantity} session"
    return "1"


def _state(code: str) -> str:
    return f"{state_name(code)} ({code})"


def new_pdf(page_format: str | tuple[float, float] = "A4") -> FPDF:
    """A page with DejaVu Sans (regular, bold) loaded: the rupee sign and Devanagari-safe
    text (the charger sticker uses it too, in A6)."""
    pdf = FPDF(format=page_format)
    for style, name in FONTS.items():
        path = FONT_DIR / name
        if not path.is_file():
            raise ConfigError(
                f"the invoice font {path} is missing: install Debian's fonts-dejavu-core",
                variable="fonts-dejavu-core",
                value=str(path),
            )
        pdf.add_font("DejaVu", style, str(path))
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.add_page()
    return pdf


def render(invoice: Invoice, *, original_serial: str | None = None) -> bytes:
    """The PDF of ``invoice`` (``original_serial``: the invoice a credit note reduces)."""
    pdf = new_pdf()
    is_note = invoice.kind is DocumentKind.CREDIT_NOTE
    pdf.set_title(f"{'Credit note' if is_note else 'Tax invoice'} {invoice.serial}")
    pdf.set_creator("ChargeMitra")
    _parties(pdf, invoice, original_serial)
    _lines(pdf, invoice)
    _footer(pdf, invoice)
    return bytes(pdf.output())


def _parties(pdf: FPDF, invoice: Invoice, original_serial: str | None) -> None:
    is_note = invoice.kind is DocumentKind.CREDIT_NOTE
    width = pdf.epw
    pdf.set_font("DejaVu", "B", 16)
    pdf.cell(width, 10, "CREDIT NOTE" if is_note else "TAX INVOICE", align="C")
    pdf.ln(12)

    # Supplier (left) and the document's particulars (right).
    top = pdf.get_y()
    pdf.set_font("DejaVu", "B", 11)
    pdf.multi_cell(width * 0.55, 6, invoice.supplier_name, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.set_font("DejaVu", "", 9)
    pdf.multi_cell(width * 0.55, 5, invoice.supplier_address, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    if invoice.supplier_gstin:
        pdf.multi_cell(
            width * 0.55, 5, f"GSTIN: {invoice.supplier_gstin}", new_x=XPos.LMARGIN, new_y=YPos.NEXT
        )
    pdf.multi_cell(
        width * 0.55,
        5,
        f"State: {_state(invoice.supplier_state_code)}",
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    left_bottom = pdf.get_y()

    pdf.set_xy(pdf.l_margin + width * 0.58, top)
    label = "Credit note no." if is_note else "Invoice no."
    facts = [
        (label, invoice.serial),
        ("Date", invoice.issue_date.strftime("%d-%m-%Y")),
        ("Place of supply", _state(invoice.place_of_supply_code)),
        ("Reverse charge", "No"),
    ]
    if is_note and original_serial is not None:
        facts.append(("Against invoice", original_serial))
    for key, value in facts:
        pdf.set_x(pdf.l_margin + width * 0.58)
        pdf.set_font("DejaVu", "", 9)
        pdf.cell(width * 0.17, 5, key)
        pdf.set_font("DejaVu", "B", 9)
        pdf.cell(width * 0.25, 5, value)
        pdf.ln(5)
    pdf.set_y(max(left_bottom, pdf.get_y()) + 4)

    pdf.set_font("DejaVu", "B", 10)
    pdf.cell(width, 6, "Bill to")
    pdf.ln(6)
    pdf.set_font("DejaVu", "", 9)
    pdf.multi_cell(width, 5, invoice.recipient_name, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.multi_cell(
        width,
        5,
        f"State: {_state(invoice.recipient_state_code)} (unregistered)",
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    if invoice.reason:
        pdf.multi_cell(width, 5, f"Reason: {invoice.reason}", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    pdf.ln(4)


def _lines(pdf: FPDF, invoice: Invoice) -> None:
    is_note = invoice.kind is DocumentKind.CREDIT_NOTE
    width = pdf.epw
    columns = (0.06, 0.44, 0.12, 0.18, 0.20)
    heads = ("#", "Description", "SAC", "Quantity", f"Amount ({RUPEE})")
    pdf.set_font("DejaVu", "B", 9)
    pdf.set_fill_color(235, 235, 235)
    for share, head in zip(columns, heads, strict=True):
        pdf.cell(
            width * share, 7, head, border=1, fill=True, align="R" if "Amount" in head else "L"
        )
    pdf.ln(7)
    pdf.set_font("DejaVu", "", 9)
    for i, line in enumerate(invoice.lines, start=1):
        kind = str(line.get("kind"))
        amount = line.get("amount_paise")
        cells = (
            str(i),
            f"{invoice.description}: {_LINE_NAMES.get(kind, kind)}",
            invoice.sac,
            _quantity(line),
            inr(amount) if isinstance(amount, int) else "",
        )
        for share, value, align in zip(columns, cells, "LLLLR", strict=True):
            pdf.cell(width * share, 7, value, border=1, align=align)
        pdf.ln(7)

    # Taxable value, tax, total.
    rate = invoice.gst_bp / 100
    totals = [("Taxable value", invoice.taxable_paise)]
    if invoice.igst_paise:
        totals.append((f"IGST @ {rate:g} %", invoice.igst_paise))
    else:
        totals.append((f"CGST @ {rate / 2:g} %", invoice.cgst_paise))
        totals.append((f"SGST @ {rate / 2:g} %", invoice.sgst_paise))
    totals.append(("Total" if not is_note else "Total credited", invoice.total_paise))
    label_width = width * (1 - columns[-1])
    for i, (key, paise) in enumerate(totals):
        last = i == len(totals) - 1
        pdf.set_font("DejaVu", "B" if last else "", 10 if last else 9)
        pdf.cell(label_width, 7, key, border=1, align="R")
        pdf.cell(width * columns[-1], 7, inr(paise), border=1, align="R")
        pdf.ln(7)


def _footer(pdf: FPDF, invoice: Invoice) -> None:
    width = pdf.epw
    pdf.ln(8)
    pdf.set_font("DejaVu", "", 8)
    pdf.multi_cell(
        width,
        4,
        "Electric vehicle charging service (SAC 998714). Amounts in Indian rupees. "
        "This is a computer-generated document issued electronically; no signature is "
        "required.",
        align="L",
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.ln(6)
    pdf.set_font("DejaVu", "", 9)
    pdf.cell(width, 5, f"For {invoice.supplier_name}", align="R")
    pdf.ln(5)
    pdf.cell(width, 5, "Authorised signatory", align="R")
