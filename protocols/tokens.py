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

Keys are Ed25519 in the standard PEM files OpenSSL and the cloud write: SubjectPublicKeyInfo
(``BEGIN PUBLIC KEY``; a public key may also be given as its 32 raw bytes) and unencrypted
PKCS#8 v1 (``BEGIN PRIVATE KEY``). :func:`key_id` is unchanged from the ``cryptography``-based
version, so kids already deployed still match.

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
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import nacl.bindings
import nacl.signing
from nacl.exceptions import BadSignatureError

from protocols.enums import AuthorizationStatus
from protocols.errors import CredentialError

HEADER = b"v4.public."
IMPLICIT_ASSERTION = b"chargemitra-unlock-v1"
SIGNATURE_BYTES = 64
#: Tokens travel in QR codes and MQTT commands; anything longer is not ours.
MAX_TOKEN_CHARS = 4096
#: A footer is {"kid": "<16 hex>"} in base64url (36 characters); room for a longer kid.
MAX_FOOTER_CHARS = 256

#: Bytes of a raw Ed25519 public key and of a private key's seed (RFC 8032).
KEY_BYTES = 32

# Key files are the standard PEM the cloud writes and the docs describe. For Ed25519 the DER
# inside has one fixed layout (RFC 8410: no parameters, no optional fields), so a key is a
# constant prefix followed by its 32 bytes and needs no ASN.1 parser:
#   SubjectPublicKeyInfo  SEQ { SEQ { OID 1.3.101.112 } BIT STRING (0 unused bits) pub }
#   PKCS#8 v1             SEQ { INT 0, SEQ { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed } }
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_ED25519_OID = bytes.fromhex("06032b6570")
#: Other algorithms' OIDs (DER-encoded), to say what a wrong key file holds.
_OTHER_ALGORITHMS = {
    bytes.fromhex("06092a864886f70d010101"): "an RSA key",
    bytes.fromhex("06072a8648ce3d0201"): "an EC key",
    bytes.fromhex("06032b656e"): "an X25519 key",
    bytes.fromhex("06032b656f"): "an X448 key",
    bytes.fromhex("06032b6571"): "an Ed448 key",
    bytes.fromhex("06072a8648ce380401"): "a DSA key",
}
_PEM_BLOCK = re.compile(
    rb"-----BEGIN (?P<label>[A-Z0-9 ]+)-----(?P<body>.*?)-----END (?P=label)-----", re.DOTALL
)


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


# Keys are PyNaCl (libsodium), not ``cryptography``: the agent on a Raspberry Pi verifies
# tokens and nothing else, and ``cryptography``'s Rust extension and OpenSSL bindings cost it
# 6-7 MiB of a 40 MiB resident budget against about 1.3 MiB for PyNaCl (docs/decisions.md,
# edge footprint). Ed25519 is deterministic (RFC 8032), so the signatures and tokens are byte
# for byte those ``cryptography`` made for the same key and claims.


class PublicKey:
    """An Ed25519 public key that verifies unlock-token signatures."""

    __slots__ = ("_raw", "_verify_key")

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != KEY_BYTES:
            raise CredentialError(f"an Ed25519 public key is {KEY_BYTES} bytes")
        # Refuse bytes that are not a usable curve point now, with the file's name in the
        # caller's message, rather than as "bad signature" on every token later. (libsodium
        # built in minimal mode lacks the check; verification still refuses such keys.)
        if nacl.bindings.has_crypto_core_ed25519 and not (
            nacl.bindings.crypto_core_ed25519_is_valid_point(raw)
        ):
            raise CredentialError("not an Ed25519 public key: not a valid curve point")
        self._raw = raw
        self._verify_key = nacl.signing.VerifyKey(raw)

    @property
    def raw(self) -> bytes:
        """The 32 bytes of the key (RFC 8032 encoding)."""
        return self._raw

    @classmethod
    def from_pem(cls, pem: bytes) -> PublicKey:
        """Parse a ``BEGIN PUBLIC KEY`` (SubjectPublicKeyInfo) PEM holding an Ed25519 key."""
        der = _pem_der(pem, "PUBLIC KEY")
        if len(der) != len(SPKI_PREFIX) + KEY_BYTES or not der.startswith(SPKI_PREFIX):
            raise _wrong_key(der, "public", len(SPKI_PREFIX) + KEY_BYTES)
        return cls(der[len(SPKI_PREFIX) :])

    def to_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM, as ``openssl pkey -pubout`` writes it."""
        return _pem("PUBLIC KEY", SPKI_PREFIX + self._raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` is this key's signature of ``message``."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        try:
            self._verify_key.verify(message, signature)
        except BadSignatureError:
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other._raw == self._raw

    def __hash__(self) -> int:
        return hash(self._raw)

    def __repr__(self) -> str:
        return f"PublicKey(kid={key_id(self)!r})"


class PrivateKey:
    """An Ed25519 private key (the cloud's) that signs unlock tokens."""

    __slots__ = ("_public", "_signing_key")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, bytes) or len(seed) != KEY_BYTES:
            raise CredentialError(f"an Ed25519 private key is a {KEY_BYTES}-byte seed")
        self._signing_key = nacl.signing.SigningKey(seed)
        self._public = PublicKey(bytes(self._signing_key.verify_key))

    @classmethod
    def generate(cls) -> PrivateKey:
        """A new random key (libsodium's CSPRNG)."""
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def seed(self) -> bytes:
        """The 32-byte seed the key is derived from (RFC 8032): the secret itself."""
        return bytes(self._signing_key)

    @classmethod
    def from_pem(cls, pem: bytes) -> PrivateKey:
        """Parse an unencrypted ``BEGIN PRIVATE KEY`` (PKCS#8 v1) PEM holding an Ed25519 key."""
        der = _pem_der(pem, "PRIVATE KEY")
        if len(der) != len(PKCS8_PREFIX) + KEY_BYTES or not der.startswith(PKCS8_PREFIX):
            if _ED25519_OID in der[:20] and not der.startswith(PKCS8_PREFIX):
                raise CredentialError(
                    "unsupported PKCS#8 layout for an Ed25519 key (only v1 without attributes "
                    "or public key, as openssl genpkey writes); rewrite it, e.g. with "
                    "`openssl pkey -in KEY -out KEY.new`"
                )
            raise _wrong_key(der, "private", len(PKCS8_PREFIX) + KEY_BYTES)
        return cls(der[len(PKCS8_PREFIX) :])

    def to_pem(self) -> bytes:
        """Unencrypted PKCS#8 v1 PEM, as ``openssl genpkey -algorithm ed25519`` writes it."""
        return _pem("PRIVATE KEY", PKCS8_PREFIX + self.seed)

    def public_key(self) -> PublicKey:
        return self._public

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._signing_key.sign(message).signature

    def __repr__(self) -> str:  # never the seed
        return f"PrivateKey(kid={key_id(self._public)!r})"


