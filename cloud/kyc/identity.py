"""Pure checks of what a host hands over for KYC: PAN, Aadhaar, document type.

* **PAN** (Permanent Account Number, Income-tax Rules 1962 r. 114): five letters, four
  digits, one letter. Its fourth letter names the holder's kind (``P`` a person, ``C`` a
  company …); any kind may host, so only the shape is checked.
* **Aadhaar**: twelve digits, the first not 0 or 1, the last a Verhoeff check digit (UIDAI's
  scheme). The full number is never stored or logged (Aadhaar Act 2016 s. 29 and UIDAI's
  masking rule): :func:`mask_aadhaar` checks it and returns only ``XXXX-XXXX-1234``.
* **Documents** are PDF, JPEG or PNG by their first bytes, whatever name or type the client
  gave (as listing photos: cloud/chargers/photos.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PAN = re.compile(r"^[A-Z]{5}[0-9]{4}[A-Z]$")
_AADHAAR = re.compile(r"^[2-9][0-9]{11}$")
#: Spaces and hyphens people type between the groups of four.
_AADHAAR_SEPARATORS = re.compile(r"[ -]")

# Verhoeff's dihedral group D5: multiplication table, permutation table.
_D = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 2, 3, 4, 0, 6, 7, 8, 9, 5),
    (2, 3, 4, 0, 1, 7, 8, 9, 5, 6),
    (3, 4, 0, 1, 2, 8, 9, 5, 6, 7),
    (4, 0, 1, 2, 3, 9, 5, 6, 7, 8),
    (5, 9, 8, 7, 6, 0, 4, 3, 2, 1),
    (6, 5, 9, 8, 7, 1, 0, 4, 3, 2),
    (7, 6, 5, 9, 8, 2, 1, 0, 4, 3),
    (8, 7, 6, 5, 9, 3, 2, 1, 0, 4),
    (9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
)
_P = (
    (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    (1, 5, 7, 6, 2, 8, 3, 0, 9, 4),
    (5, 8, 0, 3, 7, 9, 6, 1, 4, 2),
    (8, 9, 1, 6, 0, 4, 3, 5, 2, 7),
    (9, 4, 5, 3, 1, 2, 6, 8, 7, 0),
    (4, 2, 8, 6, 5, 7, 3, 9, 0, 1),
    (2, 7, 9, 3, 8, 0, 6, 4, 1, 5),
    (7, 0, 4, 6, 9, 1, 3, 2, 5, 8),
)
_INV = (0, 4, 3, 2, 1, 5, 6, 7, 8, 9)


class IdentityError(ValueError):
    """A PAN, Aadhaar number or document that fails its check (``field`` names it)."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.field = field


def verhoeff_valid(digits: str) -> bool:
    """Whether ``digits`` (its last digit the check digit) passes Verhoeff's check."""
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _D[c][_P[i % 8][int(ch)]]
    return c == 0


def verhoeff_digit(digits: str) -> str:
    """The check digit to append to ``digits``."""
    c = 0
    for i, ch in enumerate(reversed(digits)):
        c = _D[c][_P[(i + 1) % 8][int(ch)]]
    return str(_INV[c])


def check_pan(value: str) -> str:
    pan = value.strip().upper()
    if not PAN.fullmatch(pan):
        raise IdentityError(
            "a PAN is five letters, four digits and a letter (ABCDE1234F)", field="pan"
        )
    return pan


def mask_aadhaar(value: str) -> str:
    """``XXXX-XXXX-`` and the last four digits of a valid Aadhaar number; the number itself
    goes no further than this function."""
    digits = _AADHAAR_SEPARATORS.sub("", value.strip())
    if not _AADHAAR.fullmatch(digits):
        raise IdentityError(
            "an Aadhaar number is 12 digits and does not start with 0 or 1", field="aadhaar"
        )
    if not verhoeff_valid(digits):
        raise IdentityError(
            "the Aadhaar number's check digit is wrong (a typing error?)", field="aadhaar"
        )
    return f"XXXX-XXXX-{digits[-4:]}"


@dataclass(frozen=True, slots=True)
class DocumentType:
    content_type: str


PDF = DocumentType("application/pdf")
JPEG = DocumentType("image/jpeg")
PNG = DocumentType("image/png")


def sniff_document(data: bytes) -> DocumentType | None:
    """PDF (``%PDF-``), JPEG (SOI marker) or PNG (signature), by the bytes alone."""
    if data[:5] == b"%PDF-":
        return PDF
    if data[:3] == b"\xff\xd8\xff":
        return JPEG
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return PNG
    return None


def check_document(data: bytes, field: str) -> DocumentType:
    if not data:
        raise IdentityError("the document is empty", field=field)
    kind = sniff_document(data)
    if kind is None:
        raise IdentityError("a document must be a PDF, JPEG or PNG file", field=field)
    return kind
