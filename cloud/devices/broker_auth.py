"""Broker credentials: the Mosquitto password file the cloud manages, and its reload.

Choice (documented in docs/cloud.md): a password file plus the static ``pattern`` ACL in
``deploy/mosquitto/cloud/acl`` rather than the dynamic-security plugin, because Mosquitto
2.0.x's plugin has no ``%u`` patterns (one role per device would be needed). The broker
re-reads the password file on SIGHUP and disconnects clients whose credentials are gone,
so revoking a device takes effect at once.

Lines are ``username:$7$101$<salt b64>$<hash b64>``: PBKDF2-HMAC-SHA512, 101 iterations,
12-byte salt, 64-byte hash — exactly what ``mosquitto_passwd`` writes in 2.0.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import hmac
import logging
import os
import secrets
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol

from cloud.errors import BrokerError

log = logging.getLogger(__name__)

PBKDF2_ITERATIONS = 101
SALT_BYTES = 12


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    """The ``$7$`` hash mosquitto_passwd would write for ``password``."""
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    parts = hashed.split("$")
    if len(parts) != 5 or parts[1] != "7":
        return False
    salt = base64.b64decode(parts[3])
    return hmac.compare_digest(hash_password(password, salt=salt), hashed)


def new_password() -> str:
    """A broker password: 256 random bits, URL-safe."""
    return secrets.token_urlsafe(32)


class BrokerCredentials(Protocol):
    """Where device credentials live (the seam a dynamic-security backend would fill)."""

    def set_user(self, username: str, password: str) -> None: ...

    def remove_user(self, username: str) -> bool: ...


class PasswordFile:
    """The broker's password file, changed atomically under a lock, then reloaded."""

    def __init__(self, path: Path, pid_file: Path | None) -> None:
        self.path = path
        self.pid_file = pid_file

    @contextmanager
    def _locked(self) -> Iterator[dict[str, str]]:
        # Several API processes may provision at once: serialise read-modify-write.
        lock_path = self.path.with_name(self.path.name + ".lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                entries = self._read()
                yield entries
                self._write(entries)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        self.reload()

    def _read(self) -> dict[str, str]:
        if not self.path.exists():
            return {}
        entries: dict[str, str] = {}
        for line in self.path.read_text().splitlines():
            if line.strip() and not line.startswith("#"):
                user, _, hashed = line.partition(":")
                entries[user] = hashed
        return entries

    def _write(self, entries: dict[str, str]) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text("".join(f"{u}:{h}\n" for u, h in sorted(entries.items())))
        tmp.chmod(0o600)
        # rename is atomic: the broker never reads a half-written file.
        tmp.replace(self.path)

    def users(self) -> set[str]:
        return set(self._read())

    def set_user(self, username: str, password: str) -> None:
        if ":" in username or "\n" in username:
            raise BrokerError(f"invalid broker username {username!r}")
        with self._locked() as entries:
            entries[username] = hash_password(password)

    def remove_user(self, username: str) -> bool:
        with self._locked() as entries:
            return entries.pop(username, None) is not None

    def reload(self) -> None:
        """Ask the broker to re-read its password and ACL files (SIGHUP)."""
        if self.pid_file is None:
            return
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, signal.SIGHUP)
        except (OSError, ValueError) as exc:
            raise BrokerError(
                f"cannot signal the broker (pid file {self.pid_file}): {exc}"
            ) from exc
