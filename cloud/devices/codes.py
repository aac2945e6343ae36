"""Pairing codes (pure): short enough to type on a Pi's console, useless once guessed at.

A code is 10 characters of Crockford base32 (50 bits), shown as ``XXXXX-XXXXX``. Only a
keyed hash (HMAC-SHA256 with the app secret) is stored, so a database leak does not reveal
claimable codes; guessing is bounded by expiry, single use and the claim rate limit.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_CHARS = 10
# Crockford's decoding rules: people type I/L as 1 and O as 0.
_CONFUSABLE = str.maketrans({"I": "1", "L": "1", "O": "0"})


def new_pairing_code() -> str:
    raw = "".join(secrets.choice(ALPHABET) for _ in range(CODE_CHARS))
    return f"{raw[:5]}-{raw[5:]}"


def normalize_code(text: str) -> str | None:
    """The canonical code for what a person typed, or None if it cannot be one."""
    cleaned = text.strip().upper().replace("-", "").replace(" ", "").translate(_CONFUSABLE)
    if len(cleaned) != CODE_CHARS or any(c not in ALPHABET for c in cleaned):
        return None
    return cleaned


def hash_code(code: str, secret: str) -> str:
    """The stored form of a (normalized) code."""
    return hmac.new(secret.encode(), code.encode(), hashlib.sha256).hexdigest()
