"""KYC documents at rest: AES-256-GCM encrypted files under one directory.

Each file is ``CMK1`` (format and key generation), a 96-bit random nonce, then the
ciphertext with its 128-bit tag. The storage key is the associated data, so a file copied
under another document's name does not decrypt. The key is 32 bytes, base64 in a file named
by ``KYC_KEY_FILE`` (like the unlock-token key, it lives outside the database: a database
dump alone reads no document). Keys (file names) are minted here, 32 random hex characters
and ``.bin``, never taken from a client, and every method refuses any other shape.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import re
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cloud.errors import ConfigError, DocumentUnreadable, NotFound

MAGIC = b"CMK1"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_KEY = re.compile(r"^[0-9a-f]{32}\.bin$")


def load_key(path: Path) -> bytes:
    """The 32-byte key from ``path`` (base64 text, e.g. ``openssl rand -base64 32``)."""
    variable = "CHARGEMITRA_KYC_KEY_FILE"
    try:
        text = path.read_text().strip()
    except OSError as exc:
        raise ConfigError(
            f"{variable}: cannot read {path}: {exc}", variable=variable, value=str(path)
        ) from exc
    try:
        key = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(
            f"{variable}: {path} must hold 32 bytes in base64", variable=variable, value=str(path)
        ) from exc
    if len(key) != 32:
        raise ConfigError(
            f"{variable}: {path} holds {len(key)} bytes, not 32", variable=variable, value=str(path)
        )
    return key


def check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a KYC storage key: {key!r}")
    return key


class Sealer:
    """AES-256-GCM sealing under the KYC key, for anything small kept at rest: ``CMK1``, a
    96-bit random nonce, the ciphertext and its tag. ``associated`` (authenticated, not
    stored) names what was sealed — a document's storage key, a payout account's host — so
    a sealed value moved to another name does not open. The KYC documents and the hosts'
    payout account numbers (cloud/payouts/accounts.py) are sealed by this one class."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def seal(self, data: bytes, associated: bytes) -> bytes:
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return MAGIC + nonce + self._aead.encrypt(nonce, data, associated)

    def open(self, sealed: bytes, associated: bytes, *, what: str) -> bytes:
        if sealed[: len(MAGIC)] != MAGIC:
            raise DocumentUnreadable(f"{what}: not sealed")
        # A value cut short (a truncated file or column) is unreadable like an altered one:
        # AESGCM raises a bare ValueError for a short nonce, which would be an untyped 500.
        if len(sealed) < len(MAGIC) + _NONCE_BYTES + _TAG_BYTES:
            raise DocumentUnreadable(f"{what}: truncated")
        nonce = sealed[len(MAGIC) : len(MAGIC) + _NONCE_BYTES]
        try:
            return self._aead.decrypt(nonce, sealed[len(MAGIC) + _NONCE_BYTES :], associated)
        except InvalidTag as exc:
            raise DocumentUnreadable(f"{what}: wrong key or altered") from exc


class DocumentStore:
    """Encrypted files ``{root}/{key[:2]}/{key}``, written atomically."""

    def __init__(self, root: Path, key: bytes) -> None:
        self.root = root
        #: The same key seals the hosts' payout account numbers (cloud/payouts/accounts.py).
        self.sealer = Sealer(key)

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)[:2] / key

    def seal(self, key: str, data: bytes) -> bytes:
        return self.sealer.seal(data, check_key(key).encode())

    def open(self, key: str, sealed: bytes) -> bytes:
        return self.sealer.open(sealed, check_key(key).encode(), what=key)

    async def put(self, data: bytes) -> str:
        """Encrypt and store ``data``; returns its new key."""
        key = check_key(f"{secrets.token_hex(16)}.bin")
        await asyncio.to_thread(self._write, self._path(key), self.seal(key, data))
        return key

    async def get(self, key: str) -> bytes:
        try:
            sealed = await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError as exc:
            raise NotFound("document", key) from exc
        return self.open(key, sealed)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._path(key).unlink, missing_ok=True)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
