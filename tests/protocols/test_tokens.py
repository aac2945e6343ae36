"""Unlock tokens: valid ones accepted, every kind of bad one refused with its own status."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pyseto
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from protocols.enums import AuthorizationStatus as S
from protocols.errors import CredentialError
from protocols.tokens import (
    IMPLICIT_ASSERTION,
    TokenVerifier,
    UnlockClaims,
    key_id,
    load_private_key,
    load_public_key,
    pae,
    sign_unlock_token,
)

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


def claims(**changes: object) -> UnlockClaims:
    fields: dict[str, object] = {
        "charger_id": "chg-42",
        "connector": 1,
        "user_ref": "u-7",
        "jti": "01JDZ8Q9V3S6X2T1B0N4M5K7P8",
        "nbf": NOW - timedelta(minutes=5),
        "exp": NOW + timedelta(hours=1),
        "booking_id": "bk-1",
        "max_wh": 20_000,
    }
    fields.update(changes)
    return UnlockClaims(**fields)  # type: ignore[arg-type]


def verify(token: str, *, now: datetime = NOW, charger: str = "chg-42", connector: int = 1):  # type: ignore[no-untyped-def]
    return TokenVerifier([KEY.public_key()]).verify(
        token, charger_id=charger, connector=connector, now=now
    )


def test_valid_token_is_accepted_with_its_claims() -> None:
    check = verify(sign_unlock_token(KEY, claims()))
    assert check.status is S.ACCEPTED
    assert check.accepted
    assert check.claims == claims()


def test_pae_matches_the_paseto_spec_examples() -> None:
    # PASETO Common.md, "PAE Definition": PAE([]) and PAE(['']) and PAE(['test']).
    assert pae() == b"\x00" * 8
    assert pae(b"") == b"\x01" + b"\x00" * 7 + b"\x00" * 8
    assert pae(b"test") == b"\x01" + b"\x00" * 7 + b"\x04" + b"\x00" * 7 + b"test"


def test_interoperates_with_an_independent_paseto_implementation() -> None:
    pem = KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ours = sign_unlock_token(KEY, claims(exp=datetime(2099, 1, 1, tzinfo=UTC)))
    decoded = pyseto.decode(
        pyseto.Key.new(4, "public", public_pem), ours, implicit_assertion=IMPLICIT_ASSERTION
    )
    assert isinstance(decoded.payload, bytes)
    assert json.loads(decoded.payload)["charger_id"] == "chg-42"
    # ... and a token pyseto signs verifies with ours.
    footer = json.dumps({"kid": key_id(KEY.public_key())}).encode()
    theirs = pyseto.encode(
        pyseto.Key.new(4, "public", pem),
        json.dumps(claims().to_json()).encode(),
        footer=footer,
        implicit_assertion=IMPLICIT_ASSERTION,
    ).decode()
    assert verify(theirs).status is S.ACCEPTED


def test_wrong_key_is_invalid() -> None:
    check = verify(sign_unlock_token(OTHER_KEY, claims()))
    assert check.status is S.INVALID
    assert "unknown key" in check.reason


def test_wrong_key_claiming_the_right_kid_is_invalid() -> None:
    token = sign_unlock_token(OTHER_KEY, claims())
    forged_footer = base64.urlsafe_b64encode(
        json.dumps({"kid": key_id(KEY.public_key())}).encode()
    ).rstrip(b"=")
    forged = token.rsplit(".", 1)[0] + "." + forged_footer.decode()
    check = verify(forged)
    assert (check.status, check.reason) == (S.INVALID, "bad signature")


def test_wrong_charger_or_connector_is_not_at_this_charger() -> None:
    token = sign_unlock_token(KEY, claims())
    assert verify(token, charger="chg-43").status is S.NOT_AT_THIS_CHARGER
    assert verify(token, connector=2).status is S.NOT_AT_THIS_CHARGER


def test_expired_and_not_yet_valid() -> None:
    token = sign_unlock_token(KEY, claims())
    assert verify(token, now=NOW + timedelta(hours=2)).status is S.EXPIRED
    assert verify(token, now=NOW - timedelta(hours=1)).status is S.NOT_AT_THIS_TIME
    # 30 s of leeway for a Pi whose clock drifted a little.
    assert verify(token, now=NOW + timedelta(hours=1, seconds=20)).status is S.ACCEPTED


def test_tampered_payload_is_invalid() -> None:
    token = sign_unlock_token(KEY, claims())
    head, body, footer = token[: len("v4.public.")], *token[len("v4.public.") :].split(".")
    raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    tampered = raw.replace(b'"connector":1', b'"connector":2')
    assert tampered != raw
    forged = head + base64.urlsafe_b64encode(tampered).rstrip(b"=").decode() + "." + footer
    assert verify(forged, connector=2).status is S.INVALID


def test_a_token_signed_for_another_purpose_is_invalid() -> None:
    public_pem = KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pem = KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    other_purpose = pyseto.encode(
        pyseto.Key.new(4, "public", pem),
        json.dumps(claims().to_json()).encode(),
        footer=json.dumps({"kid": key_id(KEY.public_key())}).encode(),
    ).decode()
    assert verify(other_purpose).status is S.INVALID
    assert pyseto.decode(pyseto.Key.new(4, "public", public_pem), other_purpose)


@pytest.mark.parametrize(
    "token",
    ["", "v3.public.abc", "v4.public.", "v4.public.!!!.###", "v4.public.YWJj.e30", "x" * 5000, 42],
)
def test_garbage_is_invalid_not_an_exception(token: object) -> None:
    assert verify(token).status is S.INVALID  # type: ignore[arg-type]


def test_claims_must_name_one_purpose_and_a_forward_window() -> None:
    with pytest.raises(CredentialError, match="exactly one"):
        claims(session_intent_id="si-1")
    with pytest.raises(CredentialError, match="exp must be after nbf"):
        claims(exp=NOW - timedelta(hours=1))
    with pytest.raises(CredentialError, match="max_wh"):
        claims(max_wh=0)


def test_keys_load_from_pem_and_raw_bytes() -> None:
    pem = KEY.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    assert key_id(load_private_key(pem).public_key()) == key_id(KEY.public_key())
    raw = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(load_public_key(raw)) == key_id(KEY.public_key())
    with pytest.raises(CredentialError):
        load_private_key(b"-----BEGIN NONSENSE-----")
    with pytest.raises(CredentialError, match="at least one public key"):
        TokenVerifier([])
