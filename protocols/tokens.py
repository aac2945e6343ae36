"""Signed unlock tokens: PASETO v4.public (Ed25519) carrying the claims a charger checks offline.

Format (PASETO v4 spec, https://github.com/paseto-standard/paseto-spec, ``Version4.md``)::

    v4.public.<base64url(message || signature)>.<base64url(footer)>

* ``message`` is the JSON claims; times are ISO 8601 UTC strings, as PASETO's registered
  claims require (``nbf``, ``exp``, ``iat``, ``jti``).
* ``footer`` is ``{"kid": ...}``: the first 16 hex digits of SHA-256 of the raw public key,
  so a charger holding several keys (rotation) picks the right one without trying them all.
* The signature covers PAE(header, message, footer, implicit assertion). The implicit
  assertion ``chargemitra-unlock-v1`` never travels; it makes a token signed with the same key
  for any other purpose fail here.

Verification never raises on what a driver presents: every outcome is an
:class:`~protocols.enums.AuthorizationStatus` (Invalid, NotAtThisCharger, NotAtThisTime,
Expired or Accepted) with a reason. Single use (``jti`` not seen before) is the agent's
check: it needs the agent's store.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from protocols.enums import AuthorizationStatus
from protocols.errors import CredentialError

HEADER = b"v4.public."
IMPLICIT_ASSERTION = b"chargemitra-unlock-v1"
SIGNATURE_BYTES = 64
#: Tokens travel in QR codes and MQTT commands; anything longer is not ours.
MAX_TOKEN_CHARS = 4096


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if "=" in text:
        raise ValueError("padding is not allowed in PASETO base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def pae(*pieces: bytes) -> bytes:
    """Pre-Authentication Encoding (PASETO spec, ``Common.md`` §PAE)."""

    def le64(n: int) -> bytes:
        return (n & 0x7FFF_FFFF_FFFF_FFFF).to_bytes(8, "little")

    return le64(len(pieces)) + b"".join(le64(len(p)) + p for p in pieces)


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short, stable identifier of a public key (first 16 hex of SHA-256 of its raw bytes)."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """Load an Ed25519 private key from PEM (PKCS#8); raise :class:`CredentialError` otherwise."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise CredentialError(f"not a PEM private key: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise CredentialError(f"expected an Ed25519 key, got {type(key).__name__}")
    return key


def load_public_key(data: bytes) -> Ed25519PublicKey:
    """Load an Ed25519 public key from PEM or 32 raw bytes."""
    try:
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise CredentialError(f"not an Ed25519 public key: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise CredentialError(f"expected an Ed25519 key, got {type(key).__name__}")
    return key


@dataclass(frozen=True, slots=True)
class UnlockClaims:
    """What an unlock token grants: one connector of one charger, in a window, once."""

    charger_id: str
    connector: int
    user_ref: str
    jti: str
    nbf: datetime
    exp: datetime
    booking_id: str | None = None
    session_intent_id: str | None = None
    max_wh: int | None = None
    max_s: int | None = None

    def __post_init__(self) -> None:
        if (self.booking_id is None) == (self.session_intent_id is None):
            raise CredentialError("a token names exactly one of booking_id, session_intent_id")
        if self.nbf.tzinfo is None or self.exp.tzinfo is None:
            raise CredentialError("nbf and exp must be timezone-aware")
        if self.exp <= self.nbf:
            raise CredentialError("exp must be after nbf")
        for name in ("max_wh", "max_s"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value <= 0):
                raise CredentialError(f"{name} must be a positive integer")

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "charger_id": self.charger_id,
            "connector": self.connector,
            "user_ref": self.user_ref,
            "jti": self.jti,
            "nbf": self.nbf.astimezone(UTC).isoformat(),
            "exp": self.exp.astimezone(UTC).isoformat(),
        }
        optional = ("booking_id", "session_intent_id", "max_wh", "max_s")
        data.update({k: getattr(self, k) for k in optional if getattr(self, k) is not None})
        return data

    @classmethod
    def from_json(cls, data: object) -> UnlockClaims:
        """Parse claims; raise ``ValueError``/``TypeError``/``KeyError``/CredentialError."""
        if not isinstance(data, dict):
            raise TypeError("claims must be a JSON object")
        known = {
            "charger_id", "connector", "user_ref", "jti", "nbf", "exp", "iat",
            "booking_id", "session_intent_id", "max_wh", "max_s",
        }  # fmt: skip
        unknown = data.keys() - known
        if unknown:
            raise ValueError(f"unknown claims {sorted(unknown)}")
        for name in ("charger_id", "user_ref", "jti"):
            if not isinstance(data[name], str) or not data[name]:
                raise TypeError(f"{name} must be a non-empty string")
        if type(data["connector"]) is not int:
            raise TypeError("connector must be an integer")
        return cls(
            charger_id=data["charger_id"],
            connector=data["connector"],
            user_ref=data["user_ref"],
            jti=data["jti"],
            nbf=_parse_time(data["nbf"]),
            exp=_parse_time(data["exp"]),
            booking_id=data.get("booking_id"),
            session_intent_id=data.get("session_intent_id"),
            max_wh=data.get("max_wh"),
            max_s=data.get("max_s"),
        )


def _parse_time(value: object) -> datetime:
    if not isinstance(value, str):
        raise TypeError("times must be ISO 8601 strings")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"time {value!r} has no UTC offset")
    return parsed