def _pem(label: str, der: bytes) -> bytes:
    """RFC 7468 PEM: base64 in 64-character lines, the layout OpenSSL writes."""
    text = base64.b64encode(der).decode("ascii")
    lines = [text[i : i + 64] for i in range(0, len(text), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


def _pem_der(pem: bytes, label: str) -> bytes:
    """The DER of the one PEM block in ``pem``, which must carry ``label``."""
    if not isinstance(pem, bytes):
        raise CredentialError("a PEM key must be bytes")
    blocks = list(_PEM_BLOCK.finditer(pem))
    found = blocks[0]["label"].decode() if blocks else None
    if found == "ENCRYPTED PRIVATE KEY" or b"Proc-Type: 4,ENCRYPTED" in pem:
        raise CredentialError(
            "encrypted private keys are not supported (the key is read unattended); store it "
            "unencrypted with owner-only permissions"
        )
    if found != label:
        what = f"a {found}" if found is not None else "no PEM block"
        raise CredentialError(f"expected a PEM {label} (-----BEGIN {label}-----), found {what}")
    if len(blocks) != 1 or pem[: blocks[0].start()].strip() or pem[blocks[0].end() :].strip():
        raise CredentialError(f"a {label} file must hold exactly one PEM block and nothing else")
    try:
        return base64.b64decode(b"".join(blocks[0]["body"].split()), validate=True)
    except binascii.Error as exc:
        raise CredentialError(f"PEM {label} is not valid base64: {exc}") from exc


def _wrong_key(der: bytes, kind: str, size: int) -> CredentialError:
    """The error for DER that is not an RFC 8410 Ed25519 ``kind`` key of ``size`` bytes."""
    for oid, what in _OTHER_ALGORITHMS.items():
        if oid in der[:32]:
            return CredentialError(f"expected an Ed25519 {kind} key, got {what}")
    if _ED25519_OID in der[:20]:
        return CredentialError(
            f"malformed Ed25519 {kind} key: not RFC 8410's {size}-byte layout "
            f"({len(der)} bytes of DER)"
        )
    return CredentialError(f"expected an Ed25519 {kind} key, got an unknown key type")


def key_id(public_key: PublicKey) -> str:
    """Short, stable identifier of a public key (first 16 hex of SHA-256 of its raw bytes)."""
    return hashlib.sha256(public_key.raw).hexdigest()[:16]


def load_private_key(pem: bytes) -> PrivateKey:
    """Load an Ed25519 private key from PEM (PKCS#8); raise :class:`CredentialError` otherwise."""
    return PrivateKey.from_pem(pem)


def load_public_key(data: bytes) -> PublicKey:
    """Load an Ed25519 public key from PEM (SubjectPublicKeyInfo) or 32 raw bytes."""
    if len(data) == KEY_BYTES:
        return PublicKey(data)
    return PublicKey.from_pem(data)


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
            "charger_id",
            "connector",
            "user_ref",
            "jti",
            "nbf",
            "exp",
            "iat",
            "booking_id",
            "session_intent_id",
            "max_wh",
            "max_s",
        }
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


def sign_unlock_token(private_key: PrivateKey, claims: UnlockClaims) -> str:
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

    def __init__(self, public_keys: list[PublicKey]) -> None:
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
        # The footer is read before the signature is checked, so it is hostile input: ours is
        # {"kid":"<16 hex>"}; a bound keeps a QR code of 2,500 "[" from reaching json.loads'
        # recursion limit (RecursionError would escape this "never raises").
        if len(parts[1]) > MAX_FOOTER_CHARS:
            return TokenCheck(invalid, "token footer too long")
        try:
            body, footer = _b64decode(parts[0]), _b64decode(parts[1])
            kid = json.loads(footer)["kid"]
        except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
            return TokenCheck(invalid, "token is not decodable")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            return TokenCheck(invalid, f"token signed with unknown key {kid!r}")
        if len(body) <= SIGNATURE_BYTES:
            return TokenCheck(invalid, "token too short")
        message, signature = body[:-SIGNATURE_BYTES], body[-SIGNATURE_BYTES:]
        if not key.verify(signature, pae(HEADER, message, footer, IMPLICIT_ASSERTION)):
            return TokenCheck(invalid, "bad signature")
        try:
            claims = UnlockClaims.from_json(json.loads(message))
        except (ValueError, TypeError, KeyError, RecursionError, CredentialError) as exc:
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
