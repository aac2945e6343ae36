"""The printable QR sticker as an A6 PDF (105 by 148 mm): the charger's name, its QR code
(cloud/chargers/qr.py), the URL, and the short code in letters and in words for a driver
whose camera fails. DejaVu Sans as for invoices (cloud/invoices/pdf.py)."""

from __future__ import annotations

import io

from cloud.chargers import qr
from cloud.invoices.pdf import new_pdf

#: A6 (mm): fpdf2 knows A3 to A5 by name, not A6.
A6_MM = (105.0, 148.0)
#: The QR's side on the sticker (mm): scannable from a phone at arm's length.
QR_MM = 70


def sticker_pdf(*, name: str, url: str, code: str) -> bytes:
    pdf = new_pdf(A6_MM)
    pdf.set_title(f"ChargeMitra sticker {code}")
    pdf.set_creator("ChargeMitra")
    pdf.set_auto_page_break(auto=False)
    width = pdf.w - pdf.l_margin - pdf.r_margin
    pdf.set_font("DejaVu", "B", 14)
    pdf.multi_cell(width, 7, "ChargeMitra", align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 10)
    pdf.multi_cell(width, 5, name[:120], align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.image(io.BytesIO(qr.qr_png(url)), x=(pdf.w - QR_MM) / 2, y=pdf.get_y() + 2, w=QR_MM)
    pdf.set_y(pdf.get_y() + QR_MM + 4)
    pdf.set_font("DejaVu", "", 8)
    pdf.multi_cell(
        width, 4, f"Scan to pay and charge, or open {url}", align="C", new_x="LMARGIN", new_y="NEXT"
    )
    pdf.set_font("DejaVu", "B", 18)
    pdf.multi_cell(width, 9, f"{code[:4]} {code[4:]}", align="C", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("DejaVu", "", 8)
    pdf.multi_cell(width, 4, qr.code_in_words(code), align="C", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())
