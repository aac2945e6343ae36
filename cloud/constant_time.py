"""Comparing a secret someone sent with the one we expect, in constant time.

``hmac.compare_digest`` raises ``TypeError`` when either ``str`` holds a character outside
ASCII — and a signature header, a form's CSRF token or a Checkout signature is whatever the
sender put there. Every secret we compare is ASCII (hex digests, base64, digits), so a
non-ASCII one is simply not ours: it does not match, and the caller refuses it as it refuses
any wrong secret (found by the schemathesis run: ``"signature": "^\\u00f9"`` was a 500).
"""

from __future__ import annotations

import hmac


def same(expected: str, given: str) -> bool:
    """``given`` equals ``expected``, compared in constant time; never raises."""
    return given.isascii() and hmac.compare_digest(expected, given)
