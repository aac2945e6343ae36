"""QR short codes (pure): the code printed on a charger and the picture that encodes its URL.

A code is 8 characters of Crockford base32 (40 bits, about 10^12 codes): no I, L, O or U,
so what a driver types from the sticker when the camera fails reads back the same. Lookups
forgive case, spaces, hyphens and the confusable letters (O → 0, I/L → 1). Codes are not
secrets — anyone standing at the charger can read it — so they are stored as they are; a
collision at creation is retried with a new code.

The QR encodes ``{app.public_base_url}/c/{code}``, error correction M (a sticker in a
car park gets scratched), rendered by segno as SVG or PNG.
"""

from __future__ import annotations

import io
import secrets

import segno

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_CHARS = 8
_CONFUSABLE = str.maketrans({"I": "1", "L": "1", "O": "0"})
#: Pixels per QR module in the PNG, and the quiet zone (modules) around the symbol.
PNG_SCALE = 10
BORDER = 4


def new_short_code() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(CODE_CHARS))


def normalize_short_code(text: str) -> str | None:
    """The canonical code for what a person typed or scanned, or None if it cannot be one."""
    cleaned = text.strip().upper().replace("-", "").replace(" ", "").translate(_CONFUSABLE)
    if len(cleaned) != CODE_CHARS or any(c not in ALPHABET for c in cleaned):
        return None
    return cleaned


_DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


def code_in_words(code: str) -> str:
    """``AB12`` → ``A B one two``: a code read aloud or copied by hand, with digits spelt
    out so that 0 and 1 are never taken for letters."""
    return " ".join(_DIGIT_WORDS[int(c)] if c.isdigit() else c for c in code if c.isalnum())


def unlock_url(public_base_url: str, code: str) -> str:
    return f"{public_base_url.rstrip('/')}/c/{code}"


def qr_symbol(url: str) -> segno.QRCode:
    # boost_error=False: the error level is a choice (M), not "whatever still fits".
    return segno.make_qr(url, error="m", boost_error=False)


def qr_svg(url: str) -> bytes:
    out = io.BytesIO()
    qr_symbol(url).save(out, kind="svg", border=BORDER, xmldecl=True, svgns=True, title=url)
    return out.getvalue()


def qr_png(url: str) -> bytes:
    out = io.BytesIO()
    qr_symbol(url).save(out, kind="png", scale=PNG_SCALE, border=BORDER)
    return out.getvalue()
