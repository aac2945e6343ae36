"""Password hashing: argon2id with the library's RFC 9106 "low memory" profile.

``verify`` answers in about the same time whether or not the user exists (callers hash a
dummy when there is no user), so a login cannot be used to enumerate accounts.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.profiles import RFC_9106_LOW_MEMORY

_HASHER = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY)

#: Hashed once at import: verified against when the account does not exist.
_DUMMY_HASH = _HASHER.hash("chargemitra-no-such-user")

MIN_PASSWORD_LENGTH = 10


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; a missing hash still costs one verification."""
    try:
        return _HASHER.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    """True when the stored hash used weaker parameters than today's (rehash at login)."""
    return _HASHER.check_needs_rehash(password_hash)