def sign_unlock_token(private_key: Ed25519PrivateKey, claims: UnlockClaims) -> str:
    """Sign ``claims`` as a PASETO v4.public token."""
    message = json.dumps(claims.to_json(), separators=(",", ":"), sort_keys=True).encode()
    footer = json.dumps({"kid": key_id(private_key.public_key())}, separators=(",", ":")).encode()
    signature = private_key.sign(pae(HEADER, message, footer, IMPLICIT_ASSERTION))
    return HEADER.decode() + _b64encode(message + signature) + "." + _b64encode(footer)


@dataclass(frozen=True, slots=True)
class TokenCheck:
    """The outcome of verifying a token; ``claims`` is set once the signature held."""

    status: AuthorizationStatus
    reason: str
    claims: UnlockClaims | None = None

    @property
    def accepted(self) -> bool:
        return self.status is AuthorizationStatus.ACCEPTED


class TokenVerifier:
    """Verifies unlock tokens against the cloud's public keys (several during a rotation)."""

    def __init__(self, public_keys: list[Ed25519PublicKey]) -> None:
        if not public_keys:
            raise CredentialError("a token verifier needs at least one public key")
        self._keys = {key_id(k): k for k in public_keys}

    def verify(
        self,
        token: str,
        *,
        charger_id: str,
        connector: int,
        now: datetime,
        leeway: timedelta = timedelta(seconds=30),
    ) -> TokenCheck:
        """Check signature, binding and validity window; never raises on bad input."""
        invalid = AuthorizationStatus.INVALID
        if not isinstance(token, str) or len(token) > MAX_TOKEN_CHARS:
            return TokenCheck(invalid, "not a token (wrong type or too long)")
        if not token.startswith(HEADER.decode()):
            return TokenCheck(invalid, "not a v4.public token")
        parts = token[len(HEADER) :].split(".")
        if len(parts) != 2:
            return TokenCheck(invalid, "token has no footer with a key id")
        try:
            body, footer = _b64decode(parts[0]), _b64decode(parts[1])
            kid = json.loads(footer)["kid"]
        except (ValueError, KeyError, TypeError, binascii.Error):
            return TokenCheck(invalid, "token is not decodable")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            return TokenCheck(invalid, f"token signed with unknown key {kid!r}")
        if len(body) <= SIGNATURE_BYTES:
            return TokenCheck(invalid, "token too short")
        message, signature = body[:-SIGNATURE_BYTES], body[-SIGNATURE_BYTES:]
        try:
            key.verify(signature, pae(HEADER, message, footer, IMPLICIT_ASSERTION))
        except InvalidSignature:
            return TokenCheck(invalid, "bad signature")
        try:
            claims = UnlockClaims.from_json(json.loads(message))
        except (ValueError, TypeError, KeyError, CredentialError) as exc:
            return TokenCheck(invalid, f"bad claims: {exc}")
        if claims.charger_id != charger_id or claims.connector != connector:
            return TokenCheck(
                AuthorizationStatus.NOT_AT_THIS_CHARGER,
                f"token is for {claims.charger_id}#{claims.connector}, "
                f"this is {charger_id}#{connector}",
                claims,
            )
        if now + leeway < claims.nbf:
            return TokenCheck(
                AuthorizationStatus.NOT_AT_THIS_TIME,
                f"valid from {claims.nbf.isoformat()}",
                claims,
            )
        if now - leeway >= claims.exp:
            return TokenCheck(
                AuthorizationStatus.EXPIRED, f"expired at {claims.exp.isoformat()}", claims
            )
        return TokenCheck(AuthorizationStatus.ACCEPTED, "valid token", claims)
