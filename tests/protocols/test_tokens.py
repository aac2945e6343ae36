"""Unlock tokens: valid ones accepted, every kind of bad one refused with its own status."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta

import pyseto
import pytest

# cryptography is a dev/cloud dependency only: here it is the reference our key files and
# signatures are checked against, never what the tokens module itself uses.
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, x25519

from protocols.enums import AuthorizationStatus as S
from protocols.errors import CredentialError
from protocols.tokens import (
    IMPLICIT_ASSERTION,
    PrivateKey,
    PublicKey,
    TokenVerifier,
    UnlockClaims,
    key_id,
    load_private_key,
    load_public_key,
    pae,
    sign_unlock_token,
)

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
KEY = PrivateKey(bytes(range(32)))
OTHER_KEY = PrivateKey(bytes(range(1, 33)))
#: KEY's files as ``cryptography`` (and ``openssl genpkey``) write them, and its kid as the
#: cryptography-based tokens module computed it: deployed kids must not change.
KEY_PEM = b"""-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f
-----END PRIVATE KEY-----
"""
PUBLIC_PEM = b"""-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAA6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=
-----END PUBLIC KEY-----
"""
KEY_KID = "56475aa75463474c"


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
    # pyseto reads the PEM files we write (through cryptography): they are the standard ones.
    pem, public_pem = KEY.to_pem(), KEY.public_key().to_pem()
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
    pem, public_pem = KEY.to_pem(), KEY.public_key().to_pem()
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


@pytest.mark.parametrize("footer", [b"[" * 2500, b'{"kid": ' + b"[" * 150 + b"}"])
def test_a_deeply_nested_footer_is_invalid_not_an_exception(footer: bytes) -> None:
    """The footer is parsed before the signature is checked: a printed QR code must not be
    able to raise out of verify (RecursionError) and stop the agent's reader."""
    body = base64.urlsafe_b64encode(b"x" * 80).rstrip(b"=").decode()
    tail = base64.urlsafe_b64encode(footer).rstrip(b"=").decode()
    check = verify(f"v4.public.{body}.{tail}")
    assert check.status is S.INVALID
    assert "footer" in check.reason or "decodable" in check.reason


def test_claims_must_name_one_purpose_and_a_forward_window() -> None:
    with pytest.raises(CredentialError, match="exactly one"):
        claims(session_intent_id="si-1")
    with pytest.raises(CredentialError, match="exp must be after nbf"):
        claims(exp=NOW - timedelta(hours=1))
    with pytest.raises(CredentialError, match="max_wh"):
        claims(max_wh=0)


def test_keys_load_from_pem_and_raw_bytes() -> None:
    assert load_private_key(KEY_PEM).seed == bytes(range(32))
    assert load_public_key(PUBLIC_PEM) == KEY.public_key()
    raw = bytes.fromhex("03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8")
    assert load_public_key(raw) == KEY.public_key()
    # Line endings and surrounding whitespace of a hand-copied file do not matter.
    assert load_public_key(b"\n  " + PUBLIC_PEM.replace(b"\n", b"\r\n") + b"\n") == KEY.public_key()
    with pytest.raises(CredentialError):
        load_private_key(b"-----BEGIN NONSENSE-----")
    with pytest.raises(CredentialError, match="at least one public key"):
        TokenVerifier([])


def test_key_id_and_files_are_unchanged_for_a_known_key() -> None:
    assert key_id(KEY.public_key()) == KEY_KID
    assert key_id(load_public_key(PUBLIC_PEM)) == KEY_KID
    assert key_id(load_private_key(KEY_PEM).public_key()) == KEY_KID
    assert KEY.to_pem() == KEY_PEM
    assert KEY.public_key().to_pem() == PUBLIC_PEM
    assert sign_unlock_token(KEY, claims()).endswith(
        "." + base64.urlsafe_b64encode(b'{"kid":"%s"}' % KEY_KID.encode()).rstrip(b"=").decode()
    )


def test_key_files_and_signatures_interoperate_with_cryptography() -> None:
    theirs = ed25519.Ed25519PrivateKey.generate()
    their_pem = theirs.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    their_public_pem = theirs.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    ours = load_private_key(their_pem)
    assert ours.public_key() == load_public_key(their_public_pem)
    assert ours.to_pem() == their_pem
    assert ours.public_key().to_pem() == their_public_pem
    raw = theirs.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert ours.public_key().raw == raw
    # Ed25519 is deterministic: the same key signs the same bytes identically.
    message = pae(b"v4.public.", b"{}", b"", IMPLICIT_ASSERTION)
    assert ours.sign(message) == theirs.sign(message)
    theirs.public_key().verify(ours.sign(message), message)  # raises if not
    assert ours.public_key().verify(theirs.sign(message), message)
    assert not ours.public_key().verify(theirs.sign(message), message + b"!")
    # ... and cryptography reads the files we write.
    fresh = PrivateKey.generate()
    loaded = serialization.load_pem_private_key(fresh.to_pem(), password=None)
    assert isinstance(loaded, ed25519.Ed25519PrivateKey)
    assert loaded.sign(message) == fresh.sign(message)
    assert serialization.load_pem_public_key(fresh.public_key().to_pem()) == loaded.public_key()


def _pem(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode()
    return f"-----BEGIN {label}-----\n{body}-----END {label}-----\n".encode()


def _private_pem(key: object, encryption: object = None) -> bytes:
    return key.private_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    )


def _public_pem(key: object) -> bytes:
    return key.public_key().public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


SEED = bytes(range(32))
PUBLIC_RAW = KEY.public_key().raw


def _by_error(value: object) -> str | None:
    """Test ids from the expected error alone: some keys are generated at collection, and
    pytest-xdist's workers must collect the same ids (pytest numbers the repeats)."""
    return "key" if isinstance(value, bytes) else None


@pytest.mark.parametrize(
    ("pem", "error"),
    [
        (_private_pem(x25519.X25519PrivateKey.generate()), "got an X25519 key"),
        (_private_pem(ed448.Ed448PrivateKey.generate()), "got an Ed448 key"),
        (_private_pem(ec.generate_private_key(ec.SECP256R1())), "got an EC key"),
        (
            _private_pem(
                ed25519.Ed25519PrivateKey.generate(),
                serialization.BestAvailableEncryption(b"secret"),
            ),
            "encrypted private keys are not supported",
        ),
        (PUBLIC_PEM, "expected a PEM PRIVATE KEY .*found a PUBLIC KEY"),
        (b"", "found no PEM block"),
        (b"\x00" * 48, "found no PEM block"),
        (
            _pem("PRIVATE KEY", bytes.fromhex("302e020100300506032b657004220420") + SEED[:31]),
            "malformed Ed25519 (private|public) key: not RFC 8410's",
        ),
        (
            _pem("PRIVATE KEY", bytes.fromhex("302f020100300506032b65700423042100") + SEED),
            "unsupported PKCS#8 layout",
        ),
        # PKCS#8 v2 (OneAsymmetricKey) carrying the public key too: refused, not half-read.
        (
            _pem(
                "PRIVATE KEY",
                bytes.fromhex("3051020101300506032b657004220420")
                + SEED
                + bytes.fromhex("812100")
                + PUBLIC_RAW,
            ),
            "unsupported PKCS#8 layout",
        ),
        (_pem("PRIVATE KEY", b"\x30\x03\x02\x01\x00"), "private key, got an unknown key type"),
        (KEY_PEM.replace(b"MC4C", b"M!4C"), "not valid base64"),
        (KEY_PEM + KEY_PEM, "exactly one PEM block"),
        (b"junk\n" + KEY_PEM, "exactly one PEM block"),
    ],
    ids=_by_error,
)
def test_private_key_loader_is_strict(pem: bytes, error: str) -> None:
    with pytest.raises(CredentialError, match=error):
        load_private_key(pem)


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (_public_pem(x25519.X25519PrivateKey.generate()), "got an X25519 key"),
        (_public_pem(ec.generate_private_key(ec.SECP256R1())), "got an EC key"),
        (KEY_PEM, "expected a PEM PUBLIC KEY .*found a PRIVATE KEY"),
        (
            _pem("PUBLIC KEY", bytes.fromhex("302a300506032b6570032100") + PUBLIC_RAW + b"\x00"),
            "malformed Ed25519 (private|public) key: not RFC 8410's",
        ),
        (
            _pem("PUBLIC KEY", bytes.fromhex("302a300506032b6570032101") + PUBLIC_RAW),
            "malformed Ed25519 (private|public) key: not RFC 8410's",
        ),
        (PUBLIC_PEM + b"trailing", "exactly one PEM block"),
        (b"\xff" * 32, "not a valid curve point"),  # not canonical
        (bytes(32), "not a valid curve point"),  # a point of small order
        (PUBLIC_RAW[:31], "no PEM block"),
    ],
    ids=_by_error,
)
def test_public_key_loader_is_strict(data: bytes, error: str) -> None:
    with pytest.raises(CredentialError, match=error):
        load_public_key(data)


def test_private_keys_do_not_show_their_seed() -> None:
    assert repr(KEY) == f"PrivateKey(kid={KEY_KID!r})"
    assert repr(KEY.public_key()) == f"PublicKey(kid={KEY_KID!r})"
    with pytest.raises(CredentialError):
        PrivateKey(SEED[:16])
    assert isinstance(KEY.public_key(), PublicKey)
